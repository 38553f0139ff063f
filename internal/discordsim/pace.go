package discordsim

import (
	"sort"
	"sync"
	"time"
)

// coarseMargin is how much of a wait is left to the fine sleep: Go's timers
// wake about a millisecond late here, so a timer takes the wait only up to
// this much before the due time.
const coarseMargin = 1500 * time.Microsecond

// waitUntil sleeps until due: on a Go timer (interruptible by stop and
// wake) for the bulk of the wait, then with the platform's fine sleep for
// the last stretch. It returns false if stop was closed, and early, with
// true, if wake fired; the caller re-checks what is due either way.
func waitUntil(due time.Time, stop <-chan struct{}, wake <-chan struct{}) bool {
	if d := time.Until(due) - coarseMargin; d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-stop:
			return false
		case <-wake:
			return true
		case <-t.C:
		}
	}
	for d := time.Until(due); d > 0; d = time.Until(due) {
		fineSleep(d)
	}
	return true
}

// paceSchedule spaces events evenly at a total rate: event k is due at
// start + k/rate. Late events keep their due times (they go out at once, in
// one batch), so a stall shows up as jitter instead of silently stretching
// the schedule, up to maxBacklog of them: after a longer stall the schedule
// skips ahead rather than emitting an unbounded burst.
type paceSchedule struct {
	start time.Time
	rate  float64 // events per second, > 0
	k     int64   // the next event's index
}

// maxBacklog is the longest stall the schedule catches up on.
const maxBacklog = time.Second

func newPaceSchedule(start time.Time, rate float64) paceSchedule {
	return paceSchedule{start: start, rate: rate}
}

// due is when the next event is scheduled.
func (p *paceSchedule) due() time.Time {
	return p.start.Add(time.Duration(float64(p.k) / p.rate * float64(time.Second)))
}

// next consumes the next event if it is due at now, returning its due time.
func (p *paceSchedule) next(now time.Time) (time.Time, bool) {
	due := p.due()
	if due.After(now) {
		return time.Time{}, false
	}
	if now.Sub(due) > maxBacklog {
		p.start, p.k = now.Add(-maxBacklog), 0
		due = p.start
	}
	p.k++
	return due, true
}

// PaceStats is the load generator's send-time jitter: how long after its
// scheduled time each event was handed to its connection. It shows whether
// a latency tail comes from the generator rather than from the client.
type PaceStats struct {
	Events              int64
	P50, P99, P999, Max time.Duration
}

// jitterHist is a histogram of send-time jitter: 1 µs buckets below 1 ms,
// 10 µs below 10 ms, 100 µs below 100 ms, then one overflow bucket; the
// exact maximum is kept aside. Fixed size, so a generator that runs for
// days does not grow.
type jitterHist struct {
	mu     sync.Mutex
	counts [jitterBuckets]int64
	n      int64
	max    time.Duration
}

const jitterBuckets = 1000 + 900 + 900 + 1

func jitterBucket(d time.Duration) int {
	us := int(d / time.Microsecond)
	switch {
	case us < 0:
		return 0
	case us < 1000:
		return us
	case us < 10000:
		return 1000 + (us-1000)/10
	case us < 100000:
		return 1900 + (us-10000)/100
	default:
		return jitterBuckets - 1
	}
}

// jitterBucketTop is the upper bound of bucket i (the overflow bucket's is
// taken from the maximum by the caller).
func jitterBucketTop(i int) time.Duration {
	switch {
	case i < 1000:
		return time.Duration(i+1) * time.Microsecond
	case i < 1900:
		return time.Duration(1000+(i-1000+1)*10) * time.Microsecond
	default:
		return time.Duration(10000+(i-1900+1)*100) * time.Microsecond
	}
}

func (h *jitterHist) record(d time.Duration) {
	h.mu.Lock()
	h.counts[jitterBucket(d)]++
	h.n++
	h.max = max(h.max, d)
	h.mu.Unlock()
}

func (h *jitterHist) reset() {
	h.mu.Lock()
	h.counts, h.n, h.max = [jitterBuckets]int64{}, 0, 0
	h.mu.Unlock()
}

// stats returns the quantiles as bucket upper bounds, never above the
// maximum.
func (h *jitterHist) stats() PaceStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := PaceStats{Events: h.n, Max: h.max}
	if h.n == 0 {
		return st
	}
	cum := make([]int64, len(h.counts))
	var c int64
	for i, v := range h.counts {
		c += v
		cum[i] = c
	}
	q := func(p float64) time.Duration {
		rank := int64(p * float64(h.n-1))
		i := sort.Search(len(cum), func(i int) bool { return cum[i] > rank })
		if i == len(cum)-1 {
			return h.max
		}
		return min(jitterBucketTop(i), h.max)
	}
	st.P50, st.P99, st.P999 = q(0.50), q(0.99), q(0.999)
	return st
}

package publish

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"
)

// syncLog is a logfmt logger whose lines a test can read.
type syncLog struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *syncLog) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Split(strings.TrimSpace(l.buf.String()), "\n")
}

// flip fails one probe of cb once its open timeout has passed: open to
// half-open, and back to open.
func flip(cb *Breaker, openTimeout time.Duration) {
	time.Sleep(openTimeout + time.Millisecond)
	if report, err := cb.Allow(); err == nil {
		report(errors.New("nats: no servers available"))
	}
}

func TestBreakerLogsEachKindOfFlipOnceWhileTheBrokerStaysDown(t *testing.T) {
	var logs syncLog
	const openTimeout = 5 * time.Millisecond
	cb := NewBreaker(BreakerConfig{ConsecutiveFailures: 1, OpenTimeout: openTimeout, Probes: 1}, nil, log.NewLogfmtLogger(&logs))
	flip(cb, 0) // closed to open
	for i := 0; i < 20; i++ {
		flip(cb, openTimeout)
	}
	time.Sleep(openTimeout + time.Millisecond)
	report, err := cb.Allow()
	if err != nil {
		t.Fatal(err)
	}
	report(nil) // the broker is back: closed

	want := []string{
		`level=warn msg="circuit breaker state changed" breaker=jetstream from=closed to=open`,
		`level=warn msg="circuit breaker state changed" breaker=jetstream from=open to=half-open`,
		`level=warn msg="circuit breaker state changed" breaker=jetstream from=half-open to=open`,
		`level=info msg="circuit breaker state changed" breaker=jetstream from=half-open to=closed unlogged_flips=39`,
	}
	if got := logs.lines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestBreakerSumsUpItsFlipsAtMostOncePerInterval(t *testing.T) {
	var logs syncLog
	const openTimeout, every = 5 * time.Millisecond, 100 * time.Millisecond
	cb := NewBreaker(BreakerConfig{ConsecutiveFailures: 1, OpenTimeout: openTimeout, Probes: 1, LogEvery: every}, nil, log.NewLogfmtLogger(&logs))
	start := time.Now()
	flip(cb, 0)
	for time.Since(start) < 350*time.Millisecond {
		flip(cb, openTimeout)
	}
	var summaries []string
	for _, l := range logs.lines() {
		if strings.Contains(l, "circuit breaker keeps reopening") {
			summaries = append(summaries, l)
		}
	}
	// 3 lines for the first flips, then one summary per 100 ms at most.
	if n := len(summaries); n < 2 || n > 3 || len(logs.lines()) != 3+n {
		t.Fatalf("%d summaries, %d lines:\n%s", n, len(logs.lines()), strings.Join(logs.lines(), "\n"))
	}
	if !strings.Contains(summaries[0], "level=warn") || !strings.Contains(summaries[0], "flips=") {
		t.Errorf("summary %s", summaries[0])
	}
}

// Closing and opening again is a new outage: its first flips are logged.
func TestBreakerLogsTheFlipsOfEveryOutage(t *testing.T) {
	var logs syncLog
	const openTimeout = 5 * time.Millisecond
	cb := NewBreaker(BreakerConfig{ConsecutiveFailures: 1, OpenTimeout: openTimeout, Probes: 1}, nil, log.NewLogfmtLogger(&logs))
	for outage := 0; outage < 2; outage++ {
		flip(cb, 0)
		flip(cb, openTimeout)
		time.Sleep(openTimeout + time.Millisecond)
		report, _ := cb.Allow()
		report(nil)
	}
	if n := len(logs.lines()); n != 8 {
		t.Fatalf("%d lines, want 8:\n%s", n, strings.Join(logs.lines(), "\n"))
	}
}

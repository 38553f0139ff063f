package shard

import (
	"sort"
	"sync"
)

// ackTracker computes the resume sequence of a session: the highest seq such
// that every dispatch received up to it is done (acked by JetStream, or not
// published at all). A RESUME from there makes Discord replay everything that
// was not acked; the deterministic event ID turns the replayed copies of
// events that were in fact published into duplicates JetStream drops.
type ackTracker struct {
	mu       sync.Mutex
	gen      uint64 // session generation; acks of older sessions are ignored
	acked    int64  // resume point
	lastSeen int64
	pending  []pendingSeq // increasing seq; pending[head:] is live
	head     int
}

type pendingSeq struct {
	seq  int64
	done bool
}

// reset starts a new session whose sequence begins after from.
func (t *ackTracker) reset(from int64) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.gen++
	t.acked, t.lastSeen = from, from
	t.pending, t.head = t.pending[:0], 0
	return t.gen
}

// add records a received dispatch. It reports false for a seq already
// tracked (a replay after RESUME of an event still in flight).
func (t *ackTracker) add(seq int64, done bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if seq <= t.lastSeen {
		return false
	}
	t.lastSeen = seq
	t.pending = append(t.pending, pendingSeq{seq: seq, done: done})
	t.advance()
	return true
}

// done marks seq of session gen as delivered.
func (t *ackTracker) done(gen uint64, seq int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if gen != t.gen {
		return
	}
	live := t.pending[t.head:]
	i := sort.Search(len(live), func(i int) bool { return live[i].seq >= seq })
	if i < len(live) && live[i].seq == seq {
		live[i].done = true
		t.advance()
	}
}

func (t *ackTracker) advance() {
	for t.head < len(t.pending) && t.pending[t.head].done {
		t.acked = t.pending[t.head].seq
		t.head++
	}
	// Compact once the dead prefix dominates, so the cost stays amortised O(1).
	if t.head > 0 && t.head >= len(t.pending)/2 {
		n := copy(t.pending, t.pending[t.head:])
		t.pending, t.head = t.pending[:n], 0
	}
}

// snapshot returns the generation, resume point and last seq seen.
func (t *ackTracker) snapshot() (gen uint64, acked, lastSeen int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.gen, t.acked, t.lastSeen
}

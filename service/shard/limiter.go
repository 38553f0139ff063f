package shard

import (
	"context"
	"sync"
	"time"
)

// sendLimiter enforces Discord's per-connection command limit (120 per 60 s)
// over a sliding window, keeping reserve slots that only heartbeats may use
// so a burst of other commands can never starve the heartbeat.
type sendLimiter struct {
	mu      sync.Mutex
	limit   int
	window  time.Duration
	reserve int
	sent    []time.Time // ring of the last `limit` send times
	next    int
	count   int
}

func newSendLimiter(limit int, window time.Duration, reserve int) *sendLimiter {
	if reserve >= limit {
		reserve = limit - 1
	}
	return &sendLimiter{limit: limit, window: window, reserve: reserve, sent: make([]time.Time, limit)}
}

// wait blocks until one more send fits in the window, then records it.
func (l *sendLimiter) wait(ctx context.Context, heartbeat bool) error {
	for {
		d := l.reserveSlot(time.Now(), heartbeat)
		if d == 0 {
			return nil
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// reserveSlot records a send at now and returns 0, or returns how long to
// wait before trying again.
func (l *sendLimiter) reserveSlot(now time.Time, heartbeat bool) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	allowed := l.limit
	if !heartbeat {
		allowed -= l.reserve
	}
	if l.count >= allowed {
		// The allowed-th most recent send must have left the window.
		idx := (l.next - allowed + l.limit) % l.limit
		oldest := l.sent[idx]
		if wait := oldest.Add(l.window).Sub(now); wait > 0 {
			return wait
		}
	}
	l.sent[l.next] = now
	l.next = (l.next + 1) % l.limit
	if l.count < l.limit {
		l.count++
	}
	return 0
}

// IdentifyLimiter grants IDENTIFY permits. Discord allows max_concurrency
// identifies per 5 s, one per bucket shard_id % max_concurrency, across every
// process of the bot.
type IdentifyLimiter interface {
	// Acquire blocks until it is shardID's turn in its bucket. The shard
	// then dials, waits for HELLO and calls Permit.Wait right before it sends
	// IDENTIFY, so the dial overlaps the previous holder's window.
	Acquire(ctx context.Context, shardID int) (Permit, error)
}

// Permit is one shard's turn to IDENTIFY.
type Permit interface {
	// Wait blocks until the bucket's window since the previous IDENTIFY
	// has passed.
	Wait(ctx context.Context) error
	// Release ends the turn: sent is when the IDENTIFY was sent, or zero
	// when it was not (the turn passes on without using the window).
	// Calls after the first are ignored.
	Release(sent time.Time)
}

// BucketLimiter is the in-process IdentifyLimiter: one IDENTIFY per bucket
// per window, granted in shard order so buckets start in order.
type BucketLimiter struct {
	maxConcurrency int
	window         time.Duration

	mu      sync.Mutex
	buckets map[int]*bucket
}

type bucket struct {
	busy     bool
	next     time.Time // earliest time the next IDENTIFY may be sent
	waiters  map[int]chan struct{}
	expected map[int]bool // shards announced by Expect that have not asked yet
}

// NewBucketLimiter returns a limiter for max_concurrency buckets of window.
// A small safety margin (2%) is added to the window so that scheduling
// jitter between our send and Discord's receipt can never break the limit.
func NewBucketLimiter(maxConcurrency int, window time.Duration) *BucketLimiter {
	if maxConcurrency < 1 {
		maxConcurrency = 1
	}
	return &BucketLimiter{maxConcurrency: maxConcurrency, window: window + window/50, buckets: map[int]*bucket{}}
}

func (l *BucketLimiter) bucket(shardID int) *bucket {
	key := shardID % l.maxConcurrency
	b := l.buckets[key]
	if b == nil {
		b = &bucket{waiters: map[int]chan struct{}{}, expected: map[int]bool{}}
		l.buckets[key] = b
	}
	return b
}

// Expect announces shards that are about to identify, so that a shard whose
// goroutine happens to ask first cannot overtake a lower one.
func (l *BucketLimiter) Expect(shardIDs ...int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range shardIDs {
		l.bucket(id).expected[id] = true
	}
}

// Acquire implements IdentifyLimiter.
func (l *BucketLimiter) Acquire(ctx context.Context, shardID int) (Permit, error) {
	l.mu.Lock()
	b := l.bucket(shardID)
	delete(b.expected, shardID)
	ch := make(chan struct{})
	b.waiters[shardID] = ch
	l.grant(b)
	l.mu.Unlock()

	select {
	case <-ch:
		return &bucketPermit{l: l, b: b}, nil
	case <-ctx.Done():
		l.mu.Lock()
		defer l.mu.Unlock()
		if _, waiting := b.waiters[shardID]; waiting {
			delete(b.waiters, shardID)
			l.grant(b) // a lower expected shard may have been the one blocking
		} else {
			// Granted while we gave up: pass the turn on.
			b.busy = false
			l.grant(b)
		}
		return nil, ctx.Err()
	}
}

type bucketPermit struct {
	l    *BucketLimiter
	b    *bucket
	once sync.Once
}

func (p *bucketPermit) Wait(ctx context.Context) error {
	p.l.mu.Lock()
	next := p.b.next
	p.l.mu.Unlock()
	wait := time.Until(next)
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *bucketPermit) Release(sent time.Time) {
	p.once.Do(func() {
		p.l.mu.Lock()
		defer p.l.mu.Unlock()
		if !sent.IsZero() {
			p.b.next = sent.Add(p.l.window)
		}
		p.b.busy = false
		p.l.grant(p.b)
	})
}

// grant hands a free bucket to its lowest waiting shard, unless a lower
// shard is expected. Caller holds mu.
func (l *BucketLimiter) grant(b *bucket) {
	if b.busy || len(b.waiters) == 0 {
		return
	}
	low := -1
	for id := range b.waiters {
		if low < 0 || id < low {
			low = id
		}
	}
	for id := range b.expected {
		if id < low {
			return
		}
	}
	ch := b.waiters[low]
	delete(b.waiters, low)
	b.busy = true
	close(ch)
}

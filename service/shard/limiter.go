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
	// inWindow counts sends newer than now-window among the last `allowed`.
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
	// Acquire blocks until shardID may IDENTIFY. The caller must call release
	// once, with the time the IDENTIFY was sent (zero if it was not sent, which
	// gives the permit back unused).
	Acquire(ctx context.Context, shardID int) (release func(sent time.Time), err error)
}

// BucketLimiter is the in-process IdentifyLimiter: one permit per bucket per
// window, granted to the lowest waiting shard first so buckets start in order.
type BucketLimiter struct {
	maxConcurrency int
	window         time.Duration

	mu      sync.Mutex
	buckets map[int]*bucket
}

type bucket struct {
	busy    bool
	next    time.Time // earliest time the next IDENTIFY may be sent
	waiters map[int]chan struct{}
}

// NewBucketLimiter returns a limiter for max_concurrency buckets of window.
// A small safety margin is added to the window so that scheduling jitter
// between our send and Discord's receipt can never break the limit.
func NewBucketLimiter(maxConcurrency int, window time.Duration) *BucketLimiter {
	if maxConcurrency < 1 {
		maxConcurrency = 1
	}
	return &BucketLimiter{maxConcurrency: maxConcurrency, window: window + window/50, buckets: map[int]*bucket{}}
}

// Acquire implements IdentifyLimiter.
func (l *BucketLimiter) Acquire(ctx context.Context, shardID int) (func(time.Time), error) {
	key := shardID % l.maxConcurrency
	l.mu.Lock()
	b := l.buckets[key]
	if b == nil {
		b = &bucket{waiters: map[int]chan struct{}{}}
		l.buckets[key] = b
	}
	ch := make(chan struct{})
	b.waiters[shardID] = ch
	l.grant(b)
	l.mu.Unlock()

	select {
	case <-ch:
	case <-ctx.Done():
		l.mu.Lock()
		if _, waiting := b.waiters[shardID]; waiting {
			delete(b.waiters, shardID)
			l.mu.Unlock()
			return nil, ctx.Err()
		}
		// Granted while we gave up: hand the permit on.
		b.busy = false
		l.grant(b)
		l.mu.Unlock()
		return nil, ctx.Err()
	}
	if wait := time.Until(b.nextTime(&l.mu)); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			l.release(b, time.Time{})
			return nil, ctx.Err()
		}
	}
	var once sync.Once
	return func(sent time.Time) { once.Do(func() { l.release(b, sent) }) }, nil
}

func (b *bucket) nextTime(mu *sync.Mutex) time.Time {
	mu.Lock()
	defer mu.Unlock()
	return b.next
}

func (l *BucketLimiter) release(b *bucket, sent time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !sent.IsZero() {
		b.next = sent.Add(l.window)
	}
	b.busy = false
	l.grant(b)
}

// grant hands the free bucket to its lowest waiting shard. Caller holds mu.
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
	ch := b.waiters[low]
	delete(b.waiters, low)
	b.busy = true
	close(ch)
}

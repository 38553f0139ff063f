package shard

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestSendLimiterKeepsRoomForHeartbeats(t *testing.T) {
	l := newSendLimiter(120, time.Minute, 3)
	now := time.Now()
	for i := 0; i < 117; i++ {
		if d := l.reserveSlot(now, false); d != 0 {
			t.Fatalf("command %d refused", i)
		}
	}
	if d := l.reserveSlot(now, false); d == 0 {
		t.Fatal("command 118 allowed: the heartbeat reserve is gone")
	}
	for i := 0; i < 3; i++ {
		if d := l.reserveSlot(now, true); d != 0 {
			t.Fatalf("heartbeat %d refused", i)
		}
	}
	if d := l.reserveSlot(now, true); d == 0 {
		t.Fatal("send 121 within a minute allowed")
	}
	if d := l.reserveSlot(now.Add(time.Minute+time.Millisecond), false); d != 0 {
		t.Fatal("a send after the window refused")
	}
}

func TestBucketLimiterGrantsLowestShardFirstAndSpacesIdentifies(t *testing.T) {
	const window = 40 * time.Millisecond
	l := NewBucketLimiter(2, window)
	ctx := context.Background()

	// Hold bucket 0 so that shards 4, 2 and 6 queue up behind it.
	release, err := l.Acquire(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		order []int
		sent  = map[int]time.Time{}
		wg    sync.WaitGroup
	)
	for _, id := range []int{4, 2, 6} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rel, err := l.Acquire(ctx, id)
			if err != nil {
				t.Error(err)
				return
			}
			now := time.Now()
			mu.Lock()
			order = append(order, id)
			sent[id] = now
			mu.Unlock()
			rel(now)
		}()
	}
	// Let the three goroutines queue (they cannot get ahead of shard 0).
	for {
		l.mu.Lock()
		n := len(l.buckets[0].waiters)
		l.mu.Unlock()
		if n == 3 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	first := time.Now()
	release(first)
	wg.Wait()
	if want := []int{2, 4, 6}; len(order) != 3 || order[0] != want[0] || order[1] != want[1] || order[2] != want[2] {
		t.Fatalf("grant order %v, want %v", order, want)
	}
	prev := first
	for _, id := range order {
		if gap := sent[id].Sub(prev); gap < window {
			t.Fatalf("shard %d identified %v after the previous one in its bucket, want >= %v", id, gap, window)
		}
		prev = sent[id]
	}
}

func TestBucketLimiterUnusedPermitIsReturnedAtOnce(t *testing.T) {
	l := NewBucketLimiter(1, time.Hour)
	rel, err := l.Acquire(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	rel(time.Time{}) // IDENTIFY not sent
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := l.Acquire(ctx, 1); err != nil {
		t.Fatalf("permit not returned: %v", err)
	}
}

func TestBackoffGrowsAndIsCapped(t *testing.T) {
	b := Backoff{Base: time.Second, Max: 60 * time.Second}
	for i := 0; i < 100; i++ {
		if d := b.Delay(0); d < 0 || d >= time.Second {
			t.Fatalf("attempt 0 delay %v out of [0,1s)", d)
		}
		if d := b.Delay(3); d < 4*time.Second || d > 8*time.Second {
			t.Fatalf("attempt 3 delay %v out of [4s,8s]", d)
		}
		if d := b.Delay(30); d < 30*time.Second || d > 60*time.Second {
			t.Fatalf("attempt 30 delay %v out of [30s,60s]", d)
		}
	}
}

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

func TestBucketLimiterGrantsInShardOrderAndSpacesIdentifies(t *testing.T) {
	const window = 40 * time.Millisecond
	l := NewBucketLimiter(2, window)
	ctx := context.Background()
	// 0, 2, 4 and 6 share bucket 0. They ask in a scrambled order, but were
	// announced, so they are served by id.
	l.Expect(0, 2, 4, 6)
	var (
		mu    sync.Mutex
		order []int
		sent  []time.Time
		wg    sync.WaitGroup
	)
	for _, id := range []int{6, 4, 2, 0} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := l.Acquire(ctx, id)
			if err != nil {
				t.Error(err)
				return
			}
			if err := p.Wait(ctx); err != nil {
				t.Error(err)
				return
			}
			now := time.Now()
			mu.Lock()
			order = append(order, id)
			sent = append(sent, now)
			mu.Unlock()
			p.Release(now)
		}()
		time.Sleep(2 * time.Millisecond)
	}
	wg.Wait()
	if want := []int{0, 2, 4, 6}; len(order) != 4 || order[0] != want[0] || order[1] != want[1] || order[2] != want[2] || order[3] != want[3] {
		t.Fatalf("grant order %v, want %v", order, want)
	}
	for i := 1; i < len(sent); i++ {
		if gap := sent[i].Sub(sent[i-1]); gap < window {
			t.Fatalf("identify %d came %v after the previous one in its bucket, want >= %v", i, gap, window)
		}
	}
}

func TestBucketLimiterBucketsAreIndependent(t *testing.T) {
	l := NewBucketLimiter(2, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p0, err := l.Acquire(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	p0.Release(time.Now())
	p1, err := l.Acquire(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := p1.Wait(ctx); err != nil {
		t.Fatalf("bucket 1 waited on bucket 0's window: %v", err)
	}
}

func TestBucketLimiterUnusedPermitIsReturnedAtOnce(t *testing.T) {
	l := NewBucketLimiter(1, time.Hour)
	p, err := l.Acquire(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	p.Release(time.Time{}) // IDENTIFY not sent
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p2, err := l.Acquire(ctx, 1)
	if err != nil {
		t.Fatalf("permit not returned: %v", err)
	}
	if err := p2.Wait(ctx); err != nil {
		t.Fatalf("an unused permit started a window: %v", err)
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

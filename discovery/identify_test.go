package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

type fixedSession string

func (s fixedSession) SessionID(context.Context) (string, error) { return string(s), nil }

type sent struct {
	shard int
	at    time.Time
}

// identifyAll runs one goroutine per shard through l, as shards do: Acquire,
// Wait, "send", Release with the send time.
func identifyAll(t *testing.T, l *IdentifyLimiter, shards []int, out chan<- sent) {
	t.Helper()
	ctx := ctxTimeout(t, time.Minute)
	l.Expect(shards...)
	var wg sync.WaitGroup
	for _, id := range shards {
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
			out <- sent{id, now}
			p.Release(now)
		}()
	}
	wg.Wait()
}

func TestIdentifyLimiterSpacesABucketsIdentifiesAcrossInstances(t *testing.T) {
	a := sharedAgent(t)
	p := prefix(t)
	const window = 500 * time.Millisecond
	// Two instances, two buckets; each instance has shards of both.
	var limiters []*IdentifyLimiter
	for range 2 {
		in := newInstance(t, a, p, 10*time.Second)
		limiters = append(limiters, in.NewIdentifyLimiter(fixedSession(in.session(t).ID()), 2, window))
	}
	out := make(chan sent, 16)
	var wg sync.WaitGroup
	for i, shards := range [][]int{{0, 1, 2, 3}, {4, 5, 6, 7}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			identifyAll(t, limiters[i], shards, out)
		}()
	}
	wg.Wait()
	close(out)
	byBucket := map[int][]sent{}
	for s := range out {
		byBucket[s.shard%2] = append(byBucket[s.shard%2], s)
	}
	for b, ss := range byBucket {
		if len(ss) != 4 {
			t.Fatalf("bucket %d: %d identifies, want 4", b, len(ss))
		}
		sort.Slice(ss, func(i, j int) bool { return ss[i].at.Before(ss[j].at) })
		for i := 1; i < len(ss); i++ {
			if gap := ss[i].at.Sub(ss[i-1].at); gap < window {
				t.Errorf("bucket %d: shards %d and %d identified %v apart, window %v", b, ss[i-1].shard, ss[i].shard, gap, window)
			}
		}
	}
	// The buckets ran side by side: 4 turns each take ~3 windows, not 7.
	first, last := time.Time{}, time.Time{}
	for _, ss := range byBucket {
		for _, s := range ss {
			if first.IsZero() || s.at.Before(first) {
				first = s.at
			}
			if s.at.After(last) {
				last = s.at
			}
		}
	}
	if span := last.Sub(first); span > 6*window {
		t.Errorf("8 identifies in 2 buckets took %v: the buckets did not run in parallel", span)
	}
}

func TestIdentifyLimiterStoresTheLastIdentifyAndKeepsItWhenNothingWasSent(t *testing.T) {
	a := sharedAgent(t)
	in := newInstance(t, a, prefix(t), 10*time.Second)
	l := in.NewIdentifyLimiter(fixedSession(in.session(t).ID()), 1, 5*time.Second)
	ctx := ctxTimeout(t, time.Minute)

	p, err := l.Acquire(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(-4 * time.Second) // as if sent 4 s ago
	p.Release(at)
	read := func() identifyValue {
		kv, _, err := in.client.KV().Get(in.identifyKey(0), nil)
		if err != nil || kv == nil {
			t.Fatalf("identify key: %v %v", kv, err)
		}
		if kv.Session != "" {
			t.Fatalf("identify lock still held by %s", kv.Session)
		}
		var v identifyValue
		if err := json.Unmarshal(kv.Value, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := read(); !v.LastIdentify.Equal(at) || v.ShardID != 3 || v.InstanceID != in.cfg.InstanceID {
		t.Fatalf("value %+v", v)
	}

	// The next holder waits out the rest of the window (~1 s) ...
	p, err = l.Acquire(ctx, 4)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < 800*time.Millisecond || waited > 3*time.Second {
		t.Fatalf("waited %v, want the ~1.1 s left of the window", waited)
	}
	// ... and a turn that sent nothing leaves the time as it was.
	p.Release(time.Time{})
	if v := read(); !v.LastIdentify.Equal(at) {
		t.Fatalf("last identify %v after an unused turn, want %v", v.LastIdentify, at)
	}
}

func TestIdentifyLimiterWaitsForAHeldBucket(t *testing.T) {
	a := sharedAgent(t)
	p := prefix(t)
	one, two := newInstance(t, a, p, 10*time.Second), newInstance(t, a, p, 10*time.Second)
	l1 := one.NewIdentifyLimiter(fixedSession(one.session(t).ID()), 1, 100*time.Millisecond)
	l2 := two.NewIdentifyLimiter(fixedSession(two.session(t).ID()), 1, 100*time.Millisecond)
	ctx := ctxTimeout(t, time.Minute)
	held, err := l1.Acquire(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		p, err := l2.Acquire(ctx, 1)
		if err == nil {
			p.Release(time.Time{})
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("acquired a bucket another instance holds (err %v)", err)
	case <-time.After(500 * time.Millisecond):
	}
	held.Release(time.Now())
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("bucket not acquired after its release")
	}
	// A canceled wait gives up cleanly.
	held, _ = l1.Acquire(ctx, 0)
	defer held.Release(time.Time{})
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := l2.Acquire(cctx, 1); err == nil {
		t.Fatal("acquired with an expired context")
	}
}

func TestMetricsAreLintClean(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.setRole(RoleOwner)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %+v", err, problems)
	}
}

func TestIdentifyLimiterNextTurnWaitsTheFullWindowWhenTheLastTurnWasNotRecorded(t *testing.T) {
	a := sharedAgent(t)
	p := prefix(t)
	const window = 2 * time.Second
	one, two := newInstance(t, a, p, 10*time.Second), newInstance(t, a, p, 10*time.Second)
	s1 := one.session(t)
	l1 := one.NewIdentifyLimiter(fixedSession(s1.ID()), 1, window)
	l2 := two.NewIdentifyLimiter(fixedSession(two.session(t).ID()), 1, window)
	ctx := ctxTimeout(t, time.Minute)

	// A recorded turn long ago: on its own, no reason to wait.
	p1, err := l1.Acquire(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	p1.Release(time.Now().Add(-time.Minute))
	// The next turn identifies, but its session is invalidated before it
	// releases the lock: the release that records the turn rolls back.
	p1, err = l1.Acquire(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := one.client.Session().Destroy(s1.ID(), nil); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	p1.Release(sent)

	p2, err := l2.Acquire(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Release(time.Time{})
	if err := p2.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if gap := time.Since(sent); gap < window {
		t.Fatalf("the next turn identified %v after an unrecorded IDENTIFY, inside the %v window", gap.Round(time.Millisecond), window)
	}
}

func TestIdentifyLimiterFirstTurnOfABucketWithoutARecordWaitsTheFullWindow(t *testing.T) {
	// No record (a new fleet, or Consul lost its state): an IDENTIFY may
	// have been sent just before.
	a := sharedAgent(t)
	in := newInstance(t, a, prefix(t), 10*time.Second)
	const window = time.Second
	l := in.NewIdentifyLimiter(fixedSession(in.session(t).ID()), 1, window)
	ctx := ctxTimeout(t, time.Minute)
	p, err := l.Acquire(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	p.Release(time.Now())
	if waited := time.Since(start); waited < window*9/10 {
		t.Fatalf("waited %v, want the full window (%v)", waited, window)
	}
}

// A turn taken before Consul lost the bucket's lock (a partition during
// which the lock went to another instance, or Consul restarted without its
// state) must not end in an IDENTIFY: the chaos run saw two instances
// identify 3.3 s apart in one bucket after a Consul restart.
func TestIdentifyLimiterRefusesATurnWhoseLockIsGoneFromConsul(t *testing.T) {
	a := sharedAgent(t)
	in := newInstance(t, a, prefix(t), 10*time.Second)
	l := in.NewIdentifyLimiter(fixedSession(in.session(t).ID()), 1, 10*time.Millisecond)
	ctx := ctxTimeout(t, time.Minute)
	p, err := l.Acquire(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Release(time.Time{})
	// Consul forgets the lock, as a restarted dev agent does.
	if _, err := in.client.KV().Delete(l.c.identifyKey(0), nil); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(ctx); !errors.Is(err, errIdentifyLockLost) {
		t.Fatalf("Wait = %v, want errIdentifyLockLost", err)
	}
}

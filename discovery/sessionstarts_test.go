package discovery

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardpool/gateway/service/shard"
)

// The session start count in Consul: one count for every instance of the
// bot, changed only by check-and-set.

func newCounter(t *testing.T, addr, prefix string) *SessionStartCounter {
	t.Helper()
	c, err := NewConsul(ConsulConfig{Address: addr, InstanceID: fmt.Sprintf("gw-unit-%d", instanceSeq.Add(1)), KVPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return c.NewSessionStartCounter()
}

func TestSessionStartCounterIsOneCountForEveryInstance(t *testing.T) {
	a := sharedAgent(t)
	ctx := ctxTimeout(t, 30*time.Second)
	now := time.Now()
	window := now.Add(time.Hour)
	one, two := newCounter(t, a.Addr, prefix(t)), newCounter(t, a.Addr, prefix(t))

	if l, ok, err := two.Take(ctx, 10, now); err != nil || ok || l.Remaining != 0 {
		t.Fatalf("take before any reading = %+v, %v, %v; want nothing taken", l, ok, err)
	}
	if _, err := one.Merge(ctx, shard.StartLimit{Total: 1000, Remaining: 20, ResetAt: window}, 0, now); err != nil {
		t.Fatal(err)
	}
	if l, ok, err := two.Take(ctx, 10, now); err != nil || !ok || l.Remaining != 19 {
		t.Fatalf("take on the other instance = %+v, %v, %v; want 19 left", l, ok, err)
	}
	if l, ok, err := one.Take(ctx, 10, now); err != nil || !ok || l.Remaining != 18 {
		t.Fatalf("take = %+v, %v, %v; want 18 left", l, ok, err)
	}
	if l, err := two.Give(ctx, window, now); err != nil || l.Remaining != 19 {
		t.Fatalf("give = %+v, %v; want 19", l, err)
	}
	// Another instance's reading of /gateway/bot: the lower count wins in
	// the window, a new window replaces it.
	if l, err := two.Merge(ctx, shard.StartLimit{Total: 1000, Remaining: 25, ResetAt: window}, 0, now); err != nil || l.Remaining != 19 {
		t.Fatalf("merge of a higher reading = %+v, %v; want 19 kept", l, err)
	}
	if l, err := one.Merge(ctx, shard.StartLimit{Total: 1000, Remaining: 1000, ResetAt: window.Add(24 * time.Hour)}, 1, window); err != nil || l.Remaining != 999 {
		t.Fatalf("merge of the next window = %+v, %v; want 999", l, err)
	}
	pair, _, err := a.Client().KV().Get(one.Key(), nil)
	if err != nil || pair == nil {
		t.Fatalf("record %s: %v", one.Key(), err)
	}
	t.Logf("%s = %s", pair.Key, pair.Value)
}

// Instances taking at once get exactly the starts above the reserve.
func TestSessionStartCounterNeverLetsInstancesTakeMoreThanTheStartsAboveTheReserve(t *testing.T) {
	a := sharedAgent(t)
	ctx := ctxTimeout(t, time.Minute)
	now := time.Now()
	counters := []*SessionStartCounter{newCounter(t, a.Addr, prefix(t)), newCounter(t, a.Addr, prefix(t))}
	if _, err := counters[0].Merge(ctx, shard.StartLimit{Total: 1000, Remaining: 30, ResetAt: now.Add(time.Hour)}, 0, now); err != nil {
		t.Fatal(err)
	}
	var taken atomic.Int32
	var wg sync.WaitGroup
	for _, c := range counters {
		for range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					_, ok, err := c.Take(ctx, 10, now)
					if err != nil {
						t.Error(err)
						return
					}
					if !ok {
						return
					}
					taken.Add(1)
				}
			}()
		}
	}
	wg.Wait()
	l, ok, err := counters[1].Take(ctx, 10, now)
	if n := taken.Load(); n != 20 || ok || err != nil || l.Remaining != 10 {
		t.Fatalf("%d starts taken, count %+v (%v, %v); want 20 taken and 10 left", n, l, ok, err)
	}
}

// Without Consul there is no count, and no start.
func TestSessionStartCounterFailsWhenConsulIsUnreachable(t *testing.T) {
	c := newCounter(t, "127.0.0.1:1", "unit/unreachable")
	ctx := ctxTimeout(t, 10*time.Second)
	if _, ok, err := c.Take(ctx, 10, time.Now()); err == nil || ok {
		t.Fatalf("take without consul = %v, %v; want an error", ok, err)
	}
}

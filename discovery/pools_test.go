package discovery

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/shardpool/gateway/service"
	"github.com/shardpool/gateway/service/shard"
)

type claim struct {
	pool int
	err  error
}

// claimAsync claims any of pools [0, pools).
func claimAsync(ctx context.Context, c *Consul, s Session, pools int) <-chan claim {
	ids := make([]int, pools)
	for i := range ids {
		ids[i] = i
	}
	return claimIDsAsync(ctx, c, s, ids)
}

func claimIDsAsync(ctx context.Context, c *Consul, s Session, ids []int) <-chan claim {
	ch := make(chan claim, 1)
	go func() {
		id, err := c.ClaimPool(ctx, s, ids)
		ch <- claim{id, err}
	}()
	return ch
}

func mustClaim(t *testing.T, ch <-chan claim) int {
	t.Helper()
	select {
	case c := <-ch:
		if c.err != nil {
			t.Fatal(c.err)
		}
		return c.pool
	case <-time.After(30 * time.Second):
		t.Fatal("no pool claimed")
		return -1
	}
}

func mustWait(t *testing.T, ch <-chan claim) {
	t.Helper()
	// A spare sleeps in a blocking query: nothing changes, nothing returns.
	select {
	case c := <-ch:
		t.Fatalf("claimed %+v while every pool was taken", c)
	case <-time.After(500 * time.Millisecond):
	}
}

func TestClaimPoolTakesTheLowestFreePoolThenWaitsAsASpare(t *testing.T) {
	a := sharedAgent(t)
	p := prefix(t)
	ctx := ctxTimeout(t, time.Minute)
	var ins []*instance
	var ss []Session
	for range 3 {
		in := newInstance(t, a, p, 10*time.Second)
		ins, ss = append(ins, in), append(ss, in.session(t))
	}
	if got := mustClaim(t, claimAsync(ctx, ins[0].Consul, ss[0], 2)); got != 0 {
		t.Fatalf("first claim: pool %d, want 0", got)
	}
	if got := mustClaim(t, claimAsync(ctx, ins[1].Consul, ss[1], 2)); got != 1 {
		t.Fatalf("second claim: pool %d, want 1", got)
	}
	spare := claimAsync(ctx, ins[2].Consul, ss[2], 2)
	mustWait(t, spare)

	// The owner of pool 1 hands it over: the spare takes it.
	if err := ins[1].HandOff(ctx, ss[1], 1, nil); err != nil {
		t.Fatal(err)
	}
	if got := mustClaim(t, spare); got != 1 {
		t.Fatalf("spare took pool %d, want 1", got)
	}
}

func TestClaimPoolOfOnePoolWaitsForThatPoolAsItsStandby(t *testing.T) {
	a := sharedAgent(t)
	p := prefix(t)
	ctx := ctxTimeout(t, time.Minute)
	owner, standby := newInstance(t, a, p, 10*time.Second), newInstance(t, a, p, 10*time.Second)
	osess, ss := owner.session(t), standby.session(t)
	if got := mustClaim(t, claimIDsAsync(ctx, owner.Consul, osess, []int{1})); got != 1 {
		t.Fatalf("claimed pool %d, want 1", got)
	}
	// Pool 0 is free, but the standby waits for pool 1 only.
	ch := claimIDsAsync(ctx, standby.Consul, ss, []int{1})
	mustWait(t, ch)
	if err := owner.HandOff(ctx, osess, 1, nil); err != nil {
		t.Fatal(err)
	}
	if got := mustClaim(t, ch); got != 1 {
		t.Fatalf("the standby took pool %d, want 1", got)
	}
}

func TestPoolLockKeysCarryThePlanGeneration(t *testing.T) {
	a := sharedAgent(t)
	p := prefix(t)
	ctx := ctxTimeout(t, time.Minute)
	first, next := newInstance(t, a, p, 10*time.Second), newInstance(t, a, p, 10*time.Second)
	next.cfg.PlanGeneration = 2
	fs, ns := first.session(t), next.session(t)
	mustClaim(t, claimAsync(ctx, first.Consul, fs, 1))
	// Pool 0 of generation 2 is another lock than pool 0 of generation 1.
	mustClaim(t, claimAsync(ctx, next.Consul, ns, 1))
	for key, s := range map[string]Session{p + "/pools/1/0": fs, p + "/pools/2/0": ns} {
		kv, _, err := first.client.KV().Get(key, nil)
		if err != nil || kv == nil || kv.Session != s.ID() {
			t.Errorf("%s: %+v (err %v), want locked by %s", key, kv, err, s.ID())
		}
	}
	if got := first.handoffPrefix(3); got != p+"/handoff/1/3/" {
		t.Errorf("hand-off prefix %q", got)
	}
}

func TestClaimPoolTakesOverWhenTheOwnersSessionEnds(t *testing.T) {
	a := sharedAgent(t)
	p := prefix(t)
	ctx := ctxTimeout(t, time.Minute)
	owner, spare := newInstance(t, a, p, 10*time.Second), newInstance(t, a, p, 10*time.Second)
	osess, ss := owner.session(t), spare.session(t)
	mustClaim(t, claimAsync(ctx, owner.Consul, osess, 1))
	ch := claimAsync(ctx, spare.Consul, ss, 1)
	mustWait(t, ch)
	// Consul invalidates the owner's session (as on TTL expiry or a
	// failed /health check): its lock is released.
	if _, err := owner.client.Session().Destroy(osess.ID(), nil); err != nil {
		t.Fatal(err)
	}
	if got := mustClaim(t, ch); got != 0 {
		t.Fatalf("pool %d", got)
	}
}

func TestClaimPoolRetriesThroughTheLockDelay(t *testing.T) {
	a := sharedAgent(t)
	p := prefix(t)
	ctx := ctxTimeout(t, time.Minute)
	owner, spare := newInstance(t, a, p, 10*time.Second), newInstance(t, a, p, 10*time.Second)
	owner.cfg.LockDelay = 2 * time.Second
	osess, ss := owner.session(t), spare.session(t)
	mustClaim(t, claimAsync(ctx, owner.Consul, osess, 1))
	ch := claimAsync(ctx, spare.Consul, ss, 1)
	if _, err := owner.client.Session().Destroy(osess.ID(), nil); err != nil {
		t.Fatal(err)
	}
	destroyed := time.Now()
	mustClaim(t, ch)
	if d := time.Since(destroyed); d < 1500*time.Millisecond {
		t.Fatalf("claimed %v after the owner's session ended, inside its 2 s lock-delay", d)
	}
}

func TestClaimPoolEndsWhenTheSessionIsLost(t *testing.T) {
	a := sharedAgent(t)
	p := prefix(t)
	ctx := ctxTimeout(t, time.Minute)
	owner, spare := newInstance(t, a, p, 10*time.Second), newInstance(t, a, p, 10*time.Second)
	osess, ss := owner.session(t), spare.session(t)
	mustClaim(t, claimAsync(ctx, owner.Consul, osess, 1))
	ch := claimAsync(ctx, spare.Consul, ss, 1)
	mustWait(t, ch)
	if _, err := spare.client.Session().Destroy(ss.ID(), nil); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-ch:
		if c.err == nil {
			t.Fatalf("claimed pool %d with a lost session", c.pool)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ClaimPool still waiting with a lost session")
	}
}

func handoff(shardID int, session string, seq int64, at time.Time) service.ShardHandoff {
	return service.ShardHandoff{ShardID: shardID, Handoff: &shard.Handoff{
		SessionID: session, ResumeGatewayURL: "wss://resume.example/" + session, Seq: seq, Time: at.UTC().Round(0),
	}}
}

func TestHandOffWritesTheRecordsWithTheReleaseAndTakeHandoffsConsumesThem(t *testing.T) {
	a := sharedAgent(t)
	p := prefix(t)
	ctx := ctxTimeout(t, time.Minute)
	owner, next := newInstance(t, a, p, 10*time.Second), newInstance(t, a, p, 10*time.Second)
	osess, ns := owner.session(t), next.session(t)
	mustClaim(t, claimAsync(ctx, owner.Consul, osess, 1))
	ch := claimAsync(ctx, next.Consul, ns, 1)
	mustWait(t, ch)

	now := time.Now()
	recs := []service.ShardHandoff{handoff(1, "s1", 42, now), handoff(0, "s0", 7, now), {ShardID: 2}}
	if err := owner.HandOff(ctx, osess, 0, recs); err != nil {
		t.Fatal(err)
	}
	if got := mustClaim(t, ch); got != 0 {
		t.Fatalf("pool %d", got)
	}
	got, err := next.TakeHandoffs(ctx, ns, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || *got[0] != *recs[1].Handoff || *got[1] != *recs[0].Handoff {
		t.Fatalf("records %v, want shards 0 and 1 as written (shard 2 had no session)", got)
	}
	// Consumed: a second reader finds nothing.
	again, err := next.TakeHandoffs(ctx, ns, 0)
	if err != nil || len(again) != 0 {
		t.Fatalf("second take: %v %v", again, err)
	}
}

func TestHandOffWithoutTheLockWritesNothing(t *testing.T) {
	a := sharedAgent(t)
	p := prefix(t)
	ctx := ctxTimeout(t, time.Minute)
	owner := newInstance(t, a, p, 10*time.Second)
	s := owner.session(t)
	mustClaim(t, claimAsync(ctx, owner.Consul, s, 1))
	if _, err := owner.client.Session().Destroy(s.ID(), nil); err != nil {
		t.Fatal(err)
	}
	err := owner.HandOff(ctx, s, 0, []service.ShardHandoff{handoff(0, "s0", 1, time.Now())})
	if !errors.Is(err, ErrLockLost) {
		t.Fatalf("HandOff = %v, want ErrLockLost", err)
	}
	pairs, _, err := owner.client.KV().List(owner.handoffPrefix(0), nil)
	if err != nil || len(pairs) != 0 {
		t.Fatalf("%d records written by a fenced instance (err %v)", len(pairs), err)
	}
}

func TestHandOffOfALargePoolSpansTransactions(t *testing.T) {
	a := sharedAgent(t)
	p := prefix(t)
	ctx := ctxTimeout(t, time.Minute)
	owner := newInstance(t, a, p, 10*time.Second)
	s := owner.session(t)
	mustClaim(t, claimAsync(ctx, owner.Consul, s, 1))
	var recs []service.ShardHandoff
	for i := range 150 {
		recs = append(recs, handoff(i, "s", int64(i), time.Now()))
	}
	if err := owner.HandOff(ctx, s, 0, recs); err != nil {
		t.Fatal(err)
	}
	got, err := owner.TakeHandoffs(ctx, s, 0)
	if !errors.Is(err, ErrLockLost) {
		t.Fatalf("TakeHandoffs after the release = %v, %v; want ErrLockLost", len(got), err)
	}
	pairs, _, err := owner.client.KV().List(owner.handoffPrefix(0), nil)
	if err != nil || len(pairs) != 150 {
		t.Fatalf("%d records, want 150 (err %v)", len(pairs), err)
	}
	kv, _, _ := owner.client.KV().Get(owner.poolKey(0), nil)
	if kv == nil || kv.Session != "" {
		t.Fatalf("pool lock %+v, want released", kv)
	}
}

package discovery

import (
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

func TestStartReshardWritesTheNextGenerationBesideThePlanAndRefusesASecond(t *testing.T) {
	a := sharedAgent(t)
	in := newInstance(t, a, prefix(t), 10*time.Second)
	ctx := ctxTimeout(t, 30*time.Second)
	if _, err := in.StartReshard(ctx, 8, 0, "op"); !errors.Is(err, ErrNoPlan) {
		t.Fatalf("without a plan: %v, want ErrNoPlan", err)
	}
	current, err := in.AgreePlan(ctx, Plan{TotalShards: 4, ShardsPerPool: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.StartReshard(ctx, 4, 0, "op"); !errors.Is(err, ErrSamePlan) {
		t.Fatalf("the same total: %v, want ErrSamePlan", err)
	}
	next, err := in.StartReshard(ctx, 8, 0, "op")
	if err != nil {
		t.Fatal(err)
	}
	if next.TotalShards != 8 || next.ShardsPerPool != 2 || next.Generation != current.Generation+1 || next.CreatedBy != "op" {
		t.Fatalf("next plan %+v", next)
	}
	if _, err := in.StartReshard(ctx, 12, 0, "op"); !errors.Is(err, ErrReshardInProgress) {
		t.Fatalf("a second resharding: %v, want ErrReshardInProgress", err)
	}
	plans, err := in.ReadPlans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !plans.Current.Same(current) || plans.Next == nil || !plans.Next.Same(next) {
		t.Fatalf("plans %+v next %+v", plans.Current, plans.Next)
	}
	// The startup check of an instance still sees the plan in force.
	if got, err := in.AgreePlan(ctx, Plan{TotalShards: 8, ShardsPerPool: 2}); err != nil || !got.Same(current) {
		t.Fatalf("AgreePlan during a resharding: %+v %v", got, err)
	}
}

func TestAbortReshardDropsTheNextGenerationAndLeavesThePlan(t *testing.T) {
	a := sharedAgent(t)
	in := newInstance(t, a, prefix(t), 10*time.Second)
	ctx := ctxTimeout(t, 30*time.Second)
	current, _ := in.AgreePlan(ctx, Plan{TotalShards: 4, ShardsPerPool: 2})
	if _, err := in.AbortReshard(ctx); !errors.Is(err, ErrNoReshard) {
		t.Fatalf("abort without a resharding: %v", err)
	}
	if _, err := in.StartReshard(ctx, 8, 4, "op"); err != nil {
		t.Fatal(err)
	}
	aborted, err := in.AbortReshard(ctx)
	if err != nil || aborted.TotalShards != 8 || aborted.ShardsPerPool != 4 {
		t.Fatalf("aborted %+v %v", aborted, err)
	}
	plans, err := in.ReadPlans(ctx)
	if err != nil || plans.Next != nil || !plans.Current.Same(current) {
		t.Fatalf("after abort: %+v %+v %v", plans.Current, plans.Next, err)
	}
	// A later resharding gets the next generation number again, unless the
	// aborted one left pool locks or records: then never its number.
	if next, err := in.StartReshard(ctx, 6, 0, "op"); err != nil || next.Generation != current.Generation+1 {
		t.Fatalf("restart: %+v %v", next, err)
	}
	in.AbortReshard(ctx)
	if _, err := in.client.KV().Put(&api.KVPair{Key: prefix(t) + "/handoff/2/0/1", Value: []byte(`{}`)}, nil); err != nil {
		t.Fatal(err)
	}
	if next, err := in.StartReshard(ctx, 6, 0, "op"); err != nil || next.Generation != 3 {
		t.Fatalf("after an aborted generation 2 with records: %+v %v, want generation 3", next, err)
	}
}

func TestCutOverMakesTheNextGenerationThePlanOnceAndOnlyUnderTheLock(t *testing.T) {
	a := sharedAgent(t)
	p := prefix(t)
	one, two := newInstance(t, a, p, 10*time.Second), newInstance(t, a, p, 10*time.Second)
	ctx := ctxTimeout(t, 30*time.Second)
	current, _ := one.AgreePlan(ctx, Plan{TotalShards: 4, ShardsPerPool: 2})
	next, err := one.StartReshard(ctx, 8, 0, "op")
	if err != nil {
		t.Fatal(err)
	}
	plans1, _ := one.ReadPlans(ctx)
	plans2, _ := two.ReadPlans(ctx)
	s1, s2 := one.session(t), two.session(t)
	ok1, err1 := one.CutOver(ctx, s1.ID(), plans1)
	ok2, err2 := two.CutOver(ctx, s2.ID(), plans2)
	if err1 != nil || err2 != nil || !ok1 || ok2 {
		t.Fatalf("cut-overs: %v %v, %v %v: want exactly the first", ok1, err1, ok2, err2)
	}
	after, err := two.ReadPlans(ctx)
	if err != nil || after.Next != nil || !after.Current.Same(next) {
		t.Fatalf("after the cut-over: %+v %+v %v", after.Current, after.Next, err)
	}
	// An instance of the old generation now sees a plan that is not its own.
	got, _ := one.ForPlan(current).AgreePlan(ctx, current)
	if CheckPlan(one.PlanKey(), got, 0, 2, current.Generation) == nil {
		t.Fatalf("the old generation's check passed against %+v", got)
	}
}

func TestProgressCountsClaimedPoolsAndTheReadyShardsTheirOwnersReport(t *testing.T) {
	a := sharedAgent(t)
	p := prefix(t)
	one, two := newInstance(t, a, p, 10*time.Second), newInstance(t, a, p, 10*time.Second)
	ctx := ctxTimeout(t, 30*time.Second)
	one.AgreePlan(ctx, Plan{TotalShards: 3, ShardsPerPool: 2})
	next, err := one.StartReshard(ctx, 5, 0, "op")
	if err != nil {
		t.Fatal(err)
	}
	g1, g2 := one.ForPlan(next), two.ForPlan(next)
	// The next generation's member accepts its plan while it is next.
	if got, err := g1.AgreePlan(ctx, next); err != nil || CheckPlan(g1.PlanKey(), got, 0, 2, next.Generation) != nil {
		t.Fatalf("next member's plan check: %+v %v", got, err)
	}
	s1, s2 := one.session(t), two.session(t)
	if id, err := g1.ClaimPool(ctx, s1, []int{0, 1, 2}); err != nil || id != 0 {
		t.Fatalf("claim: %d %v", id, err)
	}
	if id, err := g2.ClaimPool(ctx, s2, []int{0, 1, 2}); err != nil || id != 1 {
		t.Fatalf("claim: %d %v", id, err)
	}
	if err := g1.ReportPool(ctx, s1.ID(), 0, 2, 2); err != nil {
		t.Fatal(err)
	}
	if err := g2.ReportPool(ctx, s2.ID(), 1, 2, 1); err != nil {
		t.Fatal(err)
	}
	// Not the holder: nothing written, the lock not taken.
	if err := g1.ReportPool(ctx, s1.ID(), 2, 1, 1); !errors.Is(err, ErrLockLost) {
		t.Fatalf("report of a pool not held: %v", err)
	}
	got, err := one.Progress(ctx, next)
	want := GenerationProgress{Generation: next.Generation, TotalShards: 5, Pools: 3, PoolsClaimed: 2, ShardsReady: 3}
	if err != nil || got != want || got.Complete() {
		t.Fatalf("progress %+v %v, want %+v, not complete", got, err, want)
	}
	s2.Close(ctx) // the owner leaves: its pool is unclaimed, its shards no longer count
	got, _ = one.Progress(ctx, next)
	if got.PoolsClaimed != 1 || got.ShardsReady != 2 {
		t.Fatalf("after the owner left: %+v", got)
	}
}

func TestScheduleHandoverWritesTheInstantIntoTheNextPlanOnce(t *testing.T) {
	a := sharedAgent(t)
	in := newInstance(t, a, prefix(t), 10*time.Second)
	ctx := ctxTimeout(t, 30*time.Second)
	in.AgreePlan(ctx, Plan{TotalShards: 4, ShardsPerPool: 2})
	if _, err := in.StartReshard(ctx, 8, 0, "op"); err != nil {
		t.Fatal(err)
	}
	plans, _ := in.ReadPlans(ctx)
	s := in.session(t)
	at := time.Now().Add(2 * time.Second).Truncate(time.Millisecond)
	if ok, err := in.ScheduleHandover(ctx, s.ID(), plans, at); !ok || err != nil {
		t.Fatalf("schedule: %v %v", ok, err)
	}
	// A second instance reading the same plans is refused: plan-next moved.
	if ok, err := in.ScheduleHandover(ctx, s.ID(), plans, at.Add(time.Second)); ok || err != nil {
		t.Fatalf("second schedule: %v %v", ok, err)
	}
	after, _ := in.ReadPlans(ctx)
	if after.Next == nil || !after.Next.HandoverAt.Equal(at) || !after.Next.Same(*plans.Next) {
		t.Fatalf("next plan %+v, want the hand-over at %s", after.Next, at)
	}
	// The cut-over carries it into the plan in force.
	if ok, err := in.CutOver(ctx, s.ID(), after); !ok || err != nil {
		t.Fatalf("cut over: %v %v", ok, err)
	}
	final, _ := in.ReadPlans(ctx)
	if !final.Current.HandoverAt.Equal(at) {
		t.Fatalf("plan in force %+v", final.Current)
	}
}

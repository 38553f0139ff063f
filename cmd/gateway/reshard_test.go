package main

import (
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shardpool/gateway/discovery"
	"github.com/shardpool/gateway/service/shard"
)

func TestReshardTargetIsTheRecommendationRoundedUpToMaxConcurrency(t *testing.T) {
	for _, c := range []struct {
		current, recommended, maxConcurrency int
		got4011                              bool
		want                                 int
	}{
		{4, 8, 1, false, 8},
		{4, 7, 4, false, 8},
		{16, 17, 16, false, 32},
		{4, 4, 2, false, 4},   // nothing to do: not more than the plan
		{4, 4, 2, true, 8},    // a 4011 Discord's figure does not explain yet: twice
		{4, 3, 16, true, 16},  // twice, rounded up
		{4, 12, 16, true, 16}, // the recommendation, rounded up
	} {
		if got := reshardTarget(c.current, c.recommended, c.maxConcurrency, c.got4011); got != c.want {
			t.Errorf("reshardTarget(%d, %d, %d, %v) = %d, want %d", c.current, c.recommended, c.maxConcurrency, c.got4011, got, c.want)
		}
	}
}

func TestRESHARDAcceptsManualAndAutoOnly(t *testing.T) {
	var c Config
	for _, v := range []string{"manual", "auto", " AUTO "} {
		if err := reshardSetter(&c, v); err != nil {
			t.Errorf("%q: %v", v, err)
		}
	}
	if err := reshardSetter(&c, "on-4011"); err == nil {
		t.Error(`"on-4011" accepted`)
	}
}

func TestOverlapClockKeepsContentIDsFromTheNextGenerationUntilTheMarginAfterItsEnd(t *testing.T) {
	var c overlapClock
	t0 := time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC)
	if c.contentIDs(t0) {
		t.Fatal("content ids without a resharding")
	}
	c.begin(t0, t0.Add(time.Second))
	if !c.contentIDs(t0.Add(time.Hour)) {
		t.Fatal("no content ids during the overlap")
	}
	if cur, _ := c.seconds(t0.Add(90 * time.Second)); cur != 90 {
		t.Fatalf("overlap %vs, want 90 (from the next plan's creation)", cur)
	}
	c.end(t0.Add(100*time.Second), true, time.Minute)
	if !c.contentIDs(t0.Add(159*time.Second)) || c.contentIDs(t0.Add(161*time.Second)) {
		t.Fatal("content ids must last the margin after the overlap, and no longer")
	}
	c.closed(t0.Add(150*time.Second), time.Minute) // this instance's old sessions closed late
	if !c.contentIDs(t0.Add(200 * time.Second)) {
		t.Fatal("the margin counts from when the old sessions closed")
	}
	if cur, last := c.seconds(t0.Add(300 * time.Second)); cur != 0 || last != 100 {
		t.Fatalf("after the overlap: current %v, last %v", cur, last)
	}
}

func TestDecideMovesSparesToTheNextGenerationAndRetiresGenerationsNoLongerPlanned(t *testing.T) {
	g1 := discovery.Plan{TotalShards: 4, ShardsPerPool: 4, Generation: 1}
	g2 := discovery.Plan{TotalShards: 8, ShardsPerPool: 4, Generation: 2}
	spare := discovery.NewMember(discovery.MemberConfig{InstanceID: "test", FixedPool: -1, Plan: g1})
	for _, c := range []struct {
		name  string
		mine  discovery.Plan
		fixed bool
		plans discovery.Plans
		want  *discovery.Plan
	}{
		{"steady", g1, false, discovery.Plans{Current: g1}, nil},
		{"a spare joins the next generation", g1, false, discovery.Plans{Current: g1, Next: &g2}, &g2},
		{"a spare the next generation does not need stays", g1, false, discovery.Plans{Current: g1, Next: &g2}, nil},
		{"a POOL_ID instance waits for the cut-over", g1, true, discovery.Plans{Current: g1, Next: &g2}, nil},
		{"a member of the next generation stays", g2, false, discovery.Plans{Current: g1, Next: &g2}, nil},
		{"after the cut-over the old generation leaves", g1, false, discovery.Plans{Current: g2}, &g2},
		{"after an abort the next generation leaves", g2, false, discovery.Plans{Current: g1}, &g1},
	} {
		g := &fleetGens{m: &Main{}, member: spare, plan: c.mine, fixed: c.fixed}
		if strings.Contains(c.name, "does not need") {
			g.progress = []discovery.GenerationProgress{{Generation: 1, Pools: 1, PoolsClaimed: 1}, {Generation: 2, Pools: 2, PoolsClaimed: 2}}
		}
		sw, ok := g.decide(c.plans)
		switch {
		case c.want == nil && ok:
			t.Errorf("%s: switched to %v", c.name, sw.plan)
		case c.want != nil && (!ok || !sw.plan.Same(*c.want)):
			t.Errorf("%s: %v %v, want a switch to %v", c.name, sw.plan, ok, *c.want)
		case ok && sw.retire:
			t.Errorf("%s: a spare has nothing to retire", c.name)
		}
	}
}

func TestReshardMetricsAreLintClean(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newReshardMetrics(reg)
	g := &fleetGens{m: &Main{}, metrics: m, progress: []discovery.GenerationProgress{{Generation: 1, TotalShards: 4, Pools: 1, PoolsClaimed: 1, ShardsReady: 4}}}
	g.plans.Current = discovery.Plan{TotalShards: 4, ShardsPerPool: 4, Generation: 1}
	m.watch(g)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %+v", err, problems)
	}
	if n, _ := testutil.GatherAndCount(reg, "gateway_plan_generation", "gateway_pools_unclaimed", "gateway_generation_shards_ready"); n != 3 {
		t.Fatalf("%d series, want one of each", n)
	}
}

func TestRESHARDAutoWithoutConsulIsAStartupErrorNamingTheVariable(t *testing.T) {
	_, err := ParseConfig(nil, env(map[string]string{"DISCORD_TOKEN": "tok", "RESHARD": "auto"}), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "invalid RESHARD: auto") || !strings.Contains(err.Error(), "CONSUL_HTTP_ADDR") {
		t.Fatalf("RESHARD=auto without Consul: %v", err)
	}
	if _, err := ParseConfig(nil, env(map[string]string{"DISCORD_TOKEN": "tok", "RESHARD": "auto", "CONSUL_HTTP_ADDR": "127.0.0.1:8500"}), io.Discard); err != nil {
		t.Fatalf("RESHARD=auto with Consul: %v", err)
	}
}

func TestOnlyTheGenerationInForceTakesTheShardsCommands(t *testing.T) {
	g := &fleetGens{m: &Main{}, plan: discovery.Plan{Generation: 2}}
	var mu sync.Mutex
	subscribed := false
	subscribe := func(*shard.Shard) func() {
		mu.Lock()
		subscribed = true
		mu.Unlock()
		return func() { mu.Lock(); subscribed = false; mu.Unlock() }
	}
	is := func() bool { mu.Lock(); defer mu.Unlock(); return subscribed }
	wait := func(want bool, what string) {
		t.Helper()
		for deadline := time.Now().Add(3 * time.Second); is() != want; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: subscribed %v, want %v", what, is(), want)
			}
		}
	}
	set := func(current int) { g.mu.Lock(); g.plans.Current.Generation = current; g.mu.Unlock() }
	set(1) // generation 2 is next
	done, finished := make(chan struct{}), make(chan struct{})
	go func() { defer close(finished); g.subscribeWhileInForce(2, nil, subscribe, done) }()
	time.Sleep(300 * time.Millisecond)
	wait(false, "the next generation")
	set(2)
	wait(true, "at the cut-over")
	set(3)
	wait(false, "once a later generation is in force")
	set(3)
	close(done)
	<-finished
	if is() {
		t.Fatal("still subscribed after the shard stopped")
	}
}

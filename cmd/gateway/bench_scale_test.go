package main

// Phase 8 of the pipeline benchmark: what the gateway costs as one process
// runs more shards at the same total event rate: CPU per event, RSS and
// goroutines with 1, 25 and 100 shards. The gateway runs as a process of
// its own (see bench_proc_test.go); the simulator's paced generator spreads
// scaleRate events/s over the shards. The window's CPU profile is written
// to scale-<shards>.cpu.prof (go tool pprof it).

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shardpool/gateway/internal/discordsim"
)

var scaleShards = []int{1, 25, 100}

const (
	scaleRate   = 5000 // events/s in total
	scaleWarmup = 2 * time.Second
	scaleWindow = 8 * time.Second
	scaleGuilds = 5 // per shard
)

type scaleResult struct {
	shards      int
	events      int
	cpuPerEvent time.Duration // the gateway process's CPU over the window / events routed in it
	sysPerEvent time.Duration // the kernel's part of it (system time)
	rss         float64       // VmRSS at the end of the window
	heap        float64       // go_memstats_heap_alloc_bytes at the end of the window
	goroutines  int
}

func runScale(t *testing.T, bin string, shards int) scaleResult {
	w := newBenchWorld(t, discordsim.Config{Shards: shards, MaxConcurrency: shards, GuildsPerShard: scaleGuilds, MembersPerGuild: 10}, true)
	defer w.close()
	p := startBenchProc(t, bin, gatewayEnv(w.sim.APIURL(), w.ns.ClientURL(), shards))
	defer p.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for sh := 0; sh < shards; sh++ {
		if err := w.sim.WaitReady(ctx, sh); err != nil {
			t.Fatalf("shard %d of %d not ready: %v\n%s", sh, shards, err, p.logTail())
		}
	}
	w.waitStored(shards*scaleGuilds, time.Minute) // the GUILD_CREATEs
	w.sim.SetEventRate(float64(scaleRate) / float64(shards))
	defer w.sim.SetEventRate(0)
	time.Sleep(scaleWarmup)
	m0, err := p.metrics()
	if err != nil {
		t.Fatal(err)
	}
	u0, s0 := p.cpuSplit()
	if err := p.profile(scaleWindow, fmt.Sprintf("scale-%d.cpu.prof", shards)); err != nil {
		t.Errorf("profile: %v", err) // it also took the window's time
	}
	u1, s1 := p.cpuSplit()
	m1, err := p.metrics()
	if err != nil {
		t.Fatal(err)
	}
	events := int(m1["gateway_events_routed_total"] - m0["gateway_events_routed_total"])
	if events <= 0 {
		t.Fatalf("%d shards: no events routed in the window\n%s", shards, p.logTail())
	}
	return scaleResult{shards: shards, events: events, cpuPerEvent: (u1 - u0 + s1 - s0) / time.Duration(events), sysPerEvent: (s1 - s0) / time.Duration(events),
		rss: p.memory("VmRSS"), heap: m1["go_memstats_heap_alloc_bytes"], goroutines: int(m1["go_goroutines"])}
}

package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shardpool/gateway/discovery"
	"github.com/shardpool/gateway/internal/discordsim"
)

// The fleet's safety contract: one shard plan per fleet, a static POOL_ID
// under its pool's lock, and a lock-delay that covers the fencing margin.

// startExpectingExit starts an instance that must exit before serving and
// returns its log and Run's error.
func (f *fleet) startExpectingExit() (string, error) {
	f.t.Helper()
	e := f.newInstance()
	go func() { e.runErr <- e.m.Run(context.Background()) }()
	select {
	case err := <-e.runErr:
		e.stopped = true // Run returned: nothing to stop
		return e.logs.String(), err
	case <-e.m.started:
		e.base = "http://" + e.m.HTTPAddr()
		time.Sleep(5 * time.Second) // what does it do then?
		f.t.Fatalf("the instance started serving instead of exiting: now %s of pool %d; IDENTIFYs by shard %v",
			e.role(), e.status().PoolID, identifiesByShard(f.sim))
	case <-time.After(30 * time.Second):
		f.t.Fatal("the instance neither served nor exited")
	}
	return "", nil
}

func TestConsulInstanceWhosePlanDiffersFromTheFleetsExitsWithoutConnectingAShard(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		// The error names the variable and both values; so does the log.
		wantErr, wantLog string
	}{
		{
			name:    "another SHARDS_PER_POOL",
			env:     map[string]string{"SHARDS_PER_POOL": "1"},
			wantErr: "SHARDS_PER_POOL=1 differs from the fleet's shard plan",
			wantLog: "variable=SHARDS_PER_POOL configured=1 plan=2",
		},
		{
			name:    "another explicit TOTAL_SHARDS",
			env:     map[string]string{"TOTAL_SHARDS": "6"},
			wantErr: "TOTAL_SHARDS=6 differs from the fleet's shard plan",
			wantLog: "variable=TOTAL_SHARDS configured=6 plan=4",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := startFleet(t, fleetOptions{total: 4, perPool: 2, sim: discordsim4()})
			first := f.start(1)[0]
			first.waitOwner(60 * time.Second)

			f.o.env = tc.env
			logs, err := f.startExpectingExit()
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Run = %v, want an error containing %q", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), "/plan: ") || !strings.Contains(logs, tc.wantLog) || !strings.Contains(logs, "level=error") {
				t.Fatalf("error %q, log:\n%s\nwant the plan's key in the error and %q at error level in the log", err, logs, tc.wantLog)
			}
			for id, n := range identifiesByShard(f.sim) {
				if n != 1 {
					t.Errorf("shard %d identified %d times: the mismatching instance connected a shard", id, n)
				}
			}
			if svcs := catalog(t, f.consul); len(svcs) != 1 {
				t.Errorf("%d instances registered, want only the first", len(svcs))
			}
		})
	}
}

// discordsim4 recommends 4 shards.
func discordsim4() discordsim.Config { return discordsim.Config{Shards: 4} }

func TestConsulAutoTotalShardsAdoptsTheFleetsPlan(t *testing.T) {
	// Discord recommends 4 shards, but the fleet's first instance stored a
	// plan of 2 (TOTAL_SHARDS=2): the next, with auto, runs 2 as well.
	f := startFleet(t, fleetOptions{total: 2, perPool: 2, sim: discordsim4()})
	first := f.start(1)[0]
	first.waitOwner(60 * time.Second)
	f.o.env = map[string]string{"TOTAL_SHARDS": "auto"}
	next := f.start(1)[0]
	next.eventually("spare", 60*time.Second, func() bool { return next.role() == discovery.RoleSpare })
	st := next.status()
	if st.TotalShards != 2 || st.Discovery.Pools != 1 {
		t.Fatalf("total_shards %d, pools %d: want the fleet's plan (2 shards, 1 pool), not Discord's recommendation", st.TotalShards, st.Discovery.Pools)
	}
	if !strings.Contains(next.logs.String(), "adopted the fleet's shard plan") {
		t.Error("the log does not say the plan was adopted")
	}
	if got := identifiesByShard(f.sim); len(got) != 2 {
		t.Fatalf("identifies %v, want shards 0 and 1 only", got)
	}
	kv, _, err := f.consul.Client().KV().Get("gw-"+strings.ToLower(t.Name())+"/plan", nil)
	if err != nil || kv == nil {
		t.Fatalf("plan key: %v %v", kv, err)
	}
	var plan discovery.Plan
	if err := json.Unmarshal(kv.Value, &plan); err != nil || plan.TotalShards != 2 || plan.ShardsPerPool != 2 || plan.Generation != 1 {
		t.Fatalf("stored plan %s (%v)", kv.Value, err)
	}
}

func TestConsulSecondInstanceWithTheSamePoolIDStandsByAndTakesOverWhenTheOwnerLeaves(t *testing.T) {
	cases := []struct {
		name  string
		leave func(owner *testEnv)
		// After a drain the standby RESUMEs; after a crash it identifies.
		wantIdentifies int
	}{
		{"drained", func(owner *testEnv) {
			if code, b := owner.do("POST", "/drain", ""); code != http.StatusOK {
				t.Fatalf("drain: %d %s", code, b)
			}
		}, 1},
		{"crashed", func(owner *testEnv) { owner.crash() }, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Without checkpoints: a crash leaves no record (crash_test.go has them).
			f := startFleet(t, fleetOptions{total: 4, perPool: 2, env: map[string]string{"POOL_ID": "0", "CHECKPOINT_INTERVAL": "0s"}})
			owner := f.start(1)[0]
			owner.waitShardsReady(2)
			standby := f.start(1)[0]
			standby.eventually("standby", 60*time.Second, func() bool { return standby.role() == discovery.RoleStandby })

			if code, r := standby.readiness(); code != http.StatusServiceUnavailable || r.Ready || r.PoolID != -1 {
				t.Fatalf("standby /ready %d %+v, want 503 without a pool", code, r)
			}
			if st := standby.status(); st.State != discovery.RoleStandby || st.PoolID != -1 || len(st.Shards) != 0 || st.Discovery.Session == "" {
				t.Fatalf("standby /status %+v", st)
			}
			standby.wantMetrics(`gateway_discovery_role{role="standby"} 1`, `gateway_discovery_role{role="static"} 0`)
			if got := identifiesByShard(f.sim); got[0] != 1 || got[1] != 1 {
				t.Fatalf("identifies %v: the standby connected pool 0's shards while its owner ran them", got)
			}
			if owner.role() != discovery.RoleStatic {
				t.Fatalf("owner role %s", owner.role())
			}

			tc.leave(owner)
			standby.eventually("running pool 0", 90*time.Second, func() bool {
				st := standby.status()
				return st.Discovery.Role == discovery.RoleStatic && st.PoolID == 0
			})
			standby.waitShardsReady(2)
			if got := identifiesByShard(f.sim); got[0] != tc.wantIdentifies || got[1] != tc.wantIdentifies {
				t.Fatalf("identifies per shard %v, want %d each", got, tc.wantIdentifies)
			}
		})
	}
}

func TestConfigRejectsALockDelayShorterThanHalfTheSessionTTL(t *testing.T) {
	cases := []struct {
		ttl, delay string
		want       string // "" = accepted
	}{
		{"15s", "15s", ""},
		{"15s", "7500ms", ""},
		{"10s", "5s", ""},
		{"60s", "30s", ""},
		{"15s", "7s", "invalid CONSUL_LOCK_DELAY: 7s is less than half of CONSUL_SESSION_TTL (15s): an owner cut off from Consul stops its shards only 7.5s after its last renewal, and another instance may take its pool a lock-delay after Consul ends the session; set CONSUL_LOCK_DELAY to at least 7.5s"},
		{"10s", "0s", "invalid CONSUL_LOCK_DELAY: 0s is less than half of CONSUL_SESSION_TTL (10s): an owner cut off from Consul stops its shards only 5s after its last renewal, and another instance may take its pool a lock-delay after Consul ends the session; set CONSUL_LOCK_DELAY to at least 5s"},
		{"2m", "15s", "invalid CONSUL_LOCK_DELAY: 15s is less than half of CONSUL_SESSION_TTL (2m): an owner cut off from Consul stops its shards only 1m after its last renewal, and another instance may take its pool a lock-delay after Consul ends the session; set CONSUL_LOCK_DELAY to at least 1m"},
	}
	for _, tc := range cases {
		t.Run(tc.ttl+"/"+tc.delay, func(t *testing.T) {
			_, err := ParseConfig(nil, env(map[string]string{"DISCORD_TOKEN": "tok", "CONSUL_SESSION_TTL": tc.ttl, "CONSUL_LOCK_DELAY": tc.delay}), io.Discard)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || err.Error() != tc.want):
				t.Fatalf("error\n got %v\nwant %s", err, tc.want)
			}
		})
	}
}

func TestConfigReportsTheLockDelayWithTheOtherInvalidVariables(t *testing.T) {
	_, err := ParseConfig(nil, env(map[string]string{"DISCORD_TOKEN": "tok", "LOG_LEVEL": "loud", "CONSUL_LOCK_DELAY": "1s"}), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "invalid LOG_LEVEL") || !strings.Contains(err.Error(), "invalid CONSUL_LOCK_DELAY: 1s is less than half of CONSUL_SESSION_TTL (15s)") {
		t.Fatalf("error %v, want both LOG_LEVEL and CONSUL_LOCK_DELAY", err)
	}
	// A lock-delay that is itself invalid is reported once, as such.
	_, err = ParseConfig(nil, env(map[string]string{"DISCORD_TOKEN": "tok", "CONSUL_LOCK_DELAY": "soon"}), io.Discard)
	if err == nil || strings.Count(err.Error(), "CONSUL_LOCK_DELAY") != 1 {
		t.Fatalf("error %v, want one line about CONSUL_LOCK_DELAY", err)
	}
}

func TestConfigCheckFailuresDefaultsToThree(t *testing.T) {
	c, err := ParseConfig(nil, env(map[string]string{"DISCORD_TOKEN": "tok"}), io.Discard)
	if err != nil || c.CheckFailures != 3 {
		t.Fatalf("CheckFailures %d, %v", c.CheckFailures, err)
	}
	c, err = ParseConfig([]string{"-consul-check-failures", "5"}, env(map[string]string{"DISCORD_TOKEN": "tok"}), io.Discard)
	if err != nil || c.CheckFailures != 5 {
		t.Fatalf("CheckFailures %d, %v", c.CheckFailures, err)
	}
}

package main

import (
	"strings"
	"testing"
	"time"

	"github.com/shardpool/gateway/discovery"
	"github.com/shardpool/gateway/internal/discordsim"
	"github.com/shardpool/gateway/internal/tcpproxy"
)

// defaultOf is a setting's default, from the one table of settings.
func defaultOf(t *testing.T, env string) string {
	t.Helper()
	for _, v := range vars {
		if v.env == env {
			return v.def
		}
	}
	t.Fatalf("no setting %s", env)
	return ""
}

// startWith starts one instance whose environment has extra on top of the
// fleet's.
func (f *fleet) startWith(extra map[string]string) *testEnv {
	f.t.Helper()
	saved := f.o.env
	env := map[string]string{}
	for k, v := range saved {
		env[k] = v
	}
	for k, v := range extra {
		env[k] = v
	}
	f.o.env = env
	defer func() { f.o.env = saved }()
	return f.start(1)[0]
}

// An owner cut off from Consul while a spare still reaches it, with the
// default session TTL and lock-delay: the owner fences itself, and for
// every shard the simulator saw the owner's connection end before the
// spare's first IDENTIFY or RESUME of it.
func TestConsulPartitionedOwnerClosesEveryShardBeforeTheSpareClaimsIt(t *testing.T) {
	ttl, err := time.ParseDuration(defaultOf(t, "CONSUL_SESSION_TTL"))
	if err != nil {
		t.Fatal(err)
	}
	lockDelay, err := time.ParseDuration(defaultOf(t, "CONSUL_LOCK_DELAY"))
	if err != nil || lockDelay == 0 {
		t.Fatalf("default CONSUL_LOCK_DELAY %v (%v): the test wants the default, which must not be 0", lockDelay, err)
	}
	f := startFleet(t, fleetOptions{total: 2, perPool: 2, sim: discordsim.Config{EventRate: 20}, env: map[string]string{
		"CONSUL_SESSION_TTL": ttl.String(), "CONSUL_LOCK_DELAY": lockDelay.String(),
		"CONSUL_CHECK_INTERVAL": defaultOf(t, "CONSUL_CHECK_INTERVAL"),
	}})
	proxy, err := tcpproxy.Start(f.consul.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	owner := f.startWith(map[string]string{"CONSUL_HTTP_ADDR": proxy.Addr()})
	owner.waitOwner(60 * time.Second)
	spare := f.start(1)[0]
	spare.eventually("spare", 60*time.Second, func() bool { return spare.role() == discovery.RoleSpare })

	cut := time.Now()
	proxy.Partition()
	owner.eventually("the owner fenced", ttl, func() bool { return owner.role() == discovery.RoleFenced })
	fenced := time.Now()
	// Consul expires the session between TTL and 2 TTL after the last
	// renewal, then keeps the lock for the lock-delay.
	spare.waitOwner(2*ttl + lockDelay + 30*time.Second)
	took := time.Now()

	rec := f.sim.Record()
	if ov := rec.Overlaps(); len(ov) != 0 {
		t.Errorf("overlaps: %+v", ov)
	}
	for _, shard := range []int{0, 1} {
		var ownerConns []discordsim.ShardConn
		var first *discordsim.ShardConn
		for i, sc := range rec.ShardConns {
			switch {
			case sc.Shard != shard:
			case sc.Claimed.Before(cut):
				ownerConns = append(ownerConns, sc)
			case first == nil || sc.Claimed.Before(first.Claimed):
				first = &rec.ShardConns[i]
			}
		}
		if len(ownerConns) == 0 || first == nil {
			t.Fatalf("shard %d: %d connections of the owner, spare's claim %v: %+v", shard, len(ownerConns), first, rec.ShardConns)
		}
		how := "IDENTIFY"
		for _, rs := range rec.Resumes {
			if rs.ConnID == first.ConnID {
				how = "RESUME"
			}
		}
		for _, oc := range ownerConns {
			if oc.Ended.IsZero() || !oc.Ended.Before(first.Claimed) {
				t.Errorf("shard %d: the owner's conn %d ended %v, not before the spare's %s at %v", shard, oc.ConnID, oc.Ended, how, first.Claimed)
				continue
			}
			t.Logf("shard %d: owner's conn %d closed %v after the cut (%s), the spare's %s %v later (margin)",
				shard, oc.ConnID, oc.Ended.Sub(cut).Round(time.Millisecond), oc.EndedBy, how, first.Claimed.Sub(oc.Ended).Round(time.Millisecond))
		}
	}
	t.Logf("partition: fenced %v after the cut, the spare owned the pool %v after it (TTL %v, lock-delay %v)",
		fenced.Sub(cut).Round(time.Millisecond), took.Sub(cut).Round(time.Millisecond), ttl, lockDelay)
	if ms := owner.membership(); ms.LastFence == nil || ms.LastFence.PoolID != 0 {
		t.Errorf("owner's membership %+v: want its fence of pool 0", ms)
	}

	// Healed: the old owner comes back as the spare and claims nothing.
	proxy.Heal()
	owner.eventually("the old owner back as spare", 60*time.Second, func() bool { return owner.role() == discovery.RoleSpare })
	for _, sc := range f.sim.Record().ShardConns {
		if sc.Claimed.After(took) {
			t.Errorf("shard %d claimed again at %v after the take-over", sc.Shard, sc.Claimed)
		}
	}
	if !strings.Contains(owner.logs.String(), "fenced") {
		t.Error("the owner's log does not say it fenced")
	}
}

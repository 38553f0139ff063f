package main

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shardpool/gateway/internal/discordsim"
	"github.com/shardpool/gateway/internal/natstest"
)

// The recommended production setting: three clustered nats-servers,
// STREAM_REPLICAS=3, file storage. The node leading both streams, which is
// also the one the gateway is connected to, dies during steady traffic: the
// gateway rides out the reconnect and the election without a restart, and
// every event ends up stored exactly once.
func TestJetStreamClusterLosesItsStreamLeaderDuringSteadyTraffic(t *testing.T) {
	e := startEnv(t, envOptions{cluster: 3, storage: "file",
		sim:    discordsim.Config{Shards: 2, EventRate: 100},
		config: func(c *Config) { c.StreamReplicas = 3 }})
	e.waitShardsReady(2)
	for _, stream := range []string{"EVENTS", "COMMANDS"} {
		e.eventually("stream "+stream, 30*time.Second, func() bool { return e.streamCount(stream) >= 0 })
		if c := e.streamConfig(stream); c.Replicas != 3 || c.Storage != jetstream.FileStorage {
			t.Fatalf("%s has %d replicas on %s storage; want 3 on file", stream, c.Replicas, c.Storage)
		}
		e.moveLeader(stream, e.m.nats.nc.ConnectedServerName())
	}
	leader := e.cluster.StreamLeader("EVENTS")
	routed := func() float64 {
		return e.metric("gateway_events_routed_total", map[string]string{"shard_id": "0"}) +
			e.metric("gateway_events_routed_total", map[string]string{"shard_id": "1"})
	}
	e.eventually("steady traffic", 20*time.Second, func() bool { return routed() > 100 })

	dead := leader.NATS().Name()
	leader.Shutdown()
	e.eventually("another leader of EVENTS", 30*time.Second, func() bool {
		l := e.cluster.StreamLeader("EVENTS")
		return l != nil && l.NATS().Name() != dead
	})
	after := routed()
	e.eventually("events acked again after the election", 30*time.Second, func() bool { return routed() > after+100 })

	e.sim.SetEventRate(0)
	e.settle()
	e.assertExactlyOnce(expectedIDs(t, e.sim, true))
	for _, shard := range []string{"0", "1"} {
		if n := e.metric("gateway_identifies_total", map[string]string{"shard_id": shard}); n != 1 {
			t.Errorf("shard %s identified %v times; want once: the election must not cost a session", shard, n)
		}
	}
	if err := e.stop(); err != nil || !e.m.drainedClean {
		t.Errorf("drain: err %v, every event acked %v; want a clean drain", err, e.m.drainedClean)
	}
}

// moveLeader makes the node named node lead stream, as `nats stream cluster
// step-down --preferred` does.
func (e *testEnv) moveLeader(stream, node string) {
	e.t.Helper()
	var l *natstest.Server
	e.eventually("a leader of "+stream, 30*time.Second, func() bool { l = e.cluster.StreamLeader(stream); return l != nil })
	if l.NATS().Name() == node {
		return
	}
	req, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": node}})
	if _, err := e.nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, req, 10*time.Second); err != nil {
		e.t.Fatalf("step down the leader of %s: %v", stream, err)
	}
	e.eventually(node+" leading "+stream, 30*time.Second, func() bool {
		l := e.cluster.StreamLeader(stream)
		return l != nil && l.NATS().Name() == node
	})
}

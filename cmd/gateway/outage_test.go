package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/shardpool/gateway/internal/discordsim"
	"github.com/shardpool/gateway/service"
)

// metric returns the value of one sample of /metrics (0 when absent).
func (e *testEnv) metric(name string, labels map[string]string) float64 {
	e.t.Helper()
	_, b := e.get("/metrics")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(b)))
	if err != nil {
		e.t.Fatal(err)
	}
	f := families[name]
	if f == nil {
		return 0
	}
next:
	for _, m := range f.GetMetric() {
		for k, v := range labels {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == k && lp.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// outage stops the NATS server for d and starts it again on the same port
// and store.
func (e *testEnv) outage(d time.Duration) {
	e.t.Helper()
	e.ns.Shutdown() // returns once it is down
	time.Sleep(d)
	e.ns.Start()
}

func TestNATSOutageLosesAndDuplicatesNothing(t *testing.T) {
	e := startEnv(t, envOptions{storage: "file", sim: discordsim.Config{Shards: 2, EventRate: 250}})
	e.waitShardsReady(2)
	time.Sleep(500 * time.Millisecond)
	e.outage(4 * time.Second)
	e.eventually("breaker closed again", 30*time.Second, func() bool {
		return e.metric("gateway_circuit_breaker_transitions_total", map[string]string{"from": "half-open", "to": "closed"}) >= 1
	})
	time.Sleep(500 * time.Millisecond)
	e.sim.SetEventRate(0)
	e.settle()

	for _, tr := range [][2]string{{"closed", "open"}, {"open", "half-open"}, {"half-open", "closed"}} {
		if v := e.metric("gateway_circuit_breaker_transitions_total", map[string]string{"from": tr[0], "to": tr[1]}); v < 1 {
			t.Errorf("no %s → %s transition", tr[0], tr[1])
		}
	}
	if v := e.metric("gateway_circuit_breaker_state", map[string]string{"breaker": "jetstream"}); v != 0 {
		t.Errorf("breaker state %v, want 0 (closed)", v)
	}
	if v := e.metric("gateway_publish_buffer_events", nil); v != 0 {
		t.Errorf("buffer holds %v events", v)
	}
	if v := e.metric("gateway_route_failures_total", map[string]string{"shard_id": "0"}) + e.metric("gateway_route_failures_total", map[string]string{"shard_id": "1"}); v < 1 {
		t.Errorf("no route failure counted during the outage")
	}
	want := expectedIDs(t, e.sim, false)
	if len(want) < 1000 {
		t.Fatalf("only %d events generated; the test needs a real flow", len(want))
	}
	e.assertExactlyOnce(want)
}

func TestFullBufferPausesReadingAndLosesNothing(t *testing.T) {
	e := startEnv(t, envOptions{
		storage: "file",
		sim:     discordsim.Config{Shards: 2, EventRate: 250},
		config:  func(c *Config) { c.BufferMaxEvents = 20 },
	})
	e.waitShardsReady(2)
	time.Sleep(300 * time.Millisecond)
	e.outage(3 * time.Second)
	e.eventually("buffer drained", 30*time.Second, func() bool {
		return e.metric("gateway_circuit_breaker_transitions_total", map[string]string{"from": "half-open", "to": "closed"}) >= 1
	})
	e.sim.SetEventRate(0)
	e.settle()
	paused := e.metric("gateway_backpressure_seconds_total", map[string]string{"shard_id": "0"}) +
		e.metric("gateway_backpressure_seconds_total", map[string]string{"shard_id": "1"})
	if paused < 1 {
		t.Fatalf("shards paused %.2fs in a 3 s outage with a 20-event buffer; reads were not paused", paused)
	}
	e.assertExactlyOnce(expectedIDs(t, e.sim, false))
}

func TestDrainUnderLoadHandsOffResumableSessions(t *testing.T) {
	const token = "drain-secret-token"
	e := startEnv(t, envOptions{
		sim:    discordsim.Config{Shards: 2, EventRate: 250},
		config: func(c *Config) { c.DrainToken = token },
	})
	e.waitShardsReady(2)
	time.Sleep(500 * time.Millisecond)

	if code, _ := e.do("POST", "/drain", ""); code != http.StatusUnauthorized {
		t.Fatalf("drain without a token: %d, want 401", code)
	}
	if code, _ := e.do("POST", "/drain", "Bearer wrong"); code != http.StatusUnauthorized {
		t.Fatalf("drain with a wrong token: %d, want 401", code)
	}
	if code, _ := e.readiness(); code != 200 {
		t.Fatalf("a refused drain changed readiness: %d", code)
	}
	code, b := e.do("POST", "/drain", "Bearer "+token)
	if code != 200 {
		t.Fatalf("drain: %d %s", code, b)
	}
	var res service.DrainResult
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.readiness(); code != 503 {
		t.Fatalf("ready %d after drain, want 503", code)
	}
	// Idempotent: a second drain returns the same records.
	code, b2 := e.do("POST", "/drain", "Bearer "+token)
	if code != 200 || string(b2) != string(b) {
		t.Fatalf("second drain: %d %s, want the same answer", code, b2)
	}
	if !res.Flushed || len(res.Shards) != 2 {
		t.Fatalf("drain result %+v", res)
	}
	e.sim.SetEventRate(0)
	// The simulator records a close frame when its reader gets to it.
	e.eventually("both close frames recorded", 10*time.Second, func() bool { return len(e.sim.Record().ClientCloses) >= 2 })

	rec := e.sim.Record()
	sessions := map[int]discordsim.SessionInfo{}
	for _, s := range e.sim.Sessions() {
		sessions[s.Shard] = s
	}
	closedWith := map[int]int{}
	for _, c := range rec.ClientCloses {
		closedWith[c.Shard] = c.Code
	}
	want := map[string]discordsim.SentDispatch{}
	all := expectedIDs(t, e.sim, false)
	for _, h := range res.Shards {
		if code := closedWith[h.ShardID]; code == 0 || code == 1000 || code == 1001 {
			t.Errorf("shard %d closed with %d, want a resumable code", h.ShardID, code)
		}
		s := sessions[h.ShardID]
		if h.Handoff == nil || h.Handoff.SessionID != s.ID || h.Handoff.ResumeGatewayURL != s.ResumeURL {
			t.Errorf("shard %d hand-off %+v does not match the simulator's session %+v", h.ShardID, h.Handoff, s)
			continue
		}
		if h.Handoff.Seq < 2 || h.Handoff.Seq > s.Seq {
			t.Errorf("shard %d hand-off seq %d outside (1, %d]", h.ShardID, h.Handoff.Seq, s.Seq)
		}
		if s.Invalid {
			t.Errorf("shard %d session was invalidated by the drain", h.ShardID)
		}
		for id, d := range all {
			if d.Shard == h.ShardID && d.Seq <= h.Handoff.Seq {
				want[id] = d
			}
		}
	}
	// Everything up to the hand-off seq is in JetStream exactly once; what
	// follows is Discord's to replay to the successor. Nothing else is there.
	seen := map[string]int{}
	for _, stream := range []string{"EVENTS", "COMMANDS"} {
		for _, m := range e.streamMsgs(stream) {
			seen[m.Header.Get("Nats-Msg-Id")]++
		}
	}
	for id := range want {
		if seen[id] != 1 {
			t.Fatalf("event %s up to the hand-off seq is in the streams %d times", id, seen[id])
		}
	}
	for id, n := range seen {
		if _, ok := all[id]; !ok || n != 1 {
			t.Fatalf("unexpected or duplicated message %s (%d)", id, n)
		}
	}
	st := e.status()
	if st.State != service.PoolDrained {
		t.Fatalf("pool state %q", st.State)
	}
	for i, s := range st.Shards {
		if s.State != "drained" || s.Handoff == nil || *s.Handoff != *res.Shards[i].Handoff {
			t.Errorf("status of shard %d: %+v, want drained with the hand-off record", s.ID, s)
		}
	}
	if strings.Contains(e.logs.String(), token) {
		t.Fatal("the drain token reached the log")
	}
}

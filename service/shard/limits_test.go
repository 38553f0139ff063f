package shard

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardpool/gateway/internal/discordsim"
	"github.com/shardpool/gateway/service/event"
	"github.com/shardpool/gateway/service/publish"
)

// This file is the harness of the end-to-end tests that run one shard
// against the Discord simulator (split_e2e_test.go, oversize_e2e_test.go).
// They use only the shard's public API: New, Run, Ready, Status and the
// metrics it registers.

// shardRun is shard 0 of 1 running against sim.
type shardRun struct {
	sim     *discordsim.Server
	shard   *Shard
	metrics *Metrics
	reg     *prometheus.Registry
	pub     *recordingPublisher
}

// runShard starts a simulator and shard 0 of 1 on it with an in-memory
// publisher that acks every event at once and records it, and waits for
// READY.
func runShard(t *testing.T, compression string, limits Limits) *shardRun {
	t.Helper()
	sim := startSim(t, discordsim.Config{})
	r := &shardRun{sim: sim, reg: prometheus.NewRegistry(), pub: &recordingPublisher{}}
	r.metrics = NewMetrics(r.reg)
	r.shard = startShard(t, Config{
		GatewayURL: sim.GatewayURL(), Compression: compression, Limits: limits,
		Publisher: r.pub, Metrics: r.metrics,
	}).shard
	waitShard(t, "ready", r.shard.Ready)
	return r
}

// waitShard polls cond until it holds, failing the test after a generous
// deadline: tests wait for outcomes, they never assert on timing.
func waitShard(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitUnlessReconnected waits for cond like waitShard, but returns early
// once the shard has left its first connection, which the tests using it
// forbid: the checks that follow then say what went wrong instead of the
// test timing out.
func (r *shardRun) waitUnlessReconnected(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitShard(t, what, func() bool {
		return cond() || r.sim.Stats().Connections > 1 || r.counterTotal(t, "gateway_shard_reconnects_total") > 0
	})
}

// expectOneConnection checks that the shard never left its first
// connection: one websocket, one IDENTIFY, no RESUME, no reconnect.
func (r *shardRun) expectOneConnection(t *testing.T) {
	t.Helper()
	rec := r.sim.Record()
	if rec.Connections != 1 || len(rec.Identifies) != 1 || len(rec.Resumes) != 0 {
		t.Errorf("the shard left its connection: %d connections, %d IDENTIFYs, %d RESUMEs (client closes %+v)",
			rec.Connections, len(rec.Identifies), len(rec.Resumes), rec.ClientCloses)
	}
	if n := r.counterTotal(t, "gateway_shard_reconnects_total"); n != 0 {
		t.Errorf("gateway_shard_reconnects_total = %v by reason %v, want 0", n, r.counterByLabel(t, "gateway_shard_reconnects_total", "reason"))
	}
}

// counterTotal sums every series of the counter name for shard 0.
func (r *shardRun) counterTotal(t *testing.T, name string) float64 {
	t.Helper()
	total := 0.0
	for _, v := range r.counterByLabel(t, name, "shard_id") {
		total += v
	}
	return total
}

// counterByLabel returns the non-zero shard 0 series of the counter name,
// summed by the value of label.
func (r *shardRun) counterByLabel(t *testing.T, name, label string) map[string]float64 {
	t.Helper()
	families, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["shard_id"] == "0" && m.GetCounter().GetValue() != 0 {
				out[labels[label]] += m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// recordedEvent is what the recording publisher keeps of an event.
type recordedEvent struct {
	Type string // Discord dispatch type
	Seq  int64
	Body []byte
}

// recordingPublisher acks every event at once and keeps it, in the order
// the shard published them.
type recordingPublisher struct {
	mu     sync.Mutex
	events []recordedEvent
}

var _ publish.Publisher = (*recordingPublisher)(nil)

func (p *recordingPublisher) Publish(_ context.Context, ev *event.Event, done publish.Done) error {
	p.mu.Lock()
	p.events = append(p.events, recordedEvent{Type: ev.Type, Seq: ev.Seq, Body: bytes.Clone(ev.Body)})
	p.mu.Unlock()
	done(nil)
	return nil
}

func (p *recordingPublisher) Events() []recordedEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]recordedEvent(nil), p.events...)
}

// has reports whether the event of seq was published.
func (p *recordingPublisher) has(seq int64) bool {
	for _, e := range p.Events() {
		if e.Seq == seq {
			return true
		}
	}
	return false
}

// simDispatched is a dispatch a test sent through the simulator.
type simDispatched struct {
	Seq int64
	D   []byte
}

// expectPublishedExactly checks that the publisher got exactly want, once
// each, in order, each event carrying its dispatch's d unchanged.
func expectPublishedExactly(t *testing.T, pub *recordingPublisher, want []simDispatched) {
	t.Helper()
	got := pub.Events()
	seqs := make([]int64, len(got))
	for i, e := range got {
		seqs[i] = e.Seq
	}
	wantSeqs := make([]int64, len(want))
	for i, w := range want {
		wantSeqs[i] = w.Seq
	}
	if fmt.Sprint(seqs) != fmt.Sprint(wantSeqs) {
		t.Errorf("published seqs %s,\nwant exactly %s", shortSeqs(seqs), shortSeqs(wantSeqs))
		return
	}
	for i, w := range want {
		if !bytes.Contains(got[i].Body, w.D) {
			t.Errorf("event seq %d does not carry its d unchanged: body %.120s…", w.Seq, got[i].Body)
		}
	}
}

// shortSeqs prints a list of seqs, eliding the middle of a long one.
func shortSeqs(seqs []int64) string {
	if len(seqs) <= 12 {
		return fmt.Sprint(seqs)
	}
	return fmt.Sprintf("%v … %v (%d in all)", seqs[:6], seqs[len(seqs)-6:], len(seqs))
}

// memberAddBody is a GUILD_MEMBER_ADD d (published as member.join) whose note
// is repeated text, so it compresses against what came before it.
func memberAddBody(i int, note string) []byte {
	return fmt.Appendf(nil, `{"guild_id":"41771983423143937","user":{"id":"%d","username":"user%d"},"roles":[],"joined_at":"2024-01-01T00:00:00Z","note":%q}`,
		80351110224678912+i, i, note)
}

// sendDispatch sends a dispatch through the simulator (so it is in the
// session's replay log) and returns it.
func sendDispatch(t *testing.T, sim *discordsim.Server, typ string, d []byte) simDispatched {
	t.Helper()
	seq, err := sim.Dispatch(0, typ, d)
	if err != nil {
		t.Fatalf("Dispatch %s: %v", typ, err)
	}
	return simDispatched{Seq: seq, D: d}
}

package shard

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shardpool/gateway/internal/discordsim"
)

// The driver and the session start budget against the simulator, which
// refills its budget after a short window and answers an IDENTIFY over it
// with op 9 (so a shard that ignored the budget would loop, not stop).

func simBudget(t *testing.T, sim *discordsim.Server, reserve int, m *Metrics) *SessionStarts {
	t.Helper()
	read := StartLimitReader(sim.APIURL(), discordsim.DefaultToken)
	initial, err := read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return NewSessionStarts(SessionStartsConfig{Fetch: read, Initial: initial, FetchedAt: time.Now(), Reserve: reserve, Metrics: m, Logger: log.NewNopLogger()})
}

func TestShardWaitsInSessionLimitWithoutAConnectionAndIdentifiesAfterTheReset(t *testing.T) {
	const window = 2 * time.Second
	sim := startSim(t, discordsim.Config{SessionStartTotal: 100, SessionStartRemaining: 3, SessionStartResetAfter: window, SessionLimitInvalidSession: true, IdentifyWindow: 50 * time.Millisecond})
	resetAt := time.Now().Add(window)
	m := NewMetrics(prometheus.NewRegistry())
	r := startShard(t, Config{
		GatewayURL: sim.GatewayURL(), Metrics: m, SessionStarts: simBudget(t, sim, 1, m),
		InvalidSessionDelay: func() time.Duration { return 10 * time.Millisecond },
	})
	// 3 left, reserve 1: the startup IDENTIFY and one after op 9.
	for i := 0; i < 2; i++ {
		if err := sim.WaitIdentifies(waitCtx(t), i+1); err != nil {
			t.Fatal(err)
		}
		waitShard(t, "ready", r.shard.Ready)
		if err := sim.InvalidSession(0, false); err != nil {
			t.Fatal(err)
		}
	}
	waitShard(t, "session_limit", func() bool { return r.shard.Status().State == StateSessionLimit })
	if time.Now().After(resetAt) {
		t.Skip("the machine is too slow for a 2 s window")
	}
	st := r.shard.Status()
	if !strings.Contains(st.LastError, "reset") {
		t.Errorf("last_error %q does not say it waits for the reset", st.LastError)
	}
	if s := sim.Stats(); s.SessionStartRemaining != 1 || s.LiveConnections != 0 || s.Violations != 0 {
		t.Fatalf("while waiting: %+v, want 1 start left, no connection, no violation", s)
	}
	if got := testutil.ToFloat64(m.SessionStarts); got != 1 {
		t.Fatalf("gateway_session_start_remaining %v, want 1", got)
	}

	waitShard(t, "ready after the reset", r.shard.Ready)
	ids := sim.Record().Identifies
	if last := ids[len(ids)-1]; len(ids) != 3 || last.At.Before(resetAt.Add(-50*time.Millisecond)) {
		t.Fatalf("IDENTIFYs %d, last at reset%+v; want 3, the last after the reset", len(ids), ids[len(ids)-1].At.Sub(resetAt))
	}
	if got, want := testutil.ToFloat64(m.SessionStarts), float64(sim.Stats().SessionStartRemaining); got != want {
		t.Fatalf("gateway_session_start_remaining %v, simulator %v", got, want)
	}
}

// Dials that fail reserve a start each and give it back: the count is
// Discord's, not the number of attempts.
func TestFailedDialsGiveTheirSessionStartsBack(t *testing.T) {
	sim := startSim(t, discordsim.Config{SessionStartTotal: 100})
	m := NewMetrics(prometheus.NewRegistry())
	budget := simBudget(t, sim, 1, m)
	r := startShard(t, Config{GatewayURL: "ws://127.0.0.1:1/gateway", Metrics: m, SessionStarts: budget})
	waitShard(t, "a few failed dials", func() bool {
		return testutil.ToFloat64(m.Reconnects.WithLabelValues("0", "dial")) >= 3
	})
	r.stop()
	if got := budget.Known().Remaining; got != 100 {
		t.Fatalf("count %d after failed dials, want 100", got)
	}
}

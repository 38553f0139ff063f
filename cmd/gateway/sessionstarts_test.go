package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shardpool/gateway/internal/discordsim"
	"github.com/shardpool/gateway/service/shard"
)

// The daily session start budget, end to end: the gateway never sends an
// IDENTIFY while session_start_limit.remaining is at SESSION_START_RESERVE
// or below, a shard that must wait says so in /status, and it identifies
// once Discord's reset_after has passed.

// budgetWarning is the one warning an instance logs when its shards start
// waiting for the reset.
const budgetWarning = `msg="session starts down to the reserve: IDENTIFYs wait for Discord's reset"`

// quickRenew makes the 1–5 s pause Discord asks for before a new IDENTIFY
// short, so an op 9 loop turns fast. The identify window gets a margin over
// the simulator's 200 ms: it stamps an IDENTIFY when its reader gets to it,
// which on a loaded machine can lag the write by tens of milliseconds, and
// a bucket refusal would hide what these tests count.
func quickRenew(c *Config) {
	c.InvalidSessionDelay = 50 * time.Millisecond
	c.IdentifyWindow = 300 * time.Millisecond
}

// simResetAt is when the simulator's session start window ends.
func simResetAt(t *testing.T, sim *discordsim.Server) time.Time {
	t.Helper()
	at := time.Now()
	bot, err := shard.FetchGatewayBot(context.Background(), sim.APIURL(), discordsim.DefaultToken)
	if err != nil {
		t.Fatal(err)
	}
	return at.Add(bot.StartLimit.ResetAfter.Duration())
}

// invalidateEachSession answers every new session of the shards with op 9
// d=false, the loop that burns a session start per turn, until stop.
func invalidateEachSession(sim *discordsim.Server, shards ...int) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		last := map[int]string{}
		for {
			for _, id := range shards {
				if sid := sim.CurrentSession(id); sid != "" && sid != last[id] && sim.InvalidSession(id, false) == nil {
					last[id] = sid
				}
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

func (e *testEnv) shardState(id int) shard.State {
	e.t.Helper()
	for _, s := range e.status().Shards {
		if s.ID == id {
			return s.State
		}
	}
	return ""
}

func readyIdentifies(sim *discordsim.Server) (ready, refused int) {
	for _, id := range sim.Record().Identifies {
		switch id.Outcome {
		case discordsim.IdentifyReady:
			ready++
		case discordsim.IdentifySessionLimit:
			refused++
		}
	}
	return ready, refused
}

func TestSessionStartsAnInvalidSessionLoopStopsAtTheReserveThenIdentifiesAfterTheReset(t *testing.T) {
	// Default reserve: 1% of 1000. 13 remaining: two shards identify at
	// startup, the loop gets one more, then the budget is at the reserve.
	const window = 5 * time.Second
	e := startEnv(t, envOptions{
		sim: discordsim.Config{Shards: 2, SessionStartTotal: 1000, SessionStartRemaining: 13,
			SessionStartResetAfter: window, SessionLimitInvalidSession: true},
		config: quickRenew,
	})
	resetAt := simResetAt(t, e.sim)
	e.waitShardsReady(2)
	stop := invalidateEachSession(e.sim, 0)
	defer stop()

	e.eventually("shard 0 waiting in session_limit", time.Until(resetAt)-time.Second, func() bool {
		return e.shardState(0) == shard.StateSessionLimit
	})
	if ready, refused := readyIdentifies(e.sim); ready != 3 || refused != 0 {
		t.Fatalf("IDENTIFYs: %d ready and %d over the limit, want 3 and 0: %+v", ready, refused, e.sim.Record().Identifies)
	}
	if st := e.sim.Stats(); st.SessionStartRemaining != 10 {
		t.Fatalf("simulator: %d session starts remaining, want the reserve, 10", st.SessionStartRemaining)
	}
	if code, _ := e.get("/health"); code != http.StatusOK {
		t.Fatalf("/health %d while a shard waits", code)
	}
	if e.shardState(1) != shard.StateReady {
		t.Fatalf("shard 1 is %s, want ready", e.shardState(1))
	}
	if got := e.metric("gateway_session_start_remaining", nil); got != 10 {
		t.Fatalf("gateway_session_start_remaining %v, want 10", got)
	}
	if got := e.metric("gateway_session_start_reserve", nil); got != 10 {
		t.Fatalf("gateway_session_start_reserve %v, want 10", got)
	}
	if n := strings.Count(e.logs.String(), budgetWarning); n != 1 {
		t.Fatalf("%d budget warnings, want 1:\n%s", n, e.logs.String())
	}
	if line := logLine(e.logs.String(), budgetWarning); !strings.Contains(line, "level=warn") || !strings.Contains(line, "reset_at=") {
		t.Fatalf("warning without level or reset time: %s", line)
	}
	stop()

	e.eventually("shard 0 ready after the reset", time.Until(resetAt)+10*time.Second, func() bool {
		return e.shardState(0) == shard.StateReady
	})
	ids := e.sim.Record().Identifies
	last := ids[len(ids)-1]
	if last.Outcome != discordsim.IdentifyReady || last.Shard != 0 {
		t.Fatalf("last IDENTIFY %+v", last)
	}
	if last.At.Before(resetAt.Add(-100*time.Millisecond)) || last.At.After(resetAt.Add(3*time.Second)) {
		t.Fatalf("identified at reset%+v, want just after the reset", last.At.Sub(resetAt))
	}
	want := float64(e.sim.Stats().SessionStartRemaining)
	if got := e.metric("gateway_session_start_remaining", nil); got != want {
		t.Fatalf("gateway_session_start_remaining %v after the reset, simulator says %v", got, want)
	}
	if n := strings.Count(e.logs.String(), budgetWarning); n != 1 {
		t.Fatalf("%d budget warnings, want 1", n)
	}
}

// logLine returns the first line holding s.
func logLine(logs, s string) string {
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

func TestSessionStartsAtStartupBelowTheReserveTheProcessStartsAndShardsWait(t *testing.T) {
	e := startEnv(t, envOptions{
		sim:    discordsim.Config{Shards: 2, SessionStartTotal: 1000, SessionStartRemaining: 3},
		noNATS: true,
	})
	e.eventually("both shards in session_limit", 10*time.Second, func() bool {
		return e.shardState(0) == shard.StateSessionLimit && e.shardState(1) == shard.StateSessionLimit
	})
	if n := len(e.sim.Record().Identifies); n != 0 {
		t.Fatalf("%d IDENTIFYs sent with 3 starts left and a reserve of 10", n)
	}
	if code, _ := e.get("/health"); code != http.StatusOK {
		t.Fatalf("/health %d", code)
	}
	if n := strings.Count(e.logs.String(), budgetWarning); n != 1 {
		t.Fatalf("%d budget warnings, want 1", n)
	}
}

// Two instances, one pool each, share one count in Consul: together they
// stop at the reserve.
func TestConsulSessionStartsTwoInstancesShareTheCountAndStopAtTheReserve(t *testing.T) {
	f := startFleet(t, fleetOptions{
		total: 2, perPool: 1,
		sim: discordsim.Config{SessionStartTotal: 1000, SessionStartRemaining: 9, SessionLimitInvalidSession: true},
		env: map[string]string{"SESSION_START_RESERVE": "5"},
	})
	envs := []*testEnv{f.newInstance(), f.newInstance()}
	for _, e := range envs {
		quickRenew(&e.m.Config)
		go func() { e.runErr <- e.m.Run(context.Background()) }()
		<-e.m.started
		e.base = "http://" + e.m.HTTPAddr()
	}
	owners := map[int]*testEnv{}
	for _, e := range envs {
		owners[e.waitOwner(30*time.Second)] = e
	}
	if len(owners) != 2 {
		t.Fatalf("pools owned: %v", keys(owners))
	}
	stop := invalidateEachSession(f.sim, 0, 1)
	defer stop()

	for id, e := range owners {
		e.eventually("shard waiting in session_limit", 30*time.Second, func() bool {
			return e.shardState(id) == shard.StateSessionLimit
		})
	}
	if ready, refused := readyIdentifies(f.sim); ready != 4 || refused != 0 {
		t.Fatalf("IDENTIFYs: %d ready and %d over the limit, want 4 (9 remaining, reserve 5) and 0", ready, refused)
	}
	if st := f.sim.Stats(); st.SessionStartRemaining != 5 {
		t.Fatalf("simulator: %d remaining, want 5", st.SessionStartRemaining)
	}
	pair, _, err := f.consul.Client().KV().Get(envs[0].m.Config.KVPrefix+"/session-starts", nil)
	if err != nil || pair == nil {
		t.Fatalf("no session start record in Consul: %v", err)
	}
	var rec struct {
		Remaining int `json:"remaining"`
	}
	if err := json.Unmarshal(pair.Value, &rec); err != nil || rec.Remaining != 5 {
		t.Fatalf("Consul record %s: %v, want remaining 5", pair.Value, err)
	}
	for _, e := range envs {
		if got := e.metric("gateway_session_start_remaining", nil); got != 5 {
			t.Errorf("%s: gateway_session_start_remaining %v, want 5", e.base, got)
		}
		if code, _ := e.get("/health"); code != http.StatusOK {
			t.Errorf("%s: /health %d", e.base, code)
		}
	}
}

func TestSessionStartReserveIsAutoOrAPositiveCount(t *testing.T) {
	for v, want := range map[string]int{"": 0, "auto": 0, "25": 25} {
		c, err := ParseConfig(nil, env(map[string]string{"DISCORD_TOKEN": "tok", "SESSION_START_RESERVE": v}), io.Discard)
		if err != nil || c.SessionStartReserve != want {
			t.Errorf("SESSION_START_RESERVE=%q: %d, %v; want %d", v, c.SessionStartReserve, err, want)
		}
	}
}

// A reserve of the whole budget would never let a shard identify: a
// configuration error, before any connection.
func TestSessionStartReserveOfTheWholeBudgetIsRefusedAtStartup(t *testing.T) {
	sim := discordsim.New(discordsim.Config{SessionStartTotal: 100})
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	m := NewMain()
	m.LogOutput = &lockedBuffer{}
	if err := m.ParseFlags(nil, env(map[string]string{"DISCORD_TOKEN": discordsim.DefaultToken, "DISCORD_API_URL": sim.APIURL(),
		"HTTP_PORT": "0", "SESSION_START_RESERVE": "100"})); err != nil {
		t.Fatal(err)
	}
	err := m.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "invalid SESSION_START_RESERVE") {
		t.Fatalf("Run = %v, want an invalid SESSION_START_RESERVE error", err)
	}
	if n := len(sim.Record().Identifies); n != 0 {
		t.Fatalf("%d IDENTIFYs sent", n)
	}
}

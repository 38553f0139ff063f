package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shardpool/gateway/discovery/consultest"
	"github.com/shardpool/gateway/internal/discordsim"
	"github.com/shardpool/gateway/internal/natstest"
	"github.com/shardpool/gateway/service"
	"github.com/shardpool/gateway/service/event"
)

// The resharding tests run real gateway processes against Consul,
// JetStream and the simulator serving both shard counts at once. The fleet
// is one pool of four shards, then two pools of four: one owner and two
// spares, which claim the next generation's pools.
const (
	reshardFrom    = 4
	reshardTo      = 8
	reshardPerPool = 4
	reshardGuilds  = 64
	reshardRate    = 1.0 // dispatches per second per guild: 64/s
	// reshardHandover bounds the hand-over: a guild that got no
	// interaction that long is handed over at the deadline.
	reshardHandover = 15 * time.Second
	reshardToken    = "reshard-token"
)

// reshardWorld is the fleet, its dependencies and the test's clock.
type reshardWorld struct {
	t     *testing.T
	f     *procFleet
	nc    *nats.Conn
	js    jetstream.JetStream
	start time.Time
	log   []string
}

func startReshardWorld(t *testing.T, instances int, env map[string]string) *reshardWorld {
	t.Helper()
	if testing.Short() {
		t.Skip("real processes: not in -short")
	}
	dir := t.TempDir()
	if d := os.Getenv("RESHARD_LOGS"); d != "" {
		dir = d // kept, for a look at a failure
	}
	f := &procFleet{t: t, bin: buildFleetBinary(t), dir: dir}
	f.consul = consultest.Start(t)
	f.sim = discordsim.New(discordsim.Config{
		Shards: reshardFrom, MaxConcurrency: 4, Guilds: reshardGuilds, EventRate: reshardRate,
		IdentifyWindow: fleetIdentifyWindow, IdentifyTolerance: fleetIdentifyTolerance,
		HeartbeatInterval: fleetHeartbeat, HeartbeatGrace: fleetHeartbeatGrace,
		SessionStartTotal: 1000, SessionTimeout: 2 * time.Minute, ConnLabel: f.label,
	})
	if err := f.sim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.sim.Close)
	f.ns = natstest.Run(t)
	f.env = map[string]string{
		"DISCORD_TOKEN": discordsim.DefaultToken, "DISCORD_API_URL": f.sim.APIURL(),
		"NATS_URL": f.ns.ClientURL(), "HTTP_HOST": "127.0.0.1", "LOG_LEVEL": "info", "DRAIN_TIMEOUT": "15s",
		"SHARDS_PER_POOL": strconv.Itoa(reshardPerPool), "DRAIN_TOKEN": reshardToken,
		"SERVICE_NAME": "reshard", "KV_PREFIX": "reshard",
		"CONSUL_SESSION_TTL": fleetSessionTTL.String(), "CONSUL_LOCK_DELAY": fleetLockDelay.String(),
		"CONSUL_CHECK_INTERVAL": fleetCheckInterval.String(), "RESHARD_ID_MARGIN": "10s",
		"RESHARD_HANDOVER_TIMEOUT": reshardHandover.String(),
	}
	for k, v := range env {
		f.env[k] = v
	}
	nc, err := nats.Connect(f.ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	w := &reshardWorld{t: t, f: f, nc: nc, js: js, start: time.Now()}
	for range instances {
		f.start()
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range f.procs {
				t.Logf("%s log tail:\n%s", p.name, p.logTail(40))
			}
		}
	})
	return w
}

func (w *reshardWorld) note(format string, args ...any) {
	line := fmt.Sprintf("t+%6.2fs ", time.Since(w.start).Seconds()) + fmt.Sprintf(format, args...)
	w.log = append(w.log, line)
	w.t.Log(line)
}

// eventually waits for cond, failing after timeout.
func (w *reshardWorld) eventually(what string, timeout time.Duration, cond func() bool) {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			w.t.Fatalf("not within %s: %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// generations is what the first live instance's /status says of the plans.
func (w *reshardWorld) generations() []service.GenerationStatus {
	for _, p := range w.f.live() {
		if st, ok := p.status(); ok && st.Discovery != nil && len(st.Discovery.Generations) > 0 {
			return st.Discovery.Generations
		}
	}
	return nil
}

// ready reports whether every shard of generation gen is READY, as the
// generations in /status say.
func (w *reshardWorld) ready(gen, total int) bool {
	for _, g := range w.generations() {
		if g.Generation == gen && g.TotalShards == total && g.ShardsReady == total && g.PoolsClaimed == g.Pools {
			return true
		}
	}
	return false
}

// inForce reports whether gen is the plan in force and no other is next.
func (w *reshardWorld) inForce(gen int) bool {
	g := w.generations()
	return len(g) == 1 && g[0].Generation == gen
}

// reshard sends POST /reshard (DELETE with abort) to the first instance.
func (w *reshardWorld) reshard(body string, abort bool) service.Plan {
	w.t.Helper()
	method := http.MethodPost
	if abort {
		method = http.MethodDelete
	}
	p := w.f.live()[0]
	req, _ := http.NewRequest(method, "http://127.0.0.1:"+strconv.Itoa(p.port)+"/reshard", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+reshardToken)
	resp, err := fleetHTTP.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	var plan service.Plan
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK || json.Unmarshal(buf.Bytes(), &plan) != nil {
		w.t.Fatalf("%s /reshard: %d %s", method, resp.StatusCode, buf.String())
	}
	return plan
}

// sessionsOf returns the simulator's sessions identified with total.
func (w *reshardWorld) sessionsOf(total int) map[string]discordsim.SessionInfo {
	out := map[string]discordsim.SessionInfo{}
	for _, s := range w.f.sim.Sessions() {
		if s.Total == total {
			out[s.ID] = s
		}
	}
	return out
}

// readyTimes returns the first and the last successful IDENTIFY with total.
func readyTimes(rec discordsim.Record, total int) (first, last time.Time, n int) {
	for _, id := range rec.Identifies {
		if id.Total != total || id.Outcome != discordsim.IdentifyReady {
			continue
		}
		if first.IsZero() || id.At.Before(first) {
			first = id.At
		}
		if id.At.After(last) {
			last = id.At
		}
		n++
	}
	return first, last, n
}

// quiesce stops the traffic and waits until the streams stop growing.
func (w *reshardWorld) quiesce() {
	w.f.sim.SetEventRate(0)
	e := &testEnv{t: w.t, sim: w.f.sim, nc: w.nc, js: w.js}
	prev, still := -1, 0
	w.eventually("the streams settle", 30*time.Second, func() bool {
		n := e.streamCount("EVENTS") + e.streamCount("COMMANDS")
		if n == prev {
			still++
		} else {
			still = 0
		}
		prev = n
		return still >= 15
	})
}

// keyVerdict is the exactly-once check over the simulator's guild
// dispatches: each one (all its copies, one per shard count that held the
// guild) must be stored exactly once, under the content id or the
// (shard, session, seq) id of one of its copies.
type keyVerdict struct {
	keys, stored, missing, duplicated, contentIDs int
	// Keyless dispatches of guilds handed over at the deadline, within a
	// second of it: stored twice or not at all (documented).
	atDeadline int
	problems   []string
}

func (w *reshardWorld) verdict(deadline time.Time) keyVerdict {
	w.t.Helper()
	e := &testEnv{t: w.t, sim: w.f.sim, nc: w.nc, js: w.js}
	stored := map[string]int{}
	for _, stream := range []string{"EVENTS", "COMMANDS"} {
		for _, m := range e.streamMsgs(stream) {
			stored[m.Header.Get(jetstream.MsgIDHeader)]++
		}
	}
	type copies struct {
		ids     map[string]bool
		written bool
		typ     string
		at      time.Time
	}
	byKey := map[uint64]*copies{}
	contentIDs := map[string]bool{}
	for _, d := range w.f.sim.Dispatches() {
		if d.Key == 0 || !publishedTypes[d.Type] {
			continue
		}
		c := byKey[d.Key]
		if c == nil {
			c = &copies{ids: map[string]bool{}, typ: d.Type, at: d.At}
			byKey[d.Key] = c
			if id, ok := event.ContentID(d.Type, d.Data); ok {
				c.ids[id] = true
				contentIDs[id] = true
			}
		}
		c.ids[event.ID(d.Shard, d.SessionID, d.Seq)] = true
		c.written = c.written || d.Written
	}
	var v keyVerdict
	for key, c := range byKey {
		if !c.written {
			continue
		}
		v.keys++
		n := 0
		for id := range c.ids {
			n += stored[id]
		}
		keyed := event.HasContentKey(c.typ)
		switch {
		case n == 1:
			v.stored++
		case !keyed && !deadline.IsZero() && c.at.Sub(deadline).Abs() < time.Second:
			v.atDeadline++
		case n == 0:
			v.missing++
			v.problems = append(v.problems, fmt.Sprintf("key %d %s at %s: not stored", key, c.typ, c.at.Format("15:04:05.000")))
			if v.missing < 3 {
				w.t.Log(debugPoints(w.f.sim.Dispatches(), key, deadline.Add(-reshardHandover)))
			}
		default:
			v.duplicated++
			v.problems = append(v.problems, fmt.Sprintf("key %d %s at %s: stored %d times", key, c.typ, c.at.Format("15:04:05.000"), n))
		}
	}
	for id := range stored {
		if contentIDs[id] {
			v.contentIDs++
		}
	}
	return v
}

// handoverAt reads the hand-over instant from the plan in force.
func (w *reshardWorld) handoverAt() time.Time {
	w.t.Helper()
	kv, _, err := w.f.consul.Client().KV().Get("reshard/plan", nil)
	var p struct {
		HandoverAt time.Time `json:"handover_at"`
	}
	if err != nil || kv == nil || json.Unmarshal(kv.Value, &p) != nil || p.HandoverAt.IsZero() {
		w.t.Fatalf("the plan in force has no hand-over instant: %v %v", kv, err)
	}
	return p.HandoverAt
}

// noRuleBroken fails on any identify bucket or session start violation the
// simulator recorded.
func (w *reshardWorld) noRuleBroken(rec discordsim.Record) {
	w.t.Helper()
	for _, v := range rec.Violations {
		if v.Kind == discordsim.ViolationIdentifyBucket || v.Kind == discordsim.ViolationSessionStartLimit {
			w.t.Errorf("simulator violation: %s shard %d: %s", v.Kind, v.Shard, v.Detail)
		}
	}
}

// metricSum sums a counter or gauge over the live instances' /metrics.
func (w *reshardWorld) metricSum(name string) float64 {
	sum := 0.0
	for _, p := range w.f.live() {
		_, b, err := p.get("/metrics")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, name+" ") {
				v, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, name)), 64)
				sum += v
			}
		}
	}
	return sum
}

// closedAt returns when each session of sids was closed by its client with
// code.
func closedAt(rec discordsim.Record, sids map[string]discordsim.SessionInfo, code int) map[string]time.Time {
	out := map[string]time.Time{}
	for _, c := range rec.ClientCloses {
		if _, ok := sids[c.SessionID]; ok && c.Code == code && !c.Echo {
			out[c.SessionID] = c.At
		}
	}
	return out
}

func TestReshardFourToEightUnderTrafficStoresEveryDispatchOnce(t *testing.T) {
	w := startReshardWorld(t, 3, nil)
	w.eventually("generation 1 READY", 60*time.Second, func() bool { return w.ready(1, reshardFrom) })
	w.note("generation 1 READY: %d shards", reshardFrom)
	time.Sleep(3 * time.Second) // steady traffic on the old generation

	written := time.Now()
	plan := w.reshard(fmt.Sprintf(`{"total_shards":%d}`, reshardTo), false)
	if len(plan.Generations) != 2 || plan.Generations[1].TotalShards != reshardTo || plan.Generations[1].State != service.GenerationNext {
		t.Fatalf("POST /reshard answered %+v", plan)
	}
	w.note("plan written: generation 2, %d shards", reshardTo)
	w.eventually("generation 2 in force", 90*time.Second, func() bool { return w.inForce(2) })
	cutOver := time.Now()
	w.note("cut-over seen in /status")
	old := w.sessionsOf(reshardFrom)
	w.eventually("the old sessions closed", 30*time.Second, func() bool {
		return len(closedAt(w.f.sim.Record(), old, 1000)) == reshardFrom
	})
	time.Sleep(3 * time.Second) // traffic on the new generation alone
	w.quiesce()

	rec := w.f.sim.Record()
	first, last, n := readyTimes(rec, reshardTo)
	closes := closedAt(rec, old, 1000)
	var lastClose time.Time
	for sid, at := range closes {
		if at.Before(last) {
			t.Errorf("old session %s closed at %s, before the last new shard was READY (%s)", sid, at.Format("15:04:05.000"), last.Format("15:04:05.000"))
		}
		if at.After(lastClose) {
			lastClose = at
		}
	}
	if n != reshardTo {
		t.Errorf("%d IDENTIFYs of the new generation succeeded, want %d", n, reshardTo)
	}
	for _, id := range rec.Identifies {
		if id.Total == reshardFrom && id.At.After(written) {
			t.Errorf("the old generation identified again at %s (shard %d): it must keep serving", id.At.Format("15:04:05.000"), id.Shard)
		}
	}
	w.noRuleBroken(rec)
	handoverAt := w.handoverAt()
	v := w.verdict(handoverAt.Add(reshardHandover))
	overlapEvents := 0
	newSessions := w.sessionsOf(reshardTo)
	for _, d := range w.f.sim.Dispatches() {
		if _, isNew := newSessions[d.SessionID]; d.Key != 0 && isNew && !d.At.After(lastClose) {
			overlapEvents++
		}
	}
	published := w.metricSum("gateway_reshard_content_id_events_total")
	w.note("timeline: plan written %s; first new READY +%.2fs; last new READY +%.2fs; hand-over instant +%.2fs; cut-over seen +%.2fs; old sessions closed by +%.2fs",
		written.Format("15:04:05.000"), first.Sub(written).Seconds(), last.Sub(written).Seconds(), handoverAt.Sub(written).Seconds(),
		cutOver.Sub(written).Seconds(), lastClose.Sub(written).Seconds())
	w.note("dispatches: %d guild dispatches written, %d stored once, %d missing, %d duplicated; %d keyless ones within a second of the hand-over deadline not stored exactly once",
		v.keys, v.stored, v.missing, v.duplicated, v.atDeadline)
	w.note("overlap: %d dispatch copies sent to the new generation before the old one closed; %.0f events published with a content id, %d stored with one: %.0f copies dropped by JetStream's duplicate window",
		overlapEvents, published, v.contentIDs, published-float64(v.contentIDs))
	// An instance the job still starts with the first plan's TOTAL_SHARDS
	// runs the resharded plan (as a spare here), with a warning, rather
	// than exiting on the mismatch.
	w.f.env["TOTAL_SHARDS"] = strconv.Itoa(reshardFrom)
	late := w.f.start()
	w.eventually("the late instance a spare of generation 2", 30*time.Second, func() bool {
		st, ok := late.status()
		return ok && st.Discovery != nil && st.Discovery.Generation == 2 && st.Discovery.Role == "spare"
	})
	if !strings.Contains(late.logTail(100), "the fleet was resharded") {
		t.Error("the late instance did not warn that its TOTAL_SHARDS is not the plan's")
	}
	if os.Getenv("RESHARD_TIMELINE") != "" {
		os.WriteFile(os.Getenv("RESHARD_TIMELINE"), []byte(strings.Join(w.log, "\n")+"\n"), 0o644)
	}
	sort.Strings(v.problems)
	if len(v.problems) > 0 {
		t.Fatalf("exactly once broken (%d problems), first: %s", len(v.problems), strings.Join(v.problems[:min(10, len(v.problems))], "; "))
	}
}

func TestReshardAbortedHalfwayLeavesTheOldGenerationUntouched(t *testing.T) {
	w := startReshardWorld(t, 3, nil)
	w.eventually("generation 1 READY", 60*time.Second, func() bool { return w.ready(1, reshardFrom) })
	old := w.sessionsOf(reshardFrom)
	time.Sleep(2 * time.Second)
	written := time.Now()
	w.reshard(fmt.Sprintf(`{"total_shards":%d}`, reshardTo), false)
	w.note("plan written: generation 2, %d shards", reshardTo)
	w.eventually("half of generation 2 READY", 60*time.Second, func() bool {
		for _, g := range w.generations() {
			if g.Generation == 2 && g.ShardsReady >= reshardTo/2 {
				return true
			}
		}
		return false
	})
	plan := w.reshard("", true)
	w.note("aborted with %d shards of generation 2 READY", len(w.sessionsOf(reshardTo)))
	if len(plan.Generations) != 1 || plan.Generations[0].Generation != 1 {
		t.Fatalf("DELETE /reshard answered %+v", plan)
	}
	w.eventually("the next generation's sessions closed", 30*time.Second, func() bool {
		next := w.sessionsOf(reshardTo)
		return len(next) > 0 && len(closedAt(w.f.sim.Record(), next, 1000)) == len(next)
	})
	w.note("the next generation's %d sessions closed with 1000", len(w.sessionsOf(reshardTo)))
	w.eventually("every instance back in generation 1", 30*time.Second, func() bool {
		for _, p := range w.f.live() {
			st, ok := p.status()
			if !ok || st.Discovery == nil || st.Discovery.Generation != 1 {
				return false
			}
		}
		return true
	})
	time.Sleep(2 * time.Second)
	w.quiesce()

	rec := w.f.sim.Record()
	for _, id := range rec.Identifies {
		if id.Total == reshardFrom && id.At.After(written) {
			t.Errorf("the old generation identified again at %s (shard %d)", id.At.Format("15:04:05.000"), id.Shard)
		}
	}
	for _, r := range rec.Resumes {
		if _, ok := old[r.SessionID]; ok && r.At.After(written) {
			t.Errorf("an old session was resumed at %s: it must never have stopped", r.At.Format("15:04:05.000"))
		}
	}
	for sid, s := range w.sessionsOf(reshardFrom) {
		if _, ok := old[sid]; !ok || !s.Live || s.Invalid {
			t.Errorf("old generation session %s (shard %d): known before %v, live %v, invalid %v", sid, s.Shard, ok, s.Live, s.Invalid)
		}
	}
	w.noRuleBroken(rec)
	v := w.verdict(time.Time{})
	w.note("dispatches: %d guild dispatches written, %d stored once, %d missing, %d duplicated", v.keys, v.stored, v.missing, v.duplicated)
	if len(v.problems) > 0 {
		sort.Strings(v.problems)
		t.Fatalf("exactly once broken (%d problems), first: %s", len(v.problems), strings.Join(v.problems[:min(10, len(v.problems))], "; "))
	}
}

func TestReshardAutoReactsToClose4011(t *testing.T) {
	w := startReshardWorld(t, 3, map[string]string{"RESHARD": "auto", "RESHARD_CHECK_INTERVAL": "1h"})
	w.eventually("generation 1 READY", 60*time.Second, func() bool { return w.ready(1, reshardFrom) })
	// The bot grew: a shard of four would now hold too many guilds, and
	// Discord recommends eight. Only a new IDENTIFY learns it, with 4011.
	w.f.sim.SetRecommendedShards(reshardTo)
	w.f.sim.SetMaxGuildsPerShard(reshardGuilds/reshardTo + 2)
	if err := w.f.sim.InvalidSession(0, false); err != nil {
		t.Fatal(err)
	}
	w.eventually("an IDENTIFY closed with 4011", 30*time.Second, func() bool {
		for _, id := range w.f.sim.Record().Identifies {
			if id.Outcome == discordsim.IdentifyShardingRequired {
				return true
			}
		}
		return false
	})
	w.note("shard 0 closed with 4011")
	w.eventually("generation 2 of 8 shards in force", 90*time.Second, func() bool {
		g := w.generations()
		return len(g) == 1 && g[0].Generation == 2 && g[0].TotalShards == reshardTo
	})
	w.note("RESHARD=auto resharded to %d shards", reshardTo)
	found := false
	for _, p := range w.f.procs {
		if strings.Contains(p.logTail(400), "close_4011=true") {
			found = true
		}
	}
	if !found {
		t.Error("no instance logged the resharding it started for the 4011")
	}
	w.noRuleBroken(w.f.sim.Record())
}

func TestReshardAutoFollowsTheRecommendationRoundedToMaxConcurrency(t *testing.T) {
	w := startReshardWorld(t, 3, map[string]string{"RESHARD": "auto", "RESHARD_CHECK_INTERVAL": "1s"})
	w.eventually("generation 1 READY", 60*time.Second, func() bool { return w.ready(1, reshardFrom) })
	// /gateway/bot now recommends 6; max_concurrency is 4, so the new
	// generation has 8 shards and its buckets fill evenly.
	w.f.sim.SetRecommendedShards(6)
	w.eventually("generation 2 of 8 shards in force", 90*time.Second, func() bool {
		g := w.generations()
		return len(g) == 1 && g[0].Generation == 2 && g[0].TotalShards == reshardTo
	})
	w.note("RESHARD=auto followed the recommendation of 6: %d shards", reshardTo)
	w.noRuleBroken(w.f.sim.Record())
}

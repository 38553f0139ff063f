package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shardpool/gateway/discovery/consultest"
	"github.com/shardpool/gateway/internal/discordsim"
	"github.com/shardpool/gateway/internal/natstest"
	"github.com/shardpool/gateway/service"
)

// The fleet chaos run: gateway processes (the real binary) coordinated by a
// real Consul agent, publishing to an embedded JetStream, against the
// simulator, with steady traffic on two pools and a spare. For a bounded time
// (CHAOS_DURATION, default 30s; `make chaos-fleet` runs 5m) faults from a
// seeded RNG (CHAOS_SEED, printed) hit the processes and what they depend
// on: SIGKILL of an owner (and a replacement started), SIGSTOP/SIGCONT, a
// partition between an instance and Consul, a rolling deploy (POST /drain,
// SIGTERM, a replacement), a Consul agent restart, a NATS restart.
// Throughout and at the end: no shard live on two connections at once, no
// Discord rule broken, every dispatch stored exactly once (or lost only with
// a session a fault took away, and then only its tail), a drained pool's
// successor RESUMEs, a killed owner's successor RESUMEs every session that
// had a checkpoint (so a kill loses nothing), no goroutine or heap growth in
// the instances.
const (
	fleetShards  = 4 // two pools of two
	fleetPerPool = 2
	fleetSize    = 3 // processes kept running: two owners and a spare
	fleetRate    = 20.0
	// The simulator closes a connection whose heartbeat is missing for
	// interval + grace, as Discord closes a zombie: that, not the frozen
	// process, ends a SIGSTOP-ed owner's connections. It must happen
	// before Consul can give the pool to another instance: the /health
	// check turns critical after 3 failed probes a second apart (2 s at
	// the soonest), then the lock-delay runs, 2 + 6 = 8 s after the stop
	// at the soonest, against 2 + 1.5 + 2 (the close handshake) = 5.5 s at
	// the latest. With Discord's 41.25 s interval the same arithmetic needs
	// a lock-delay near 45 s.
	fleetHeartbeat      = 2 * time.Second
	fleetHeartbeatGrace = 1500 * time.Millisecond
	fleetSessionTTL     = 10 * time.Second // Consul's minimum
	fleetLockDelay      = 6 * time.Second  // at least TTL/2, as the config requires
	fleetCheckInterval  = time.Second
	// Discord's identify window (the binary's, not settable) and the
	// allowance for the simulator stamping an IDENTIFY when its reader
	// gets to it.
	fleetIdentifyWindow    = 5 * time.Second
	fleetIdentifyTolerance = 250 * time.Millisecond
)

func TestFleetChaosKeepsOneOwnerPerShardAndEveryEventOnce(t *testing.T) {
	dur, seed := fleetChaosSettings(t)
	r := startFleetRun(t, seed)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("fleet chaos: faults (replay with CHAOS_SEED=%d CHAOS_DURATION=%v make chaos-fleet):\n%s", seed, dur, strings.Join(r.log, "\n"))
			for _, p := range r.f.procs {
				t.Logf("%s log (last 60 lines):\n%s", p.name, p.logTail(60))
			}
			t.Logf("logs of every instance: %s; timeline: %s", r.f.dir, r.writeTimeline(r.f.sim.Record()))
		}
	})
	r.quiesce()
	tl := startStreamTally(t, r.tallyEnv())
	r.f.sim.SetEventRate(fleetRate)

	// A long run warms up first, so that the baseline is taken once every
	// path has run (lazily built state exists); a short one has no time.
	warm := time.Duration(0)
	if dur >= 2*time.Minute {
		warm = dur / 5
		r.run(warm)
		r.quiesce()
	}
	base := r.measure()
	r.f.sim.SetEventRate(fleetRate)
	r.run(dur - warm)
	r.quiesce()
	r.settle()

	end := r.measure()
	r.checkUsage(base, end)
	rec := r.f.sim.Record()
	r.checkRecord(rec) // overlaps and violations not seen yet
	stored, streamProblems := tl.complete(t, r.tallyEnv())
	lc, excused := r.checkLedger(rec, stored)
	lc.problems = append(streamProblems, lc.problems...)
	drains := r.checkDrains(rec)
	kills := r.checkKills(rec)
	r.report(lc, excused, drains, rec, base, end, dur, seed)
	r.reportKills(kills)
	if len(lc.problems) > 0 {
		t.Errorf("stream vs simulator ledger: %d problems:\n%s", len(lc.problems), strings.Join(lastN(lc.problems, 40), "\n"))
	}
	if len(r.problems) > 0 {
		t.Errorf("%d problems:\n%s", len(r.problems), strings.Join(lastN(r.problems, 40), "\n"))
	}
	if r.rounds > 0 {
		for _, f := range r.faults {
			if r.applied[f.name] == 0 {
				t.Errorf("fault %s was never applied in %v", f.name, dur)
			}
		}
	}
}

func fleetChaosSettings(t *testing.T) (time.Duration, uint64) {
	return chaosRunSettings(t, "fleet chaos", 30*time.Second, 10*time.Second, "make chaos-fleet")
}

// fleetRun drives the faults; it runs on the test goroutine, and work that
// takes long (a drain, a Consul restart) runs on goroutines that hand
// their follow-up back through async.
type fleetRun struct {
	t      *testing.T
	f      *procFleet
	rng    *rand.Rand
	start  time.Time
	faults []fleetFault
	nc     *nats.Conn
	js     jetstream.JetStream

	queue    []fleetFault // the current round
	rounds   int          // rounds completed
	retries  int
	current  string
	applied  map[string]int
	log      []string
	events   []*faultEvent
	undo     []chaosUndo
	async    chan func()
	inflight sync.WaitGroup // drains and Consul restarts under way
	busy     map[string]bool
	natsDown bool
	drains   []*drainEvent
	kills    []*killEvent

	problems          []string
	reported          map[string]bool // overlaps and violations already judged
	excusedViolations int
	probe             *stallProbe
	lastCheck         time.Time
	lastLog           time.Time
}

// faultEvent is a fault as it hit the fleet, to explain what followed.
type faultEvent struct {
	kind   string
	target string // the process, "" for the whole fleet
	at     time.Time
	until  time.Time // when undone (SIGCONT, healed, restarted); zero while under way
	shards []int     // the shards the target ran when hit
}

// ended is until, or now while the fault lasts.
func (ev *faultEvent) ended() time.Time {
	if ev.until.IsZero() {
		return time.Now()
	}
	return ev.until
}

func startFleetRun(t *testing.T, seed uint64) *fleetRun {
	t.Helper()
	bin := buildFleetBinary(t)
	// The logs and the timeline stay when the test fails.
	dir, err := os.MkdirTemp("", "fleet-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			os.RemoveAll(dir)
		}
	})
	f := &procFleet{t: t, bin: bin, dir: dir}
	f.consul = consultest.Start(t)
	f.sim = discordsim.New(discordsim.Config{
		Shards: fleetShards, MaxConcurrency: 2,
		IdentifyWindow: fleetIdentifyWindow, IdentifyTolerance: fleetIdentifyTolerance,
		HeartbeatInterval: fleetHeartbeat, HeartbeatGrace: fleetHeartbeatGrace, CloseOnMissedHeartbeat: true,
		GuildsPerShard: 2, MembersPerGuild: 5, SessionStartTotal: 1 << 20,
		SessionTimeout: 2 * time.Minute,
		ConnLabel:      f.label,
	})
	if err := f.sim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.sim.Close)
	f.ns = natstest.Run(t)
	f.env = map[string]string{
		"DISCORD_TOKEN": discordsim.DefaultToken, "DISCORD_API_URL": f.sim.APIURL(),
		"NATS_URL": f.ns.ClientURL(), "STREAM_STORAGE": "file",
		"HTTP_HOST": "127.0.0.1", "LOG_LEVEL": "info", "DRAIN_TIMEOUT": "15s",
		"TOTAL_SHARDS": strconv.Itoa(fleetShards), "SHARDS_PER_POOL": strconv.Itoa(fleetPerPool),
		"SERVICE_NAME": "fleet-chaos", "KV_PREFIX": "fleet-chaos",
		"CONSUL_SESSION_TTL": fleetSessionTTL.String(), "CONSUL_LOCK_DELAY": fleetLockDelay.String(),
		"CONSUL_CHECK_INTERVAL": fleetCheckInterval.String(),
	}
	nc, err := nats.Connect(f.ns.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	r := &fleetRun{
		t: t, f: f, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), start: time.Now(),
		faults: fleetMenu(t), nc: nc, js: js, applied: map[string]int{}, async: make(chan func(), 16),
		busy: map[string]bool{}, reported: map[string]bool{}, probe: startStallProbe(t),
	}
	for range fleetSize {
		f.start() // together: the start-up identifies share the buckets
	}
	return r
}

// tallyEnv is the little of a testEnv the stream tally uses.
func (r *fleetRun) tallyEnv() *testEnv {
	return &testEnv{t: r.t, sim: r.f.sim, nc: r.nc, js: r.js}
}

func (r *fleetRun) since(at time.Time) string {
	return fmt.Sprintf("t+%.3fs", at.Sub(r.start).Seconds())
}

// note counts the fault being applied, logs it and returns its event.
func (r *fleetRun) note(target *gwProc, detail string) *faultEvent {
	ev := &faultEvent{kind: r.current, at: time.Now()}
	where := "fleet"
	if target != nil {
		ev.target, where = target.name, target.name
		if st, ok := target.status(); ok {
			for _, sh := range st.Shards {
				ev.shards = append(ev.shards, sh.ID)
			}
		}
	}
	r.applied[r.current]++
	r.events = append(r.events, ev)
	r.logf("%-15s %-5s %s", r.current, where, detail)
	return ev
}

func (r *fleetRun) logf(format string, args ...any) {
	line := r.since(time.Now()) + " " + fmt.Sprintf(format, args...)
	r.log = append(r.log, line)
	if testing.Verbose() {
		r.t.Log("fleet chaos: " + line)
	}
}

func (r *fleetRun) later(d time.Duration, do func()) {
	r.undo = append(r.undo, chaosUndo{time.Now().Add(d), do})
}

// run injects faults for d, one every 2-5 s (a fault that cannot be
// applied yet is tried again every half second), checking the invariants
// as it goes, then undoes what is pending.
func (r *fleetRun) run(d time.Duration) {
	end := time.Now().Add(d)
	next := time.Now().Add(time.Second)
	for time.Now().Before(end) {
		r.tick(false)
		if !time.Now().Before(next) {
			next = time.Now().Add(500 * time.Millisecond)
			if r.inject() {
				next = time.Now().Add(time.Duration(2000+r.rng.IntN(3000)) * time.Millisecond)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.tick(true)
}

// tick runs what is due (or everything pending, at the end of a run),
// the follow-ups of background work, and the invariant checks.
func (r *fleetRun) tick(all bool) {
	for {
		now := time.Now()
		var due []chaosUndo
		keep := r.undo[:0]
		for _, u := range r.undo {
			if all || !u.at.After(now) {
				due = append(due, u)
			} else {
				keep = append(keep, u)
			}
		}
		r.undo = keep
		for _, u := range due {
			u.do()
		}
		select {
		case do := <-r.async:
			do()
			continue
		default:
		}
		if !all || len(r.undo) == 0 {
			break
		}
	}
	if time.Since(r.lastCheck) >= time.Second {
		r.lastCheck = time.Now()
		r.checkRecord(r.f.sim.Record())
		r.progress()
	}
}

func (r *fleetRun) progress() {
	if time.Since(r.lastLog) < 30*time.Second {
		return
	}
	if !r.lastLog.IsZero() {
		st := r.f.sim.Stats()
		r.t.Logf("fleet chaos: %s: %d faults, %d processes live, %d dispatches generated, %d connections, %d identifies, %d resumes, %d violations",
			r.since(time.Now()), len(r.events), len(r.f.live()), st.Dispatches, st.Connections, st.Identifies, st.Resumes, st.Violations)
	}
	r.lastLog = time.Now()
}

// inject applies the next fault of the round and reports whether it did;
// one that cannot be applied for 30 tries is given up.
func (r *fleetRun) inject() bool {
	if len(r.queue) == 0 {
		if len(r.applied) > 0 {
			r.rounds++
		}
		for _, f := range r.faults {
			for range f.weight {
				r.queue = append(r.queue, f)
			}
		}
		r.rng.Shuffle(len(r.queue), func(i, j int) { r.queue[i], r.queue[j] = r.queue[j], r.queue[i] })
	}
	f := r.queue[0]
	r.current = f.name
	applied := f.apply(r)
	if applied || r.retries >= 30 {
		if !applied {
			r.logf("%-15s gave up: the fleet was never calm enough", f.name)
		}
		r.queue, r.retries = r.queue[1:], 0
		return applied
	}
	r.retries++
	return false
}

// fleetFault is one kind of fault. apply returns false when it cannot be
// applied now (no owner to hit, the same fault still under way); it is
// then retried at the next step.
type fleetFault struct {
	name   string
	weight int // occurrences per round
	apply  func(r *fleetRun) bool
}

var fleetFaults = []fleetFault{
	{"kill", 2, (*fleetRun).kill}, // twice a round: a kill must cost nothing now (checkKills)
	{"stop", 1, (*fleetRun).stop},
	{"partition", 1, (*fleetRun).partition},
	{"drain", 1, (*fleetRun).drain},
	{"consul_restart", 1, (*fleetRun).consulRestart},
	{"nats_restart", 1, (*fleetRun).natsRestart},
}

// fleetMenu is fleetFaults, or the subset CHAOS_FAULTS names.
func fleetMenu(t *testing.T) []fleetFault {
	t.Helper()
	v := os.Getenv("CHAOS_FAULTS")
	if v == "" {
		return fleetFaults
	}
	var out []fleetFault
	for name := range strings.SplitSeq(v, ",") {
		i := slices.IndexFunc(fleetFaults, func(f fleetFault) bool { return f.name == strings.TrimSpace(name) })
		if i < 0 {
			t.Fatalf("CHAOS_FAULTS: unknown fault %q", name)
		}
		out = append(out, fleetFaults[i])
	}
	t.Logf("fleet chaos: faults limited to %s", v)
	return out
}

// pick returns a random live process, running (not stopped) and not on
// its way out (draining), an owner when owner is set; nil if none.
func (r *fleetRun) pick(owner bool) *gwProc {
	var owners, others []*gwProc
	for _, p := range r.f.live() {
		if p.isStopped() || p.isLeaving() {
			continue
		}
		if p.role() == "owner" {
			owners = append(owners, p)
		} else {
			others = append(others, p)
		}
	}
	if owner {
		if len(owners) == 0 {
			return nil
		}
		return owners[r.rng.IntN(len(owners))]
	}
	all := append(owners, others...)
	if len(all) == 0 {
		return nil
	}
	return all[r.rng.IntN(len(all))]
}

// kill SIGKILLs an owner; the orchestrator starts a replacement 0.5-2 s
// later. The sessions with a checkpoint in Consul at that moment must be
// RESUMEd by the successor (checkKills).
func (r *fleetRun) kill() bool {
	p := r.pick(true)
	if p == nil {
		return false
	}
	ev := r.note(p, fmt.Sprintf("SIGKILL (pid %d)", p.pid))
	sessions, bare := r.checkpointed(p.name, ev.shards)
	r.kills = append(r.kills, &killEvent{ev: ev, proc: p.name, sessions: sessions, bare: bare})
	p.signal(syscall.SIGKILL)
	ev.until = time.Now()
	r.later(time.Duration(500+r.rng.IntN(1500))*time.Millisecond, r.replace)
	return true
}

// replace starts a process if fewer than fleetSize run or are on their way
// out.
func (r *fleetRun) replace() {
	if n := len(r.f.live()); n < fleetSize {
		p := r.f.start()
		r.logf("%-15s %-5s started (pid %d)", "replacement", p.name, p.pid)
	}
}

// stop SIGSTOPs a process (an owner three times in four) for 0.3-1.5 s
// (nothing should notice), 3.5-7 s (the simulator closes its connections as
// zombies) or 10-20 s (Consul gives its pool away).
func (r *fleetRun) stop() bool {
	if r.busy["stop"] {
		return false
	}
	p := r.pick(r.rng.IntN(4) > 0)
	if p == nil {
		return false
	}
	var d time.Duration
	switch r.rng.IntN(3) {
	case 0:
		d = time.Duration(300+r.rng.IntN(1200)) * time.Millisecond
	case 1:
		d = time.Duration(3500+r.rng.IntN(3500)) * time.Millisecond
	default:
		d = time.Duration(10000+r.rng.IntN(10000)) * time.Millisecond
	}
	ev := r.note(p, fmt.Sprintf("SIGSTOP for %v (%s)", d, p.role()))
	p.signal(syscall.SIGSTOP)
	r.busy["stop"] = true
	r.later(d, func() {
		p.signal(syscall.SIGCONT)
		ev.until = time.Now()
		r.busy["stop"] = false
		r.logf("%-15s %-5s SIGCONT", "stop", p.name)
	})
	return true
}

// partition cuts an owner from Consul for 1-3 s (renewals retry, nothing
// else) or 6-15 s (it must fence: stop its shards before another instance
// can take the pool).
func (r *fleetRun) partition() bool {
	if r.busy["partition"] {
		return false
	}
	p := r.pick(true)
	if p == nil {
		return false
	}
	d := time.Duration(1000+r.rng.IntN(2000)) * time.Millisecond
	if r.rng.IntN(2) == 0 {
		d = time.Duration(6000+r.rng.IntN(9000)) * time.Millisecond
	}
	ev := r.note(p, fmt.Sprintf("cut from Consul for %v", d))
	p.proxy.Partition()
	r.busy["partition"] = true
	r.later(d, func() {
		p.proxy.Heal()
		ev.until = time.Now()
		r.busy["partition"] = false
		r.logf("%-15s %-5s healed", "partition", p.name)
	})
	return true
}

// drainEvent is a rolling deploy of one owner: its pool must be taken over
// by RESUME.
type drainEvent struct {
	ev       *faultEvent
	proc     string
	pool     int
	sessions map[int]string // shard → the session drained
	mu       sync.Mutex
	result   string // what POST /drain and the exit said
}

// drain is a rolling deploy step, only while nothing else is under way (so
// that the successor's RESUME is the drain's alone): POST /drain to an
// owner, SIGTERM once it answers, a replacement once it has exited.
func (r *fleetRun) drain() bool {
	sh := r.f.shape()
	if r.busy["stop"] || r.busy["partition"] || r.busy["consul"] || r.busy["drain"] || r.natsDown || len(sh.owners) < 2 || len(sh.spares) == 0 {
		return false
	}
	p := r.pick(true)
	if p == nil {
		return false
	}
	st, ok := p.status()
	if !ok {
		return false
	}
	p.expectExit()
	d := &drainEvent{proc: p.name, pool: st.PoolID, sessions: map[int]string{}}
	for _, s := range st.Shards {
		d.sessions[s.ID] = r.f.sim.CurrentSession(s.ID)
	}
	d.ev = r.note(p, fmt.Sprintf("POST /drain (pool %d)", st.PoolID))
	r.drains = append(r.drains, d)
	r.busy["drain"] = true
	r.inflight.Add(1)
	go func() {
		defer r.inflight.Done()
		result := drainAndExit(p)
		d.mu.Lock()
		d.result = result
		d.mu.Unlock()
		r.async <- func() {
			d.ev.until = time.Now()
			r.busy["drain"] = false
			r.logf("%-15s %-5s %s", "drain", p.name, result)
			if !strings.HasPrefix(result, "ok") {
				r.problems = append(r.problems, fmt.Sprintf("%s drain of %s: %s", r.since(d.ev.at), p.name, result))
			}
			r.replace()
		}
	}()
	return true
}

// drainAndExit drains p, then stops it with SIGTERM as an orchestrator
// would, and says how that went: "ok ..." or the problem.
func drainAndExit(p *gwProc) string {
	code, b, err := p.do("POST", "/drain", &http.Client{Timeout: 30 * time.Second})
	if err != nil || code != http.StatusOK {
		return fmt.Sprintf("POST /drain: %d %v %.200s", code, err, b)
	}
	var res service.DrainResult
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Sprintf("POST /drain body %.200s: %v", b, err)
	}
	handoffs := 0
	for _, s := range res.Shards {
		if s.Handoff != nil {
			handoffs++
		}
	}
	p.signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.signal(syscall.SIGKILL)
		return "still running 30 s after SIGTERM"
	}
	if p.exitErr != nil {
		return fmt.Sprintf("exit after SIGTERM: %v", p.exitErr)
	}
	if !res.Flushed || handoffs != len(res.Shards) {
		return fmt.Sprintf("drain result: flushed %v, %d hand-offs for %d shards", res.Flushed, handoffs, len(res.Shards))
	}
	return fmt.Sprintf("ok: %d hand-offs, exit 0", handoffs)
}

// consulRestart restarts the Consul agent (a dev agent: it comes back
// empty, with no sessions, locks or records).
func (r *fleetRun) consulRestart() bool {
	if r.busy["consul"] {
		return false
	}
	ev := r.note(nil, "restart (state lost)")
	r.busy["consul"] = true
	r.inflight.Add(1)
	go func() {
		defer r.inflight.Done()
		err := r.f.consul.Restart()
		r.async <- func() {
			ev.until = time.Now()
			r.busy["consul"] = false
			if err != nil {
				r.t.Fatalf("consul restart: %v", err)
			}
			r.logf("%-15s %-5s up again after %v", "consul_restart", "fleet", ev.until.Sub(ev.at).Round(time.Millisecond))
		}
	}()
	return true
}

// natsRestart stops the NATS server and starts it again 0.5-3 s later on
// the same port and store.
func (r *fleetRun) natsRestart() bool {
	if r.natsDown {
		return false
	}
	down := time.Duration(500+r.rng.IntN(2500)) * time.Millisecond
	ev := r.note(nil, fmt.Sprintf("down for %v", down))
	r.f.ns.Shutdown()
	r.natsDown = true
	r.later(down, func() {
		r.f.ns.Start()
		r.natsDown = false
		ev.until = time.Now()
	})
	return true
}

// quiesce ends every fault, waits for background work, brings the fleet
// back to its size and waits until both pools run, every shard READY on a
// live session, with a spare.
func (r *fleetRun) quiesce() {
	r.t.Helper()
	r.tick(true)
	waited := make(chan struct{})
	go func() { r.inflight.Wait(); close(waited) }()
	for done := false; !done; {
		select {
		case <-waited:
			done = true
		case <-time.After(50 * time.Millisecond):
		}
		r.tick(true)
	}
	r.tick(true)
	r.replace()
	r.replace()
	deadline := time.Now().Add(120 * time.Second)
	for {
		r.tick(false)
		if r.settled() {
			return
		}
		if time.Now().After(deadline) {
			sh := r.f.shape()
			r.t.Fatalf("the fleet did not settle within 120s: owners %v, %d spares, shards %v", keysOf(sh.owners), len(sh.spares), keysOf(sh.byShard))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// settled: two owners, a spare, every shard ready on the instance whose
// connection carries its live session.
func (r *fleetRun) settled() bool {
	sh := r.f.shape()
	if len(sh.owners) != fleetShards/fleetPerPool || len(sh.spares) == 0 || len(sh.byShard) != fleetShards {
		return false
	}
	infos := map[string]discordsim.SessionInfo{}
	for _, si := range r.f.sim.Sessions() {
		infos[si.ID] = si
	}
	for shard := range fleetShards {
		si, ok := infos[r.f.sim.CurrentSession(shard)]
		if !ok || !si.Live || si.Invalid {
			return false
		}
	}
	return true
}

// settle stops the traffic and waits until every live session's last
// dispatch is acked and nothing is buffered.
func (r *fleetRun) settle() {
	r.t.Helper()
	r.f.sim.SetEventRate(0)
	deadline := time.Now().Add(60 * time.Second)
	for {
		r.tick(false)
		sh := r.f.shape()
		infos := map[string]discordsim.SessionInfo{}
		for _, si := range r.f.sim.Sessions() {
			infos[si.ID] = si
		}
		done := sh.buffer == 0
		for shard := range fleetShards {
			if si := infos[r.f.sim.CurrentSession(shard)]; sh.acked[shard] < si.Seq {
				done = false
			}
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("events not all acked within 60s: acked %v, buffered %d", sh.acked, sh.buffer)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// measure takes every live instance's resource usage.
func (r *fleetRun) measure() map[string]procUsage {
	r.t.Helper()
	out := map[string]procUsage{}
	for _, p := range r.f.live() {
		u, err := p.usage()
		if err != nil {
			r.t.Fatal(err)
		}
		out[p.name] = u
		r.t.Logf("fleet chaos: %s at %s: %s", p.name, r.since(time.Now()), u)
	}
	return out
}

func keysOf[V any](m map[int]V) []int {
	return slices.Sorted(func(yield func(int) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	})
}

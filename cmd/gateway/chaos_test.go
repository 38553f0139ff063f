package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/shardpool/gateway/internal/discordsim"
	"github.com/shardpool/gateway/service"
	"github.com/shardpool/gateway/service/event"
	"github.com/shardpool/gateway/service/shard"
)

// The chaos run: the whole program against the simulator and an embedded
// JetStream (file storage), a steady event stream on every shard, and for a
// bounded time (CHAOS_DURATION, default 25s; `make chaos` runs 10m) random
// faults from a seeded RNG (CHAOS_SEED, logged): dropped sockets, every
// resumable and session-ending close code, op 7, op 9 true/false, withheld
// heartbeat ACKs (zombies), delayed frames, NATS restarts, and dispatches
// the gateway must not publish. One extra shard gets a fatal close code and
// must stay stopped. Then the invariants: exactly once in JetStream, no
// rate-limit or heartbeat violation, no goroutine or heap growth, every
// other shard READY.
const (
	chaosShards     = 4 // shards 0..3 take the random faults
	chaosFatalShard = 4 // one fatal close code, then it must stay stopped
	chaosEventRate  = 50.0
	// chaosHeartbeat is short enough to catch zombies within the run and
	// long enough that a connection living a minute stays under Discord's
	// 120 payloads per 60 s (the gateway's own limiter would otherwise hold
	// back a heartbeat past its interval: 300 ms would be 200 beats a
	// minute).
	chaosHeartbeat = 750 * time.Millisecond
	// chaosHeartbeatGrace replaces the simulator's default lateness
	// allowance (10% + 50 ms, 125 ms here): on a loaded 2-core CI machine
	// under the race detector, the scheduling delays of the gateway's timer
	// and of the simulator's reader exceed that now and then, which says
	// nothing about the gateway. A beat skipped, a stalled or stopped heart
	// still shows (a gap of two intervals is 1.5 s, over 1.05 s).
	chaosHeartbeatGrace = 300 * time.Millisecond
	// chaosIdentifyTolerance is the same for the identify window (1 s; the
	// gateway waits 1.02 s): the simulator times an IDENTIFY when its reader
	// gets to it.
	chaosIdentifyTolerance = 250 * time.Millisecond
)

var (
	chaosStreams = []string{"EVENTS", "COMMANDS"}
	// chaosFatalCodes stop a shard by design; the run sends one of them,
	// chosen by the seed, to the dedicated shard.
	chaosFatalCodes = []int{4004, 4010, 4011, 4012, 4013, 4014}
)

func TestChaosRunKeepsEveryInvariant(t *testing.T) {
	dur, seed := chaosSettings(t)
	warm := min(max(5*time.Second, dur/5), dur/2)
	// Heap attribution needs a finer sampling than the default 512 KiB.
	prevRate := runtime.MemProfileRate
	runtime.MemProfileRate = 4096
	t.Cleanup(func() { runtime.MemProfileRate = prevRate })

	faults := chaosMenu(t)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	fatalCode := chaosFatalCodes[rng.IntN(len(chaosFatalCodes))]
	start := time.Now()
	e := startEnv(t, envOptions{
		storage: "file", // a NATS restart must not lose what was stored
		sim: discordsim.Config{
			Shards:            chaosShards + 1,
			MaxConcurrency:    2,
			IdentifyWindow:    time.Second,
			IdentifyTolerance: chaosIdentifyTolerance,
			HeartbeatInterval: chaosHeartbeat,
			HeartbeatGrace:    chaosHeartbeatGrace,
			EventRate:         chaosEventRate,
			GuildsPerShard:    2,
			MembersPerGuild:   5,
			SessionStartTotal: 1 << 20,
			// A session the gateway has not resumed within a minute is
			// gone, and the run reports it.
			SessionTimeout: time.Minute,
		},
		config: func(c *Config) { c.LogLevel = "info" },
	})
	e.waitShardsReady(chaosShards + 1)
	tl := startStreamTally(t, e)
	probe := startStallProbe(t)
	r := &chaosRun{t: t, e: e, rng: rng, start: start, faults: faults, applied: map[string]int{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("chaos: last faults (replay with CHAOS_SEED=%d CHAOS_DURATION=%v):\n%s", seed, dur, strings.Join(lastN(r.log, 80), "\n"))
		}
	})

	// Warm-up: the fatal close, then chaos, so that every path has run once
	// (lazily built state exists) before the baseline is taken in a
	// quiet, settled state; the end is measured in the same state.
	r.fatal(chaosFatalShard, fatalCode)
	r.run(warm)
	r.quiesce()
	base := r.measure()
	t.Logf("chaos: baseline after %v of warm-up: %s", warm, base)
	e.sim.SetEventRate(chaosEventRate)
	r.run(dur - warm)
	r.quiesce()

	// 4. The process is alive and every shard but the fatal one is READY.
	r.checkAlive()
	r.checkShards(fatalCode)
	// 3. No goroutine or heap growth.
	end := r.checkUsage(base)
	// 2. No rate-limit or heartbeat violation (nor any other).
	rec := e.sim.Record()
	r.checkViolations(rec.Violations, probe)
	// 1. Exactly once in JetStream.
	stored, streamProblems := tl.complete(t, e)
	lc := checkLedger(e.sim.Dispatches(), rec, stored, r.start)
	lc.problems = append(streamProblems, lc.problems...)

	r.report(lc, rec, base, end, warm, dur, seed, fatalCode)
	t.Logf("chaos: %s", probe)
	if len(lc.problems) > 0 {
		t.Errorf("stream vs simulator ledger: %d problems:\n%s", len(lc.problems), strings.Join(lc.problems, "\n"))
	}
	if dur >= 20*time.Second {
		for _, f := range faults {
			if r.applied[f.name] == 0 {
				t.Errorf("fault %s was never applied in %v", f.name, dur)
			}
		}
	}
}

// chaosMenu is chaosFaults, or the subset CHAOS_FAULTS names (comma
// separated), to chase a problem down.
func chaosMenu(t *testing.T) []chaosFault {
	t.Helper()
	v := os.Getenv("CHAOS_FAULTS")
	if v == "" {
		return chaosFaults
	}
	var out []chaosFault
	for name := range strings.SplitSeq(v, ",") {
		i := slices.IndexFunc(chaosFaults, func(f chaosFault) bool { return f.name == strings.TrimSpace(name) })
		if i < 0 {
			t.Fatalf("CHAOS_FAULTS: unknown fault %q", name)
		}
		out = append(out, chaosFaults[i])
	}
	t.Logf("chaos: faults limited to %s", v)
	return out
}

func chaosSettings(t *testing.T) (time.Duration, uint64) {
	return chaosRunSettings(t, "chaos", 25*time.Second, 2*time.Second, "go test -race -run Chaos ./cmd/gateway/")
}

// chaosRunSettings reads CHAOS_DURATION (def when unset, no shorter than least)
// and CHAOS_SEED (the time when unset) for a chaos run, and logs how to
// replay it with the command replay.
func chaosRunSettings(t *testing.T, name string, def, least time.Duration, replay string) (time.Duration, uint64) {
	t.Helper()
	dur := def
	if v := os.Getenv("CHAOS_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < least {
			t.Fatalf("CHAOS_DURATION=%q: want a duration of at least %v, such as 10m", v, least)
		}
		dur = d
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("CHAOS_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED=%q: want an unsigned integer", v)
		}
		seed = s
	}
	t.Logf("%s: seed %d, duration %v (replay: CHAOS_SEED=%d CHAOS_DURATION=%v %s)", name, seed, dur, seed, dur, replay)
	return dur, seed
}

// chaosFault is one kind of fault. apply returns false when it could not be
// applied now (no live connection on any shard, NATS already down); it is
// then retried at the next step.
type chaosFault struct {
	name   string
	weight int // occurrences per round
	apply  func(r *chaosRun) bool
}

// chaosFaults is the menu. Every round of faults is a shuffled list holding
// each kind weight times, so every kind occurs in every round.
var chaosFaults = []chaosFault{
	{"drop", 3, shardFault(func(s *discordsim.Server, sh int, _ *rand.Rand) error { return s.Drop(sh) })},
	// Resumable close codes: Discord's "reconnect" ones, and codes a load
	// balancer or a restarting Discord node sends.
	closeFault(4000), closeFault(4001), closeFault(4002), closeFault(4003),
	closeFault(4005), closeFault(4008), closeFault(1001), closeFault(1011), closeFault(1012),
	// Session-ending ones: the gateway must IDENTIFY a new session.
	closeFault(4007), closeFault(4009),
	{"op7_reconnect", 2, shardFault(func(s *discordsim.Server, sh int, _ *rand.Rand) error { return s.Reconnect(sh) })},
	{"op9_resumable", 1, shardFault(func(s *discordsim.Server, sh int, _ *rand.Rand) error { return s.InvalidSession(sh, true) })},
	{"op9_invalid", 1, shardFault(func(s *discordsim.Server, sh int, _ *rand.Rand) error { return s.InvalidSession(sh, false) })},
	{"zombie", 2, (*chaosRun).zombie},
	{"write_delay", 2, (*chaosRun).writeDelay},
	{"nats_restart", 1, (*chaosRun).natsRestart},
	{"unpublished_or_guild_dispatch", 3, shardFault(noiseDispatch)},
}

func closeFault(code int) chaosFault {
	return chaosFault{"close_" + strconv.Itoa(code), 1, shardFault(func(s *discordsim.Server, sh int, _ *rand.Rand) error {
		return s.CloseWith(sh, code, "")
	})}
}

// noiseDispatch sends a dispatch the load generator does not: types the
// gateway must not publish (an outage GUILD_DELETE among them) and guild
// joins and leaves, which it must.
func noiseDispatch(s *discordsim.Server, sh int, rng *rand.Rand) error {
	guild := s.GuildIDForShard(sh, chaosShards+1, rng.IntN(4))
	user, channel := strconv.Itoa(80351110224678912+rng.IntN(1000)), "41771983423143937"
	var typ string
	var body []byte
	switch rng.IntN(6) {
	case 0:
		typ, body = "MESSAGE_CREATE", s.MessageCreateBody(guild, channel, user, false)
	case 1:
		typ, body = "TYPING_START", s.TypingStartBody(guild, channel, user)
	case 2:
		typ, body = "PRESENCE_UPDATE", s.PresenceUpdateBody(guild, user)
	case 3:
		typ, body = "GUILD_DELETE", s.GuildDeleteBody(guild, true) // outage: not published
	case 4:
		typ, body = "GUILD_DELETE", s.GuildDeleteBody(guild, false)
	default:
		typ, body = "GUILD_CREATE", s.GuildCreateBody(sh, guild, 2)
	}
	_, err := s.Dispatch(sh, typ, body)
	return err
}

// shardFault applies f to one of the chaos shards that has what it needs
// (a session, a live connection), trying them in random order.
func shardFault(f func(s *discordsim.Server, shard int, rng *rand.Rand) error) func(r *chaosRun) bool {
	return func(r *chaosRun) bool {
		for _, sh := range r.rng.Perm(chaosShards) {
			sid, conn := r.e.sim.CurrentSession(sh), r.e.sim.LiveConnID(sh)
			err := f(r.e.sim, sh, r.rng)
			if errors.Is(err, discordsim.ErrNoSession) || errors.Is(err, discordsim.ErrNotConnected) {
				continue
			}
			if err != nil {
				r.t.Errorf("chaos: %v", err)
				return true
			}
			r.note(sh, fmt.Sprintf("session %s conn %d", short(sid), conn))
			return true
		}
		return false
	}
}

// chaosRun drives the faults. It runs on the test goroutine.
type chaosRun struct {
	t      *testing.T
	e      *testEnv
	rng    *rand.Rand
	start  time.Time
	faults []chaosFault

	queue    []chaosFault // the current round
	retries  int
	current  string // fault being applied, for note
	applied  map[string]int
	log      []string // every fault applied, for a failure report
	undo     []chaosUndo
	natsDown bool
	natsOff  time.Duration // total NATS downtime
	natsAt   time.Time
	fatalAt  time.Time
	lastLog  time.Time
}

type chaosUndo struct {
	at time.Time
	do func()
}

func (r *chaosRun) since(at time.Time) string {
	return fmt.Sprintf("t+%.3fs", at.Sub(r.start).Seconds())
}

// note counts the fault being applied and logs it; sh < 0 is no shard.
func (r *chaosRun) note(sh int, detail string) {
	r.applied[r.current]++
	where := "        "
	if sh >= 0 {
		where = fmt.Sprintf("shard %d", sh)
	}
	r.log = append(r.log, fmt.Sprintf("%s %-30s %s %s", r.since(time.Now()), r.current, where, detail))
}

func (r *chaosRun) later(d time.Duration, do func()) {
	r.undo = append(r.undo, chaosUndo{time.Now().Add(d), do})
}

// run injects faults for d, one every 50-450 ms, then undoes what is still
// pending (ACKs back, delays off, NATS up).
func (r *chaosRun) run(d time.Duration) {
	end := time.Now().Add(d)
	for {
		r.runUndo(false)
		if !time.Now().Before(end) {
			break
		}
		r.inject()
		r.progress()
		time.Sleep(min(time.Duration(50+r.rng.IntN(400))*time.Millisecond, time.Until(end)))
	}
	r.runUndo(true)
}

func (r *chaosRun) inject() {
	if len(r.queue) == 0 {
		for _, f := range r.faults {
			for range f.weight {
				r.queue = append(r.queue, f)
			}
		}
		r.rng.Shuffle(len(r.queue), func(i, j int) { r.queue[i], r.queue[j] = r.queue[j], r.queue[i] })
	}
	f := r.queue[0]
	r.current = f.name
	if f.apply(r) || r.retries >= 20 {
		r.queue, r.retries = r.queue[1:], 0
		return
	}
	r.retries++
}

func (r *chaosRun) runUndo(all bool) {
	now := time.Now()
	keep := r.undo[:0]
	var due []chaosUndo
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
	if all {
		for sh := range chaosShards {
			r.e.sim.SetWriteDelay(sh, 0)
			_ = r.e.sim.WithholdAcks(sh, false)
		}
	}
}

func (r *chaosRun) progress() {
	if time.Since(r.lastLog) < 30*time.Second {
		return
	}
	if !r.lastLog.IsZero() {
		st := r.e.sim.Stats()
		r.t.Logf("chaos: %s: %d faults, %d dispatches generated, %d frames written, %d connections, %d identifies, %d resumes",
			r.since(time.Now()), len(r.log), st.Dispatches, st.FramesWritten, st.Connections, st.Identifies, st.Resumes)
	}
	r.lastLog = time.Now()
}

// zombie withholds heartbeat ACKs on a connection for 0.2-3 s: long enough,
// mostly, for the gateway to call it a zombie (two intervals), sometimes not.
func (r *chaosRun) zombie() bool {
	for _, sh := range r.rng.Perm(chaosShards) {
		conn := r.e.sim.LiveConnID(sh)
		if err := r.e.sim.WithholdAcks(sh, true); err != nil {
			continue
		}
		d := time.Duration(200+r.rng.IntN(2800)) * time.Millisecond
		r.note(sh, fmt.Sprintf("conn %d for %v", conn, d))
		r.later(d, func() { _ = r.e.sim.WithholdAcks(sh, false) })
		return true
	}
	return false
}

// writeDelay delays every frame to a shard by 20-200 ms for 0.5-4 s, less
// than the heartbeat interval so that the delay alone makes no zombie.
func (r *chaosRun) writeDelay() bool {
	sh := r.rng.IntN(chaosShards)
	d := time.Duration(20+r.rng.IntN(180)) * time.Millisecond
	hold := time.Duration(500+r.rng.IntN(3500)) * time.Millisecond
	r.e.sim.SetWriteDelay(sh, d)
	r.note(sh, fmt.Sprintf("%v for %v", d, hold))
	r.later(hold, func() { r.e.sim.SetWriteDelay(sh, 0) })
	return true
}

// natsRestart shuts the NATS server down and starts it again 0.2-2.5 s
// later on the same port and store directory.
func (r *chaosRun) natsRestart() bool {
	if r.natsDown {
		return false
	}
	down := time.Duration(200+r.rng.IntN(2300)) * time.Millisecond
	r.e.ns.Shutdown() // returns once it is down
	r.natsDown, r.natsAt = true, time.Now()
	r.note(-1, fmt.Sprintf("down for %v", down))
	r.later(down, r.natsStart)
	return true
}

func (r *chaosRun) natsStart() {
	r.e.ns.Start() // fails the test if NATS is not ready within 30s
	r.natsDown = false
	r.natsOff += time.Since(r.natsAt)
}

// fatal sends a fatal close code to the dedicated shard, which must stop.
func (r *chaosRun) fatal(sh, code int) {
	r.t.Helper()
	if err := r.e.sim.CloseWith(sh, code, ""); err != nil {
		r.t.Fatal(err)
	}
	r.fatalAt = time.Now()
	r.log = append(r.log, fmt.Sprintf("%s %-30s shard %d", r.since(r.fatalAt), "fatal_close_"+strconv.Itoa(code), sh))
	r.e.eventually("the fatal close stops its shard", 30*time.Second, func() bool {
		return shardByID(r.e.status().Shards, sh).State == shard.StateFailed
	})
}

func shardByID(list []service.ShardStatus, id int) shard.Status {
	for _, s := range list {
		if s.ID == id {
			return s.Status
		}
	}
	return shard.Status{ID: -1}
}

// quiesce stops the stream and waits until every chaos shard is READY on a
// live session and every dispatch of those sessions is acked.
func (r *chaosRun) quiesce() {
	r.t.Helper()
	r.e.sim.SetEventRate(0)
	r.e.eventually("every chaos shard READY on a live session", 90*time.Second, func() bool {
		st := r.e.status()
		infos := map[string]discordsim.SessionInfo{}
		for _, si := range r.e.sim.Sessions() {
			infos[si.ID] = si
		}
		for sh := range chaosShards {
			if shardByID(st.Shards, sh).State != shard.StateReady {
				return false
			}
			si, ok := infos[r.e.sim.CurrentSession(sh)]
			if !ok || !si.Live || si.Invalid {
				return false
			}
		}
		return true
	})
	r.e.settle()
}

func (r *chaosRun) checkAlive() {
	r.t.Helper()
	select {
	case err := <-r.e.runErr:
		r.e.runErr <- err
		r.t.Fatalf("the gateway's Run returned during the chaos run: %v", err)
	default:
	}
}

func (r *chaosRun) checkShards(fatalCode int) {
	r.t.Helper()
	st := r.e.status()
	for _, s := range st.Shards {
		switch {
		case s.ID == chaosFatalShard:
			if s.State != shard.StateFailed || !strings.Contains(s.LastError, "close code "+strconv.Itoa(fatalCode)) {
				r.t.Errorf("shard %d after fatal close %d: state %s, last error %q; want failed, naming the code", s.ID, fatalCode, s.State, s.LastError)
			}
		case s.State != shard.StateReady:
			r.t.Errorf("shard %d is %s at the end, want ready", s.ID, s.State)
		}
	}
	rec := r.e.sim.Record()
	for _, id := range rec.Identifies {
		if id.Shard == chaosFatalShard && id.At.After(r.fatalAt) {
			r.t.Errorf("shard %d identified at %s after its fatal close: reconnect loop", id.Shard, r.since(id.At))
		}
	}
	for _, rs := range rec.Resumes {
		if rs.Shard == chaosFatalShard && rs.At.After(r.fatalAt) {
			r.t.Errorf("shard %d resumed at %s after its fatal close: reconnect loop", rs.Shard, r.since(rs.At))
		}
	}
}

// checkViolations fails on every violation the simulator recorded, except a
// late heartbeat or a short identify gap that a stall of the whole process
// explains: the simulator times a frame when its reader gets to it, and a
// goroutine that runs every 10 ms (the probe) was held back long enough
// then to account for the difference. Those are listed, not failed.
func (r *chaosRun) checkViolations(vs []discordsim.Violation, probe *stallProbe) {
	r.t.Helper()
	var lines []string
	for _, v := range vs {
		line := fmt.Sprintf("%s shard %d conn %d at %s: %s", v.Kind, v.Shard, v.ConnID, r.since(v.At), v.Detail)
		if m := violationGap.FindStringSubmatch(v.Detail); m != nil {
			gap, err := time.ParseDuration(m[1])
			var excess, window time.Duration
			switch v.Kind {
			case discordsim.ViolationHeartbeatLate:
				excess, window = gap-(chaosHeartbeat+chaosHeartbeatGrace), gap
			case discordsim.ViolationIdentifyBucket:
				excess, window = time.Second-chaosIdentifyTolerance-gap, time.Second
			}
			if stall := probe.longest(v.At.Add(-window), v.At); err == nil && excess > 0 && stall >= excess {
				r.t.Logf("chaos: not counted, the process stalled %v then: %s", stall.Round(time.Millisecond), line)
				continue
			}
		}
		lines = append(lines, line)
	}
	if len(lines) > 0 {
		r.t.Errorf("the simulator recorded %d violations (want none; %s, %s and %s are Discord's limits):\n%s",
			len(lines), discordsim.ViolationIdentifyBucket, discordsim.ViolationSendRate, discordsim.ViolationHeartbeatLate,
			strings.Join(lastN(lines, 30), "\n"))
	}
}

// violationGap finds the measured time in the details of heartbeat_late
// ("... missing after 1.214s (interval 750ms)") and identify_bucket ("...
// identified 640ms after the previous identify ...") violations.
var violationGap = regexp.MustCompile(`(?:after|identified) ([0-9.]+[mµn]?s) (?:\(interval|after the previous)`)

// stallProbe measures how late the process runs a goroutine that asks to run
// every 10 ms, recording every delay over 50 ms: a stall of the whole
// process (a loaded machine, the race detector, a long GC) delays the
// gateway and the simulator alike.
type stallProbe struct {
	mu     sync.Mutex
	stalls []stall
	stop   chan struct{}
	done   chan struct{}
}

type stall struct {
	end time.Time
	d   time.Duration
}

func startStallProbe(t *testing.T) *stallProbe {
	p := &stallProbe{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		const tick = 10 * time.Millisecond
		tk := time.NewTicker(tick)
		defer tk.Stop()
		last := time.Now()
		for {
			select {
			case <-p.stop:
				return
			case <-tk.C:
			}
			now := time.Now()
			if d := now.Sub(last) - tick; d > 50*time.Millisecond {
				p.mu.Lock()
				p.stalls = append(p.stalls, stall{now, d})
				p.mu.Unlock()
			}
			last = now
		}
	}()
	t.Cleanup(func() {
		close(p.stop)
		<-p.done
	})
	return p
}

// longest returns the longest stall that overlapped [from, to].
func (p *stallProbe) longest(from, to time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var m time.Duration
	for _, s := range p.stalls {
		if s.end.After(from) && s.end.Add(-s.d).Before(to) {
			m = max(m, s.d)
		}
	}
	return m
}

func (p *stallProbe) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var m time.Duration
	for _, s := range p.stalls {
		m = max(m, s.d)
	}
	return fmt.Sprintf("process stalls over 50ms: %d, longest %v", len(p.stalls), m.Round(time.Millisecond))
}

// Resource growth allowed between the baseline and the end, both taken in
// the same settled state: a leak per reconnect or per event over a run of
// thousands of each exceeds it.
const (
	gatewayGoroutineSlack = 2
	totalGoroutineSlack   = 25
	gatewayHeapSlack      = 1 << 20 // plus 10% of the baseline
)

// checkUsage measures again, allowing transient goroutines (closing
// connections, NATS reconnects) 20 s to end.
func (r *chaosRun) checkUsage(base usage) usage {
	r.t.Helper()
	var end usage
	deadline := time.Now().Add(20 * time.Second)
	for {
		end = r.measure()
		problems := usageGrowth(base, end)
		if len(problems) == 0 {
			return end
		}
		if time.Now().After(deadline) {
			r.t.Errorf("resource growth across the chaos run:\n%s\nbaseline: %s\nend:      %s", strings.Join(problems, "\n"), base, end)
			if n := end.gwGoroutines - base.gwGoroutines; n > 0 {
				r.t.Logf("gateway goroutines at the end:\n%s", end.gwStacks)
			}
			for i, h := range end.gwTop {
				r.t.Logf("gateway heap at the end, #%d: %s", i+1, h)
			}
			return end
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func usageGrowth(base, end usage) []string {
	var out []string
	if d := end.gwGoroutines - base.gwGoroutines; d > gatewayGoroutineSlack {
		out = append(out, fmt.Sprintf("gateway goroutines %d → %d (+%d, tolerance %d)", base.gwGoroutines, end.gwGoroutines, d, gatewayGoroutineSlack))
	}
	if d := end.goroutines - base.goroutines; d > totalGoroutineSlack {
		out = append(out, fmt.Sprintf("goroutines %d → %d (+%d, tolerance %d)", base.goroutines, end.goroutines, d, totalGoroutineSlack))
	}
	b, e := base.heapBy["gateway"], end.heapBy["gateway"]
	if tol := int64(gatewayHeapSlack) + b/10; e-b > tol {
		out = append(out, fmt.Sprintf("heap held by the gateway's code %s → %s (+%s, tolerance %s)", mib(b), mib(e), mib(e-b), mib(tol)))
	}
	return out
}

// usage is a snapshot of goroutines and heap after a forced GC, with the
// heap in use attributed to whose code allocated it (a sampled heap
// profile): the gateway (service/, cmd/gateway), the simulator, the NATS
// server, the test itself, or other (the standard library and client
// libraries on goroutines of none of those).
type usage struct {
	goroutines   int
	gwGoroutines int
	gwStacks     string
	gwTop        []heapRecord // the gateway's largest heap records
	heapAlloc    uint64
	heapBy       map[string]int64
}

func (u usage) String() string {
	var by []string
	for _, k := range []string{"gateway", "sim", "nats-server", "test", "other"} {
		by = append(by, k+" "+mib(u.heapBy[k]))
	}
	return fmt.Sprintf("goroutines %d (gateway %d), heap %s (%s)", u.goroutines, u.gwGoroutines, mib(int64(u.heapAlloc)), strings.Join(by, ", "))
}

func mib(b int64) string { return fmt.Sprintf("%.2f MiB", float64(b)/(1<<20)) }

// measure is measureUsage, logging when it ran and how long it took (it
// stops the world briefly).
func (r *chaosRun) measure() usage {
	start := time.Now()
	u := measureUsage()
	r.t.Logf("chaos: measured at %s in %v", r.since(start), time.Since(start).Round(time.Millisecond))
	return u
}

func measureUsage() usage {
	runtime.GC()
	runtime.GC() // the heap profile is as of the last completed GC
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	u := usage{heapAlloc: ms.HeapAlloc}
	u.heapBy, u.gwTop = heapByOwner()
	u.goroutines, u.gwGoroutines, u.gwStacks = goroutinesByOwner()
	return u
}

// moduleRoot is the directory of this module's source, as the runtime
// reports file names.
var moduleRoot = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(filepath.Dir(file))) + "/"
}()

// Owners of a stack, in order of precedence: what the test, the simulator
// or the NATS server do on behalf of the gateway is theirs.
const (
	ownTest = 1 << iota
	ownSim
	ownNATS
	ownGateway
)

var ownerNames = []struct {
	bit  int
	name string
}{{ownTest, "test"}, {ownSim, "sim"}, {ownNATS, "nats-server"}, {ownGateway, "gateway"}}

func frameOwner(fn, file string) int {
	switch {
	case strings.HasSuffix(file, "_test.go"):
		return ownTest
	case strings.Contains(file, "/internal/discordsim/"):
		return ownSim
	case strings.Contains(fn, "nats-server") || strings.Contains(file, "nats-server"):
		return ownNATS
	case strings.HasPrefix(file, moduleRoot):
		return ownGateway
	}
	return 0
}

func ownerName(bits int) string {
	for _, o := range ownerNames {
		if bits&o.bit != 0 {
			return o.name
		}
	}
	return "other"
}

// heapByOwner attributes the sampled in-use heap records (runtime.MemProfile,
// scaled as pprof scales them) to their owners. It also returns the
// gateway's largest records, to show what grew. Stacks are cut at 32 frames
// from the allocation, deep enough for what the gateway keeps.
func heapByOwner() (map[string]int64, []heapRecord) {
	var p []runtime.MemProfileRecord
	n, _ := runtime.MemProfile(nil, false)
	for {
		p = make([]runtime.MemProfileRecord, n+64)
		var ok bool
		if n, ok = runtime.MemProfile(p, false); ok {
			p = p[:n]
			break
		}
	}
	rate := float64(runtime.MemProfileRate)
	cache := map[uintptr]int{}
	out := map[string]int64{}
	var gw []heapRecord
	for i := range p {
		objs, size := p[i].InUseObjects(), p[i].InUseBytes()
		if objs <= 0 || size <= 0 {
			continue
		}
		if rate > 1 {
			size = int64(float64(size) / (1 - math.Exp(-float64(size)/float64(objs)/rate)))
		}
		stack := p[i].Stack()
		bits := 0
		for _, pc := range stack {
			b, ok := cache[pc]
			if !ok {
				frames := runtime.CallersFrames([]uintptr{pc})
				for {
					f, more := frames.Next()
					b |= frameOwner(f.Function, f.File)
					if !more {
						break
					}
				}
				cache[pc] = b
			}
			bits |= b
		}
		name := ownerName(bits)
		out[name] += size
		if name == "gateway" {
			gw = append(gw, heapRecord{size, stack})
		}
	}
	sort.Slice(gw, func(i, j int) bool { return gw[i].bytes > gw[j].bytes })
	return out, gw[:min(len(gw), 10)]
}

type heapRecord struct {
	bytes int64
	stack []uintptr
}

func (h heapRecord) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s in use, allocated at:", mib(h.bytes))
	frames := runtime.CallersFrames(h.stack)
	for {
		f, more := frames.Next()
		fmt.Fprintf(&b, "\n        %s %s:%d", f.Function, strings.TrimPrefix(f.File, moduleRoot), f.Line)
		if !more {
			break
		}
	}
	return b.String()
}

// goroutinesByOwner counts every goroutine and the gateway's, from a full
// dump (debug=2: the format of a panic, with "created by" lines).
func goroutinesByOwner() (total, gateway int, gwStacks string) {
	var buf bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&buf, 2); err != nil {
		panic(err)
	}
	var stacks []string
	for block := range strings.SplitSeq(buf.String(), "\n\n") {
		if !strings.HasPrefix(block, "goroutine ") {
			continue
		}
		total++
		lines := strings.Split(block, "\n")
		bits := 0
		for i := 1; i+1 < len(lines); i++ {
			if strings.HasPrefix(lines[i], "\t") || !strings.HasPrefix(lines[i+1], "\t") {
				continue
			}
			fn := strings.TrimPrefix(lines[i], "created by ")
			if j := strings.LastIndex(fn, "("); j > 0 && !strings.HasPrefix(lines[i], "created by ") {
				fn = fn[:j]
			}
			file := strings.TrimSpace(lines[i+1])
			if j := strings.LastIndex(file, ":"); j > 0 {
				file = file[:j]
			}
			bits |= frameOwner(fn, file)
		}
		if ownerName(bits) == "gateway" {
			gateway++
			stacks = append(stacks, block)
		}
	}
	return total, gateway, strings.Join(stacks, "\n\n")
}

// streamTally collects every message stored in the streams as it arrives,
// through a durable consumer per stream (file storage, so it survives the
// NATS restarts): the streams' max age (60 s for COMMANDS) would drop early
// messages of a long run before the end.
type streamTally struct {
	mu   sync.Mutex
	seen map[string]map[uint64]string // stream → stream seq → Nats-Msg-Id
	odd  []string
	ccs  []jetstream.ConsumeContext
}

func startStreamTally(t *testing.T, e *testEnv) *streamTally {
	t.Helper()
	tl := &streamTally{seen: map[string]map[uint64]string{}}
	for _, name := range chaosStreams {
		tl.seen[name] = map[uint64]string{}
		var s jetstream.Stream
		e.eventually("stream "+name, 30*time.Second, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var err error
			s, err = e.js.Stream(ctx, name)
			return err == nil
		})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cons, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
			Durable: "chaos-tally", AckPolicy: jetstream.AckExplicitPolicy,
			DeliverPolicy: jetstream.DeliverAllPolicy, AckWait: 30 * time.Second, MaxAckPending: 100000,
		})
		cancel()
		if err != nil {
			t.Fatalf("consumer on %s: %v", name, err)
		}
		cc, err := cons.Consume(func(m jetstream.Msg) {
			if md, err := m.Metadata(); err == nil {
				tl.add(name, md.Sequence.Stream, m.Headers().Get(jetstream.MsgIDHeader))
			}
			_ = m.Ack()
		}, jetstream.ConsumeErrHandler(func(jetstream.ConsumeContext, error) {}))
		if err != nil {
			t.Fatalf("consume %s: %v", name, err)
		}
		tl.ccs = append(tl.ccs, cc)
	}
	t.Cleanup(func() {
		for _, cc := range tl.ccs {
			cc.Stop()
		}
	})
	return tl
}

func (tl *streamTally) add(stream string, seq uint64, id string) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if prev, ok := tl.seen[stream][seq]; ok && prev != id {
		tl.odd = append(tl.odd, fmt.Sprintf("%s seq %d held %s, then %s: NATS lost stored messages across a restart", stream, seq, prev, id))
	}
	tl.seen[stream][seq] = id
}

// complete waits until the consumers have seen every stream sequence, reads
// what they have not directly, and returns how many stored messages carry
// each Nats-Msg-Id.
func (tl *streamTally) complete(t *testing.T, e *testEnv) (map[string]int, []string) {
	t.Helper()
	var problems []string
	for _, name := range chaosStreams {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		s, err := e.js.Stream(ctx, name)
		if err != nil {
			cancel()
			t.Fatalf("stream %s: %v", name, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			cancel()
			t.Fatalf("stream %s: %v", name, err)
		}
		last := info.State.LastSeq
		count := func() uint64 {
			tl.mu.Lock()
			defer tl.mu.Unlock()
			return uint64(len(tl.seen[name]))
		}
		deadline := time.Now().Add(30 * time.Second)
		for count() < last && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		for seq := uint64(1); seq <= last; seq++ {
			tl.mu.Lock()
			_, ok := tl.seen[name][seq]
			tl.mu.Unlock()
			if ok {
				continue
			}
			m, err := s.GetMsg(ctx, seq)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s seq %d was never read and is gone (%v)", name, seq, err))
				continue
			}
			tl.add(name, seq, m.Header.Get(jetstream.MsgIDHeader))
		}
		cancel()
	}
	tl.mu.Lock()
	defer tl.mu.Unlock()
	stored := map[string]int{}
	for _, seqs := range tl.seen {
		for _, id := range seqs {
			stored[id]++
		}
	}
	return stored, append(problems, tl.odd...)
}

// ledgerCheck is invariant 1: every dispatch the simulator wrote to a socket
// (of a published type; not an outage GUILD_DELETE) is in JetStream exactly
// once, and nothing else is there, except what Discord's semantics make
// unrecoverable, which is counted and explained:
//
//   - tail: the simulator invalidated a session (op 9 false, 4007, 4009) on a
//     connection the gateway had already stopped reading (it was closing it
//     for another fault, or had found it a zombie). Frames written there
//     after the gateway's last read are gone, and the session with them:
//     the gateway's RESUME is refused, it identifies. What it stored of
//     that session must then be a prefix (by seq) of what was written.
//   - orphan: a connection was dropped before the gateway read the READY
//     of its new session: the gateway never learnt the session id, cannot
//     resume it and identifies again. None of that session's events can be
//     in JetStream.
type ledgerCheck struct {
	generated, written, expected, present int
	excusedTail, excusedOrphan            int
	excused                               []string
	problems                              []string
}

func checkLedger(ledger []discordsim.SentDispatch, rec discordsim.Record, stored map[string]int, start time.Time) ledgerCheck {
	lc := ledgerCheck{generated: len(ledger)}
	want := map[string]discordsim.SentDispatch{}
	unwritten := map[string]discordsim.SentDispatch{}
	for _, d := range ledger {
		if d.Written {
			lc.written++
		}
		if !publishedTypes[d.Type] {
			continue
		}
		if d.Type == "GUILD_DELETE" {
			if f, err := event.ParseFields(d.Type, d.Data); err != nil || f.Unavailable {
				continue
			}
		}
		id := event.ID(d.Shard, d.SessionID, d.Seq)
		if d.Written {
			want[id] = d
		} else {
			unwritten[id] = d
		}
	}
	lc.expected = len(want)

	// What the simulator did to each session, and what the gateway tried.
	ended := map[string]string{} // invalidated by an injected fault
	killed := map[string]bool{}  // a connection of the session was torn down by the server
	for _, a := range rec.Actions {
		switch {
		case a.Kind == discordsim.ActionClose && (a.Code == 4007 || a.Code == 4009):
			ended[a.SessionID] = "close " + strconv.Itoa(a.Code)
		case a.Kind == discordsim.ActionInvalidSession && a.Detail == "InvalidSession requested (d=false)":
			ended[a.SessionID] = "op 9 d=false"
		case a.Kind == discordsim.ActionDrop || a.Kind == discordsim.ActionSlowClientDrop || a.Kind == discordsim.ActionWriteError:
			killed[a.SessionID] = true
		}
	}
	refused := map[string]bool{}
	resumed := map[string]bool{}
	for _, rs := range rec.Resumes {
		resumed[rs.SessionID] = true
		switch rs.Outcome {
		case discordsim.ResumeResumed:
		case discordsim.ResumeInvalidSession:
			if ended[rs.SessionID] == "" {
				lc.problems = append(lc.problems, fmt.Sprintf("RESUME of session %s (shard %d) refused at t+%.3fs though no fault ended it (expired? SessionTimeout is 1m):\n%s",
					short(rs.SessionID), rs.Shard, rs.At.Sub(start).Seconds(), story(rec, rs.SessionID, start)))
			}
			refused[rs.SessionID] = true
		default:
			lc.problems = append(lc.problems, fmt.Sprintf("RESUME of session %s (shard %d, seq %d) at t+%.3fs: %s:\n%s",
				short(rs.SessionID), rs.Shard, rs.Seq, rs.At.Sub(start).Seconds(), rs.Outcome, story(rec, rs.SessionID, start)))
		}
	}

	// Per session: the highest seq stored, and what is missing.
	maxStored := map[string]int64{}
	missing := map[string][]discordsim.SentDispatch{}
	for id, d := range want {
		switch n := stored[id]; {
		case n == 0:
			missing[d.SessionID] = append(missing[d.SessionID], d)
		default:
			lc.present++
			maxStored[d.SessionID] = max(maxStored[d.SessionID], d.Seq)
			if n > 1 {
				lc.problems = append(lc.problems, fmt.Sprintf("duplicate: %s seq %d of session %s (shard %d) stored %d times", d.Type, d.Seq, short(d.SessionID), d.Shard, n))
			}
		}
	}
	for id, n := range stored {
		if _, ok := want[id]; ok {
			continue
		}
		what := "not in the simulator's ledger"
		if d, ok := unwritten[id]; ok {
			what = fmt.Sprintf("%s seq %d of session %s, never written to a socket", d.Type, d.Seq, short(d.SessionID))
		}
		lc.problems = append(lc.problems, fmt.Sprintf("unexpected message %s (%d times): %s", id, n, what))
	}
	sids := slices.Sorted(maps.Keys(missing))
	unexplained := 0
	for _, sid := range sids {
		ds := missing[sid]
		sort.Slice(ds, func(i, j int) bool { return ds[i].Seq < ds[j].Seq })
		first, last := ds[0], ds[len(ds)-1]
		span := fmt.Sprintf("%d events of session %s (shard %d), seq %d..%d", len(ds), short(sid), first.Shard, first.Seq, last.Seq)
		switch {
		case refused[sid] && ended[sid] != "" && first.Seq > maxStored[sid]:
			lc.excusedTail += len(ds)
			lc.excused = append(lc.excused, fmt.Sprintf("tail: %s after seq %d, session ended by %s on a connection the gateway had left", span, maxStored[sid], ended[sid]))
		case maxStored[sid] == 0 && !resumed[sid] && killed[sid]:
			lc.excusedOrphan += len(ds)
			lc.excused = append(lc.excused, fmt.Sprintf("orphan: %s, dropped before the gateway read its READY", span))
		default:
			unexplained++
			msg := fmt.Sprintf("missing: %s (highest stored seq %d)", span, maxStored[sid])
			if unexplained <= 5 {
				msg += ":\n" + story(rec, sid, start)
			}
			lc.problems = append(lc.problems, msg)
		}
	}
	return lc
}

// story is what happened to a session, in time order, from the simulator's
// records: identify, resumes, faults, closes.
func story(rec discordsim.Record, sid string, start time.Time) string {
	type line struct {
		at   time.Time
		text string
	}
	var lines []line
	conns := map[int64]bool{}
	for _, id := range rec.Identifies {
		if id.SessionID == sid {
			conns[id.ConnID] = true
			lines = append(lines, line{id.At, fmt.Sprintf("IDENTIFY shard %d on conn %d: %s", id.Shard, id.ConnID, id.Outcome)})
		}
	}
	for _, rs := range rec.Resumes {
		if rs.SessionID == sid {
			conns[rs.ConnID] = true
			lines = append(lines, line{rs.At, fmt.Sprintf("RESUME seq %d on conn %d (%s): %s, %d replayed", rs.Seq, rs.ConnID, rs.Path, rs.Outcome, rs.Replayed)})
		}
	}
	for _, a := range rec.Actions {
		if a.SessionID == sid || (a.ConnID != 0 && conns[a.ConnID]) {
			text := "sim " + a.Kind
			if a.ConnID != 0 {
				text += fmt.Sprintf(" conn %d", a.ConnID)
			}
			if a.Code != 0 {
				text += fmt.Sprintf(" code %d", a.Code)
			}
			lines = append(lines, line{a.At, text + " " + a.Detail})
		}
	}
	for _, c := range rec.ClientCloses {
		if c.SessionID == sid || conns[c.ConnID] {
			lines = append(lines, line{c.At, fmt.Sprintf("gateway close on conn %d: code %d %q echo=%v", c.ConnID, c.Code, c.Reason, c.Echo)})
		}
	}
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].at.Before(lines[j].at) })
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "    t+%.3fs %s\n", l.at.Sub(start).Seconds(), l.text)
	}
	return strings.TrimRight(b.String(), "\n")
}

func (r *chaosRun) report(lc ledgerCheck, rec discordsim.Record, base, end usage, warm, dur time.Duration, seed uint64, fatalCode int) {
	t := r.t
	var faults []string
	total := 0
	for _, f := range r.faults {
		faults = append(faults, fmt.Sprintf("%s %d", f.name, r.applied[f.name]))
		total += r.applied[f.name]
	}
	outcomes := map[string]int{}
	for _, rs := range rec.Resumes {
		outcomes[rs.Outcome]++
	}
	ready := 0
	for _, id := range rec.Identifies {
		if id.Outcome == discordsim.IdentifyReady {
			ready++
		}
	}
	t.Logf("chaos: seed %d, %v (warm-up %v), shards 0-%d under faults, shard %d stopped by close %d",
		seed, dur, warm, chaosShards-1, chaosFatalShard, fatalCode)
	t.Logf("chaos: %d faults: %s; NATS down %v in total", total, strings.Join(faults, ", "), r.natsOff.Round(time.Millisecond))
	t.Logf("chaos: simulator: %d connections, %d identifies (%d ready), resumes %v, %d violations",
		rec.Connections, len(rec.Identifies), ready, outcomes, len(rec.Violations))
	t.Logf("chaos: gateway reconnects by reason: %v", r.reconnectReasons())
	t.Logf("chaos: events: %d dispatches generated, %d written to a socket; %d to publish, %d in JetStream exactly once; %d excused (%d tail, %d orphan)",
		lc.generated, lc.written, lc.expected, lc.present, lc.excusedTail+lc.excusedOrphan, lc.excusedTail, lc.excusedOrphan)
	for _, x := range lc.excused {
		t.Logf("chaos: excused %s", x)
	}
	t.Logf("chaos: baseline %s", base)
	t.Logf("chaos: end      %s", end)
}

// reconnectReasons sums gateway_shard_reconnects_total by reason.
func (r *chaosRun) reconnectReasons() map[string]float64 {
	_, b := r.e.get("/metrics")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		r.t.Errorf("/metrics: %v", err)
		return nil
	}
	out := map[string]float64{}
	if f := families["gateway_shard_reconnects_total"]; f != nil {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" {
					out[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

func short(sid string) string {
	if len(sid) > 8 {
		return sid[:8]
	}
	return sid
}

func lastN(s []string, n int) []string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// The verdict of the chaos run on made-up ledgers and records: exact
// delivery passes, what Discord's semantics lose is excused, anything else
// is a problem.
func TestChaosLedgerCheckExcusesOnlyWhatDiscordLoses(t *testing.T) {
	start := time.Now()
	ledger := func(sid string, seqs ...int64) []discordsim.SentDispatch {
		var out []discordsim.SentDispatch
		for _, s := range seqs {
			out = append(out, discordsim.SentDispatch{Shard: 0, SessionID: sid, Seq: s, Type: "GUILD_MEMBER_ADD", Written: true})
		}
		return out
	}
	stored := func(sid string, seqs ...int64) map[string]int {
		m := map[string]int{}
		for _, s := range seqs {
			m[event.ID(0, sid, s)]++
		}
		return m
	}
	invalidated := discordsim.Action{Kind: discordsim.ActionInvalidSession, SessionID: "s", Detail: "InvalidSession requested (d=false)"}
	closed4009 := discordsim.Action{Kind: discordsim.ActionClose, SessionID: "s", Code: 4009}
	dropped := discordsim.Action{Kind: discordsim.ActionDrop, SessionID: "s"}
	refused := discordsim.Resume{Shard: 0, SessionID: "s", Outcome: discordsim.ResumeInvalidSession}
	resumed := discordsim.Resume{Shard: 0, SessionID: "s", Outcome: discordsim.ResumeResumed}
	tests := []struct {
		name     string
		ledger   []discordsim.SentDispatch
		rec      discordsim.Record
		stored   map[string]int
		problems int
		excused  int
	}{
		{"exactly once", ledger("s", 1, 2, 3), discordsim.Record{}, stored("s", 1, 2, 3), 0, 0},
		{"not written, not expected", append(ledger("s", 1), discordsim.SentDispatch{SessionID: "s", Seq: 2, Type: "GUILD_MEMBER_ADD"}), discordsim.Record{}, stored("s", 1), 0, 0},
		{"unpublished type ignored", []discordsim.SentDispatch{{SessionID: "s", Seq: 1, Type: "MESSAGE_CREATE", Written: true}}, discordsim.Record{}, stored("s"), 0, 0},
		{"outage GUILD_DELETE ignored", []discordsim.SentDispatch{{SessionID: "s", Seq: 1, Type: "GUILD_DELETE", Written: true, Data: []byte(`{"id":"1","unavailable":true}`)}}, discordsim.Record{}, stored("s"), 0, 0},
		{"duplicate", ledger("s", 1, 2), discordsim.Record{}, map[string]int{event.ID(0, "s", 1): 2, event.ID(0, "s", 2): 1}, 1, 0},
		{"unexpected", ledger("s", 1), discordsim.Record{}, stored("s", 1, 7), 1, 0},
		{"missing", ledger("s", 1, 2, 3), discordsim.Record{}, stored("s", 1, 3), 1, 0},
		{"tail of a session ended on a connection the gateway had left",
			ledger("s", 1, 2, 3, 4), discordsim.Record{Actions: []discordsim.Action{invalidated}, Resumes: []discordsim.Resume{refused}}, stored("s", 1, 2), 0, 2},
		{"same with 4009", ledger("s", 1, 2, 3), discordsim.Record{Actions: []discordsim.Action{closed4009}, Resumes: []discordsim.Resume{refused}}, stored("s", 1), 0, 2},
		{"a gap is no tail", ledger("s", 1, 2, 3, 4), discordsim.Record{Actions: []discordsim.Action{invalidated}, Resumes: []discordsim.Resume{refused}}, stored("s", 1, 3), 1, 0},
		{"no tail without a refused RESUME", ledger("s", 1, 2, 3), discordsim.Record{Actions: []discordsim.Action{invalidated}}, stored("s", 1), 1, 0},
		{"a refused RESUME nobody caused", ledger("s", 1), discordsim.Record{Resumes: []discordsim.Resume{refused}}, stored("s", 1), 1, 0},
		{"orphan: dropped before its READY was read", ledger("s", 2, 3), discordsim.Record{Actions: []discordsim.Action{dropped}}, stored("s"), 0, 2},
		{"no orphan once resumed", ledger("s", 2, 3), discordsim.Record{Actions: []discordsim.Action{dropped}, Resumes: []discordsim.Resume{resumed}}, stored("s"), 1, 0},
		{"no orphan without a drop", ledger("s", 2, 3), discordsim.Record{}, stored("s"), 1, 0},
		{"a RESUME with a seq ahead", ledger("s", 1), discordsim.Record{Resumes: []discordsim.Resume{{SessionID: "s", Outcome: discordsim.ResumeInvalidSeq}}}, stored("s", 1), 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lc := checkLedger(tt.ledger, tt.rec, tt.stored, start)
			if len(lc.problems) != tt.problems || lc.excusedTail+lc.excusedOrphan != tt.excused {
				t.Errorf("%d problems, %d excused; want %d, %d\n%s\n%s", len(lc.problems), lc.excusedTail+lc.excusedOrphan,
					tt.problems, tt.excused, strings.Join(lc.problems, "\n"), strings.Join(lc.excused, "\n"))
			}
		})
	}
}

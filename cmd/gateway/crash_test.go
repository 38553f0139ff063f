package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shardpool/gateway/discovery"
	"github.com/shardpool/gateway/discovery/consultest"
	"github.com/shardpool/gateway/internal/discordsim"
	"github.com/shardpool/gateway/internal/natstest"
	"github.com/shardpool/gateway/service/event"
	"github.com/shardpool/gateway/service/shard"
)

// Crash-safe resume, end to end: real gateway processes killed with SIGKILL
// or frozen with SIGSTOP under steady traffic, against the simulator, an
// embedded JetStream (file storage: it is restarted) and, for the fleet, a
// real Consul agent. What a successor (or a restarted instance) does is read
// from the simulator's records, what was stored from the streams.

// crashWorld is the processes' surroundings.
type crashWorld struct {
	f  *procFleet
	nc *nats.Conn
	js jetstream.JetStream
}

type crashOptions struct {
	consul bool
	sim    discordsim.Config
	env    map[string]string
}

const crashShards = 2

func startCrashWorld(t *testing.T, bin string, o crashOptions) *crashWorld {
	t.Helper()
	f := &procFleet{t: t, bin: bin, dir: t.TempDir()}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range f.procs {
				t.Logf("%s log (last 60 lines):\n%s", p.name, p.logTail(60))
			}
		}
	})
	if o.consul {
		f.consul = consultest.Start(t)
	}
	o.sim.Shards, o.sim.MaxConcurrency = crashShards, crashShards
	// The binary's identify window is Discord's 5 s.
	o.sim.IdentifyWindow, o.sim.IdentifyTolerance = 5*time.Second, 250*time.Millisecond
	o.sim.ConnLabel = f.label
	if o.sim.EventRate == 0 {
		o.sim.EventRate = 20
	}
	f.sim = discordsim.New(o.sim)
	if err := f.sim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.sim.Close)
	f.ns = natstest.Run(t)
	f.env = map[string]string{
		"DISCORD_TOKEN": discordsim.DefaultToken, "DISCORD_API_URL": f.sim.APIURL(),
		"NATS_URL": f.ns.ClientURL(), "STREAM_STORAGE": "file",
		"HTTP_HOST": "127.0.0.1", "LOG_LEVEL": "info", "DRAIN_TIMEOUT": "15s",
		"TOTAL_SHARDS": strconv.Itoa(crashShards), "SHARDS_PER_POOL": strconv.Itoa(crashShards),
		"SERVICE_NAME": "crash", "KV_PREFIX": "crash",
		// A dead owner's /health fails three probes a second apart, then
		// the lock-delay runs: the spare takes over about 8 s after a kill.
		"CONSUL_SESSION_TTL": "10s", "CONSUL_LOCK_DELAY": "5s", "CONSUL_CHECK_INTERVAL": "1s",
	}
	for k, v := range o.env {
		f.env[k] = v
	}
	nc, err := nats.Connect(f.ns.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	return &crashWorld{f: f, nc: nc, js: js}
}

// startLocal starts a gateway process without Consul (a single instance)
// and returns once its HTTP server answers.
func (w *crashWorld) startLocal() *gwProc {
	w.f.t.Helper()
	return w.f.spawn(nil, func(name string) bool { return !strings.HasPrefix(name, "CONSUL_") })
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// running reports whether p runs every shard of a pool READY (in role,
// when role is set).
func running(p *gwProc, role string) bool {
	st, ok := p.status()
	if !ok || len(st.Shards) == 0 || (role != "" && (st.Discovery == nil || st.Discovery.Role != role)) {
		return false
	}
	for _, sh := range st.Shards {
		if sh.State != "ready" {
			return false
		}
	}
	return true
}

// unacked is a shard's dispatches a killed process had read but JetStream
// had not acked: seqs in (acked, seen] of its session.
type unacked struct {
	session     string
	acked, seen int64
}

// holdAcks stops NATS until p has read at least n dispatches of every shard
// that it cannot get acked, and returns them per shard. The caller kills p
// and starts NATS again.
func (w *crashWorld) holdAcks(p *gwProc, n int64) map[int]unacked {
	t := w.f.t
	t.Helper()
	w.f.ns.Shutdown()
	out := map[int]unacked{}
	waitFor(t, fmt.Sprintf("%s to hold %d unacked dispatches per shard", p.name, n), 30*time.Second, func() bool {
		st, ok := p.status()
		if !ok {
			return false
		}
		for _, sh := range st.Shards {
			if sh.LastSeq-sh.LastAckedSeq < n {
				return false
			}
			out[sh.ID] = unacked{session: w.f.sim.CurrentSession(sh.ID), acked: sh.LastAckedSeq, seen: sh.LastSeq}
		}
		return len(out) == crashShards
	})
	return out
}

// settle stops the traffic and waits until p has acked every live session's
// last dispatch and buffers nothing.
func (w *crashWorld) settle(p *gwProc) {
	t := w.f.t
	t.Helper()
	w.f.sim.SetEventRate(0)
	waitFor(t, p.name+" to ack every dispatch", 60*time.Second, func() bool {
		st, ok := p.status()
		if !ok || st.Publish.BufferEvents != 0 {
			return false
		}
		for _, sh := range st.Shards {
			si := w.session(sh.ID)
			if !si.Live || sh.LastAckedSeq < si.Seq {
				return false
			}
		}
		return true
	})
}

// session is the simulator's current session of shard.
func (w *crashWorld) session(shard int) discordsim.SessionInfo {
	id := w.f.sim.CurrentSession(shard)
	for _, si := range w.f.sim.Sessions() {
		if si.ID == id {
			return si
		}
	}
	return discordsim.SessionInfo{}
}

// storedOnce checks that the streams hold every dispatch written to a
// socket exactly once, and that every one of held is among them.
func (w *crashWorld) storedOnce(held map[int]unacked) {
	t := w.f.t
	t.Helper()
	e := &testEnv{t: t, sim: w.f.sim, nc: w.nc, js: w.js}
	want := expectedIDs(t, w.f.sim, true)
	seen := map[string]int{}
	for _, stream := range []string{"EVENTS", "COMMANDS"} {
		for _, m := range e.streamMsgs(stream) {
			seen[m.Header.Get(jetstream.MsgIDHeader)]++
		}
	}
	stored := 0
	for _, d := range w.f.sim.Dispatches() {
		u, ok := held[d.Shard]
		if !ok || d.SessionID != u.session || d.Seq <= u.acked || d.Seq > u.seen || !publishedTypes[d.Type] {
			continue
		}
		if _, expected := want[event.ID(d.Shard, d.SessionID, d.Seq)]; !expected {
			continue
		}
		if seen[event.ID(d.Shard, d.SessionID, d.Seq)] == 1 {
			stored++
			continue
		}
		t.Errorf("shard %d seq %d (%s), read but not acked by the killed process: stored %d times", d.Shard, d.Seq, d.Type, seen[event.ID(d.Shard, d.SessionID, d.Seq)])
	}
	if len(held) > 0 {
		t.Logf("%d dispatches the killed process had read but not acked are stored once", stored)
	}
	e.assertExactlyOnce(want)
}

// metric returns the value of the sample line name (with its labels) on
// p's /metrics, or -1.
func metric(p *gwProc, name string) float64 {
	code, b, err := p.get("/metrics")
	if err != nil || code != 200 {
		return -1
	}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// checkpointWrites returns p's successful checkpoint writes (Consul
// transactions or file writes) and the records they wrote.
func checkpointWrites(p *gwProc) (writes, records float64) {
	return metric(p, `gateway_session_checkpoint_writes_total{result="ok"}`), metric(p, "gateway_session_checkpoint_records_written_total")
}

// checkpointRate logs what p wrote in d since writes0 and records0, and
// checks the schedule's bound: at most one write per interval (plus the
// one at the start of a pool and one a tick may straddle), each with at
// most one record per shard.
func (w *crashWorld) checkpointRate(p *gwProc, d time.Duration, writes0, records0 float64, interval time.Duration) {
	t := w.f.t
	t.Helper()
	writes, records := checkpointWrites(p)
	writes, records = writes-writes0, records-records0
	t.Logf("checkpoint writes of %s: %.0f transactions, %.0f records in %v: %.2f transactions/s, %.2f records/s (%d shards, CHECKPOINT_INTERVAL %v, 20 dispatches/s per shard)",
		p.name, writes, records, d.Round(time.Millisecond), writes/d.Seconds(), records/d.Seconds(), crashShards, interval)
	if most := float64(d/interval) + 2; writes > most || records > writes*crashShards {
		t.Errorf("%.0f checkpoint writes with %.0f records in %v, want at most %.0f writes of at most %d records", writes, records, d, most, crashShards)
	}
}

// identifiesAndResumes counts per shard the IDENTIFYs and the RESUMEs
// that resumed.
func identifiesAndResumes(rec discordsim.Record) (identifies, resumed map[int]int) {
	identifies, resumed = map[int]int{}, map[int]int{}
	for _, id := range rec.Identifies {
		identifies[id.Shard]++
	}
	for _, rs := range rec.Resumes {
		if rs.Outcome == discordsim.ResumeResumed {
			resumed[rs.Shard]++
		}
	}
	return identifies, resumed
}

// TestCrashSafeResume runs the crash tests below on one build of the
// binary.
func TestCrashSafeResume(t *testing.T) {
	bin := buildFleetBinary(t)
	for _, tc := range []struct {
		name string
		test func(*testing.T, string)
	}{
		{"SIGKILLed owner's spare resumes every shard and stores every dispatch once", sigkilledOwnersSpareResumesEveryShardAndStoresEveryDispatchOnce},
		{"frozen owner never writes again after the spare resumed its sessions", frozenOwnerNeverWritesAgainAfterTheSpareResumedItsSessions},
		{"a record Discord no longer honours costs one IDENTIFY", recordDiscordNoLongerHonoursCostsOneIdentify},
		{"single instance with a state file resumes after kill -9 and restart", singleInstanceWithAStateFileResumesAfterKillAndRestart},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.test(t, bin) })
	}
}

// (1) The owner of a pool is SIGKILLed under steady traffic, holding
// dispatches it had read but JetStream had not acked: the spare RESUMEs
// every shard from the owner's last checkpoint (no IDENTIFY) and every
// dispatch is stored exactly once, those among them.
func sigkilledOwnersSpareResumesEveryShardAndStoresEveryDispatchOnce(t *testing.T, bin string) {
	w := startCrashWorld(t, bin, crashOptions{consul: true, env: map[string]string{"CHECKPOINT_INTERVAL": "1s"}})
	owner := w.f.start()
	waitFor(t, "the owner running its pool", 60*time.Second, func() bool { return running(owner, discovery.RoleOwner) })
	spare := w.f.start()
	waitFor(t, "the spare", 60*time.Second, func() bool { return spare.role() == discovery.RoleSpare })
	time.Sleep(2 * time.Second) // steady traffic, checkpoints written

	held := w.holdAcks(owner, 10)
	owner.signal(syscall.SIGKILL)
	<-owner.exited
	killed := time.Now()
	w.f.ns.Start()
	waitFor(t, "the spare running the pool", 60*time.Second, func() bool { return running(spare, discovery.RoleOwner) })
	t.Logf("the spare took over %v after the kill; held unacked: %+v", time.Since(killed).Round(time.Millisecond), held)
	writes, records := checkpointWrites(spare)
	took := time.Now()
	time.Sleep(3 * time.Second) // traffic through the successor
	w.checkpointRate(spare, time.Since(took), writes, records, time.Second)
	w.settle(spare)

	identifies, resumed := identifiesAndResumes(w.f.sim.Record())
	for shard := range crashShards {
		if identifies[shard] != 1 || resumed[shard] != 1 {
			t.Errorf("shard %d: %d IDENTIFYs and %d RESUMEs resumed, want the first IDENTIFY and the spare's RESUME only", shard, identifies[shard], resumed[shard])
		}
	}
	if got := metric(spare, `gateway_discovery_shard_takeovers_total{how="resume"}`); got != crashShards {
		t.Errorf("the spare's take-overs by resume: %v, want %d", got, crashShards)
	}
	w.storedOnce(held)
}

// (4) A single instance without Consul keeps its checkpoints in
// SESSION_STATE_FILE: killed with SIGKILL and started again, it RESUMEs
// every shard, and every dispatch is stored exactly once, those it had read
// but not got acked before the kill among them.
func singleInstanceWithAStateFileResumesAfterKillAndRestart(t *testing.T, bin string) {
	state := filepath.Join(t.TempDir(), "sessions.json")
	w := startCrashWorld(t, bin, crashOptions{env: map[string]string{"SESSION_STATE_FILE": state, "CHECKPOINT_INTERVAL": "1s"}})
	first := w.startLocal()
	waitFor(t, "the instance running its pool", 60*time.Second, func() bool { return running(first, "") })
	time.Sleep(2 * time.Second)

	held := w.holdAcks(first, 10)
	first.signal(syscall.SIGKILL)
	<-first.exited
	w.f.ns.Start()
	again := w.startLocal()
	waitFor(t, "the restarted instance running its pool", 60*time.Second, func() bool { return running(again, "") })
	time.Sleep(2 * time.Second)
	w.settle(again)

	identifies, resumed := identifiesAndResumes(w.f.sim.Record())
	for shard := range crashShards {
		if identifies[shard] != 1 || resumed[shard] != 1 {
			t.Errorf("shard %d: %d IDENTIFYs and %d RESUMEs resumed, want the first IDENTIFY and the restart's RESUME only", shard, identifies[shard], resumed[shard])
		}
	}
	w.storedOnce(held)

	// A clean stop (SIGTERM: drain) writes the final records: the next
	// start RESUMEs from where the drain left, replaying nothing.
	w.f.sim.SetEventRate(20)
	time.Sleep(time.Second)
	w.settle(again) // quiet, so that nothing is sent while no instance runs
	again.signal(syscall.SIGTERM)
	<-again.exited
	third := w.startLocal()
	waitFor(t, "the instance started after the drain running its pool", 60*time.Second, func() bool { return running(third, "") })
	rec := w.f.sim.Record()
	identifies, resumed = identifiesAndResumes(rec)
	for shard := range crashShards {
		if identifies[shard] != 1 || resumed[shard] != 2 {
			t.Errorf("shard %d after the drain and a start: %d IDENTIFYs and %d RESUMEs resumed, want 1 and 2", shard, identifies[shard], resumed[shard])
		}
	}
	if last := rec.Resumes[len(rec.Resumes)-1]; last.Replayed != 0 {
		t.Errorf("the RESUME after the drain replayed %d dispatches, want none (the drain's records carry the last acked seq)", last.Replayed)
	}
	w.storedOnce(nil)
}

// recordWatch follows pool 0's hand-off keys in Consul with blocking
// queries and notes every version it sees.
type recordWatch struct {
	mu       sync.Mutex
	versions []recordVersion
	stop     chan struct{}
	done     chan struct{}
}

type recordVersion struct {
	at      time.Time
	records map[int]shard.Handoff
}

func (w *crashWorld) watchRecords() *recordWatch {
	rw := &recordWatch{stop: make(chan struct{}), done: make(chan struct{})}
	kv := w.f.consul.Client().KV()
	go func() {
		defer close(rw.done)
		var index uint64
		for {
			select {
			case <-rw.stop:
				return
			default:
			}
			pairs, meta, err := kv.List("crash/handoff/", &api.QueryOptions{WaitIndex: index, WaitTime: time.Second})
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			index = meta.LastIndex
			v := recordVersion{at: time.Now(), records: map[int]shard.Handoff{}}
			for _, p := range pairs {
				var h shard.Handoff
				id, err := strconv.Atoi(p.Key[strings.LastIndex(p.Key, "/")+1:])
				if err == nil && json.Unmarshal(p.Value, &h) == nil {
					v.records[id] = h
				}
			}
			rw.mu.Lock()
			rw.versions = append(rw.versions, v)
			rw.mu.Unlock()
		}
	}()
	return rw
}

func (rw *recordWatch) end() []recordVersion {
	close(rw.stop)
	<-rw.done
	return rw.versions
}

// (2) The owner is frozen (SIGSTOP) past its session TTL: the spare takes
// the pool and RESUMEs its sessions, which ends the frozen owner's
// connections at Discord. Continued (SIGCONT), the old owner fences: it
// never writes a record again (no record goes back to an older seq, its
// checkpoint writes stay where they were), it opens no connection, and
// every dispatch is stored exactly once.
func frozenOwnerNeverWritesAgainAfterTheSpareResumedItsSessions(t *testing.T, bin string) {
	w := startCrashWorld(t, bin, crashOptions{consul: true, env: map[string]string{"CHECKPOINT_INTERVAL": "1s"}})
	owner := w.f.start()
	waitFor(t, "the owner running its pool", 60*time.Second, func() bool { return running(owner, discovery.RoleOwner) })
	spare := w.f.start()
	waitFor(t, "the spare", 60*time.Second, func() bool { return spare.role() == discovery.RoleSpare })
	time.Sleep(2 * time.Second)
	watch := w.watchRecords()

	okBefore := metric(owner, `gateway_session_checkpoint_writes_total{result="ok"}`)
	scraped := time.Now()
	owner.signal(syscall.SIGSTOP)
	frozen := time.Now()
	waitFor(t, "the spare running the pool", 60*time.Second, func() bool { return running(spare, discovery.RoleOwner) })
	took := time.Now()
	time.Sleep(2 * time.Second) // the successor checkpoints past the frozen owner's seqs
	owner.signal(syscall.SIGCONT)
	continued := time.Now()
	waitFor(t, "the old owner fenced, then a spare again", 60*time.Second, func() bool { return owner.role() == discovery.RoleSpare })
	time.Sleep(2 * time.Second) // time for a stale write to land
	w.settle(spare)
	versions := watch.end()
	t.Logf("frozen for %v; the spare ran the pool %v after the freeze", continued.Sub(frozen).Round(time.Millisecond), took.Sub(frozen).Round(time.Millisecond))

	// No record ever went back: a stale owner's write would carry the
	// seq it had when frozen, below what the successor wrote since.
	last := map[int]shard.Handoff{}
	for _, v := range versions {
		for id, h := range v.records {
			if prev, ok := last[id]; ok && prev.SessionID == h.SessionID && h.Seq < prev.Seq {
				t.Errorf("shard %d's record went back from seq %d to %d at %v (the owner continued at %v)", id, prev.Seq, h.Seq, v.at, continued)
			}
			last[id] = h
		}
	}
	okAfter := metric(owner, `gateway_session_checkpoint_writes_total{result="ok"}`)
	raced := false // a write between the scrape and the freeze
	for _, v := range versions {
		raced = raced || (v.at.After(scraped) && !v.at.After(frozen.Add(100*time.Millisecond)))
	}
	if okAfter != okBefore && !(raced && okAfter == okBefore+1) {
		t.Errorf("the old owner's successful checkpoint writes went from %v to %v after it was frozen", okBefore, okAfter)
	}
	t.Logf("the old owner's checkpoint writes refused after SIGCONT: %v", metric(owner, `gateway_session_checkpoint_writes_total{result="refused"}`))

	rec := w.f.sim.Record()
	for _, sc := range rec.ShardConns {
		if sc.Label == owner.name && sc.Claimed.After(frozen) {
			t.Errorf("the old owner claimed shard %d again at %v (continued at %v)", sc.Shard, sc.Claimed, continued)
		}
	}
	identifies, resumed := identifiesAndResumes(rec)
	for shard := range crashShards {
		if identifies[shard] != 1 || resumed[shard] != 1 {
			t.Errorf("shard %d: %d IDENTIFYs and %d RESUMEs resumed, want the first IDENTIFY and the spare's RESUME only", shard, identifies[shard], resumed[shard])
		}
		if h, si := last[shard], w.session(shard); h.SessionID != si.ID {
			t.Errorf("shard %d's record names session %s, want the live one %s", shard, h.SessionID, si.ID)
		}
	}
	w.storedOnce(nil)
}

// (3) A record Discord no longer honours (the killed owner's sessions
// expired before the spare took over) costs each shard one RESUME answered
// by op 9 and one IDENTIFY, not a loop.
func recordDiscordNoLongerHonoursCostsOneIdentify(t *testing.T, bin string) {
	w := startCrashWorld(t, bin, crashOptions{consul: true, sim: discordsim.Config{SessionTimeout: 2 * time.Second}, env: map[string]string{"CHECKPOINT_INTERVAL": "1s"}})
	owner := w.f.start()
	waitFor(t, "the owner running its pool", 60*time.Second, func() bool { return running(owner, discovery.RoleOwner) })
	spare := w.f.start()
	waitFor(t, "the spare", 60*time.Second, func() bool { return spare.role() == discovery.RoleSpare })
	time.Sleep(2 * time.Second)

	owner.signal(syscall.SIGKILL)
	<-owner.exited
	waitFor(t, "the spare running the pool", 60*time.Second, func() bool { return running(spare, discovery.RoleOwner) })
	time.Sleep(4 * time.Second) // a loop would show by now
	rec := w.f.sim.Record()
	identifies := map[int]int{}
	for _, id := range rec.Identifies {
		identifies[id.Shard]++
	}
	refused := map[int]int{}
	for _, rs := range rec.Resumes {
		if rs.Outcome != discordsim.ResumeInvalidSession {
			t.Errorf("resume %+v, want refused with op 9", rs)
		}
		refused[rs.Shard]++
	}
	for shard := range crashShards {
		if identifies[shard] != 2 || refused[shard] != 1 {
			t.Errorf("shard %d: %d IDENTIFYs and %d RESUMEs, want 2 (the first and the fallback) and 1", shard, identifies[shard], refused[shard])
		}
	}
	if got := metric(spare, `gateway_discovery_shard_takeovers_total{how="resume"}`); got != crashShards {
		t.Errorf("the spare's take-overs by resume: %v, want %d (tried)", got, crashShards)
	}
}

package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shardpool/gateway/internal/discordsim"
	"github.com/shardpool/gateway/service/event"
	"github.com/shardpool/gateway/service/shard"
)

// The verdicts of the fleet chaos run, from the simulator's records and the
// faults it injected.

// abandoningFaults take a session away from its instance without a hand-off:
// when the new owner identifies, what was written to the old connection after
// the instance stopped reading it is gone, as it would be with Discord. A
// session the new owner RESUMEs from a checkpoint is not abandoned: its last
// connection is the new owner's, and every dispatch of it must be stored
// (checkKills requires that RESUME after a kill).
var abandoningFaults = map[string]bool{"kill": true, "stop": true, "partition": true, "consul_restart": true}

// causeWindow is how long after a fault ended its consequences may still
// show (a fence, a take-over, the identifies that follow).
const causeWindow = 30 * time.Second

// blame returns the latest fault that hit instance label (or the whole
// fleet) and may explain something that happened at at, among kinds; nil
// if none.
func blame(events []*faultEvent, label string, at time.Time, kinds map[string]bool) *faultEvent {
	var found *faultEvent
	for _, ev := range events {
		if !kinds[ev.kind] || (ev.target != "" && ev.target != label) {
			continue
		}
		if ev.at.After(at.Add(2*time.Second)) || at.After(ev.ended().Add(causeWindow)) {
			continue
		}
		if found == nil || ev.at.After(found.at) {
			found = ev
		}
	}
	return found
}

// labels maps connection ids to the process that opened them.
func labels(rec discordsim.Record) map[int64]string {
	out := map[int64]string{}
	for _, sc := range rec.ShardConns {
		out[sc.ConnID] = sc.Label
	}
	return out
}

// checkRecord judges the overlaps and violations not judged yet, and looks
// for processes that exited on their own.
func (r *fleetRun) checkRecord(rec discordsim.Record) {
	for _, o := range rec.Overlaps() {
		key := fmt.Sprintf("overlap %d %d", o.Earlier.ConnID, o.Later.ConnID)
		if r.reported[key] {
			continue
		}
		r.reported[key] = true
		end := "still open"
		if !o.EarlierIsOpen {
			end = "ended " + r.since(o.Earlier.Ended) + " by " + o.Earlier.EndedBy
		}
		r.problem(fmt.Sprintf("OVERLAP: shard %d live on two connections for %v: conn %d of %s (claimed %s, %s) and conn %d of %s (claimed %s)",
			o.Shard, o.Duration.Round(time.Millisecond), o.Earlier.ConnID, o.Earlier.Label, r.since(o.Earlier.Claimed), end,
			o.Later.ConnID, o.Later.Label, r.since(o.Later.Claimed)))
	}
	names := labels(rec)
	for i, v := range rec.Violations {
		key := fmt.Sprintf("violation %d", i)
		if r.reported[key] {
			continue
		}
		r.reported[key] = true
		line := fmt.Sprintf("%s shard %d conn %d of %s at %s: %s", v.Kind, v.Shard, v.ConnID, names[v.ConnID], r.since(v.At), v.Detail)
		if why := r.excuse(v, names[v.ConnID]); why != "" {
			r.excusedViolations++
			r.logf("violation not counted (%s): %s", why, line)
			continue
		}
		r.problem("VIOLATION: " + line)
	}
	for _, p := range r.f.procs {
		if key := "exit " + p.name; p.exitedUnasked() && !r.reported[key] {
			r.reported[key] = true
			r.problem(fmt.Sprintf("%s exited on its own: %v\n%s", p.name, p.exitErr, p.logTail(30)))
		}
	}
}

func (r *fleetRun) problem(s string) {
	r.problems = append(r.problems, r.since(time.Now())+" "+s)
	r.logf("%s", s)
}

// excuse says why a violation is not the gateway's doing, or "": a frozen
// process misses its heartbeats (the simulator then closes its connection,
// as Discord would), and a stall of the test process (where the simulator
// stamps frames) can make a timely frame look late.
func (r *fleetRun) excuse(v discordsim.Violation, label string) string {
	if v.Kind != discordsim.ViolationHeartbeatLate && v.Kind != discordsim.ViolationIdentifyBucket {
		return ""
	}
	if v.Kind == discordsim.ViolationHeartbeatLate {
		from := v.At.Add(-fleetHeartbeat - fleetHeartbeatGrace - time.Second)
		for _, ev := range r.events {
			if ev.kind == "stop" && (ev.target == label || label == "") && !ev.at.After(v.At) && !ev.ended().Before(from) {
				return ev.target + " was stopped at " + r.since(ev.at)
			}
		}
	}
	m := violationGap.FindStringSubmatch(v.Detail)
	if m == nil {
		return ""
	}
	gap, err := time.ParseDuration(m[1])
	if err != nil {
		return ""
	}
	var excess, window time.Duration
	switch v.Kind {
	case discordsim.ViolationHeartbeatLate:
		excess, window = gap-(fleetHeartbeat+fleetHeartbeatGrace), gap
	case discordsim.ViolationIdentifyBucket:
		excess, window = fleetIdentifyWindow-fleetIdentifyTolerance-gap, fleetIdentifyWindow
	}
	if stall := r.probe.longest(v.At.Add(-window), v.At); excess > 0 && stall >= excess {
		return fmt.Sprintf("the test process stalled %v then", stall.Round(time.Millisecond))
	}
	return ""
}

// checkLedger is the exactly-once check of the single-instance chaos run,
// after the tails of the sessions a fault took away are set aside (counted
// by fault): the stored events of such a session must still be a prefix of
// what was written, a gap is a problem.
func (r *fleetRun) checkLedger(rec discordsim.Record, stored map[string]int) (ledgerCheck, map[string]int) {
	current := map[string]bool{}
	for sh := range fleetShards {
		current[r.f.sim.CurrentSession(sh)] = true
	}
	kept, excused := setAsideAbandonedTails(r.f.sim.Dispatches(), stored, func(sid string) string {
		if current[sid] {
			return ""
		}
		return abandonedBy(rec, r.events, sid)
	})
	return checkLedger(kept, rec, stored, r.start), excused
}

// abandonedBy names the fault that took session sid from the instance that
// last carried it, or "" when none explains its end.
func abandonedBy(rec discordsim.Record, events []*faultEvent, sid string) string {
	var last *discordsim.ShardConn
	for i, sc := range rec.ShardConns {
		if sc.SessionID == sid && (last == nil || sc.Claimed.After(last.Claimed)) {
			last = &rec.ShardConns[i]
		}
	}
	if last == nil {
		return ""
	}
	end := last.Ended
	if end.IsZero() {
		end = rec.At
	}
	if ev := blame(events, last.Label, end, abandoningFaults); ev != nil {
		return ev.kind
	}
	return ""
}

// setAsideAbandonedTails removes from the ledger the dispatches of every
// session that cause names a fault for, written after the last one stored,
// and counts them by cause.
func setAsideAbandonedTails(ledger []discordsim.SentDispatch, stored map[string]int, cause func(sid string) string) ([]discordsim.SentDispatch, map[string]int) {
	maxStored := map[string]int64{}
	for _, d := range ledger {
		if stored[event.ID(d.Shard, d.SessionID, d.Seq)] > 0 {
			maxStored[d.SessionID] = max(maxStored[d.SessionID], d.Seq)
		}
	}
	causes := map[string]string{}
	excused := map[string]int{}
	kept := make([]discordsim.SentDispatch, 0, len(ledger))
	for _, d := range ledger {
		c, ok := causes[d.SessionID]
		if !ok {
			c = cause(d.SessionID)
			causes[d.SessionID] = c
		}
		published := publishedTypes[d.Type] && d.Written
		if c != "" && published && d.Seq > maxStored[d.SessionID] && stored[event.ID(d.Shard, d.SessionID, d.Seq)] == 0 {
			excused[c]++
			continue
		}
		kept = append(kept, d)
	}
	return kept, excused
}

// drainVerdict sums up the rolling deploys.
type drainVerdict struct {
	drains, resumed, interfered int
	problems                    []string
}

// checkDrains checks that each drained shard's next claim was its
// successor's RESUME of the drained session, unless another fault came in
// between.
func (r *fleetRun) checkDrains(rec discordsim.Record) drainVerdict {
	var v drainVerdict
	others := map[string]bool{"kill": true, "stop": true, "partition": true, "consul_restart": true}
	for _, d := range r.drains {
		v.drains++
		for _, shard := range slices.Sorted(maps.Keys(d.sessions)) {
			next := firstClaimAfter(rec, shard, d.ev.at, d.proc)
			if next == nil {
				v.problems = append(v.problems, fmt.Sprintf("drain of %s at %s: shard %d never claimed again", d.proc, r.since(d.ev.at), shard))
				continue
			}
			if resumedOn(rec, next.ConnID, d.sessions[shard]) {
				v.resumed++
				continue
			}
			if ev := faultBetween(r.events, d.ev.at, next.Claimed, others); ev != nil {
				v.interfered++
				r.logf("drain of %s at %s: shard %d not resumed, %s at %s came in between", d.proc, r.since(d.ev.at), shard, ev.kind, r.since(ev.at))
				continue
			}
			v.problems = append(v.problems, fmt.Sprintf("drain of %s (pool %d) at %s: shard %d was next claimed by %s at %s without resuming session %s",
				d.proc, d.pool, r.since(d.ev.at), shard, next.Label, r.since(next.Claimed), short(d.sessions[shard])))
		}
	}
	r.problems = append(r.problems, v.problems...)
	return v
}

// firstClaimAfter is the first claim of shard after at by another process
// than the drained one.
func firstClaimAfter(rec discordsim.Record, shard int, at time.Time, not string) *discordsim.ShardConn {
	var first *discordsim.ShardConn
	for i, sc := range rec.ShardConns {
		if sc.Shard == shard && sc.Claimed.After(at) && sc.Label != not && (first == nil || sc.Claimed.Before(first.Claimed)) {
			first = &rec.ShardConns[i]
		}
	}
	return first
}

func resumedOn(rec discordsim.Record, conn int64, sid string) bool {
	for _, rs := range rec.Resumes {
		if rs.ConnID == conn && rs.SessionID == sid && rs.Outcome == discordsim.ResumeResumed {
			return true
		}
	}
	return false
}

func faultBetween(events []*faultEvent, from, to time.Time, kinds map[string]bool) *faultEvent {
	for _, ev := range events {
		if kinds[ev.kind] && !ev.at.Before(from) && !ev.at.After(to) {
			return ev
		}
	}
	return nil
}

// identifyCauses sorts every IDENTIFY by what made it necessary: the first
// of its shard, or the latest fault before it that hit the instance that
// ran the shard before (or the whole fleet), a NATS restart only when
// nothing else did (it should cause none); "unexplained" when nothing did.
func identifyCauses(rec discordsim.Record, events []*faultEvent) map[string]int {
	takers := map[string]bool{"kill": true, "stop": true, "partition": true, "consul_restart": true, "drain": true}
	nats := map[string]bool{"nats_restart": true}
	out := map[string]int{}
	for _, id := range rec.Identifies {
		if id.Shard < 0 {
			continue
		}
		cause := "first"
		if prev := previousClaim(rec, id.Shard, id.ConnID, id.At); prev != nil {
			cause = "unexplained"
			if ev := blame(events, prev.Label, id.At, takers); ev != nil {
				cause = ev.kind
			} else if ev := blame(events, prev.Label, id.At, nats); ev != nil {
				cause = ev.kind
			}
		}
		if id.Outcome != discordsim.IdentifyReady {
			cause += " (" + id.Outcome + ")"
		}
		out[cause]++
	}
	return out
}

// previousClaim is the shard's latest claim before at on another connection.
func previousClaim(rec discordsim.Record, shard int, conn int64, at time.Time) *discordsim.ShardConn {
	var prev *discordsim.ShardConn
	for i, sc := range rec.ShardConns {
		if sc.Shard == shard && sc.ConnID != conn && sc.Claimed.Before(at) && (prev == nil || sc.Claimed.After(prev.Claimed)) {
			prev = &rec.ShardConns[i]
		}
	}
	return prev
}

// Growth allowed between the baseline and the end, against the largest
// baseline of an instance in the same role with as many shards. The heap
// is read from outside, without forcing a collection: between two cycles it
// climbs from what is live (1-2 MiB) towards the runtime's 4 MiB minimum
// goal, so less than that is noise; a leak of a few KiB per fault shows in
// the goroutines, not here.
const (
	fleetGoroutineSlack = 10
	fleetHeapSlack      = 4 << 20 // plus half the baseline
)

// checkUsage compares every instance alive at the end with the baseline of
// its role; the survivors of the whole run are among them.
func (r *fleetRun) checkUsage(base, end map[string]procUsage) {
	type key struct {
		role   string
		shards int
	}
	ref := map[key]procUsage{}
	for _, u := range base {
		k := key{u.role, u.shards}
		ref[k] = procUsage{goroutines: max(ref[k].goroutines, u.goroutines), heap: max(ref[k].heap, u.heap)}
	}
	for _, name := range slices.Sorted(maps.Keys(end)) {
		u := end[name]
		b, ok := ref[key{u.role, u.shards}]
		if !ok {
			r.logf("usage of %s (%s, %d shards) not compared: no baseline in that role", name, u.role, u.shards)
			continue
		}
		if u.goroutines > b.goroutines+fleetGoroutineSlack {
			r.problem(fmt.Sprintf("goroutines of %s (%s): %d at the end, %d at the baseline (tolerance %d)", name, u.role, u.goroutines, b.goroutines, fleetGoroutineSlack))
		}
		if tol := b.heap/2 + fleetHeapSlack; u.heap > b.heap+tol {
			r.problem(fmt.Sprintf("heap of %s (%s): %s at the end, %s at the baseline (tolerance %s)", name, u.role, mib(int64(u.heap)), mib(int64(b.heap)), mib(int64(tol))))
		}
	}
}

// report prints the figures.
func (r *fleetRun) report(lc ledgerCheck, excused map[string]int, dv drainVerdict, rec discordsim.Record, base, end map[string]procUsage, dur time.Duration, seed uint64) {
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
	setAside := 0
	for _, n := range excused {
		setAside += n
	}
	lost := lc.expected - lc.present - lc.excusedTail - lc.excusedOrphan
	dups, overlaps := 0, 0
	for _, p := range lc.problems {
		if strings.HasPrefix(p, "duplicate:") {
			dups++
		}
	}
	for _, p := range r.problems {
		if strings.Contains(p, "OVERLAP:") {
			overlaps++
		}
	}
	started := len(r.f.procs)
	t.Logf("fleet chaos: seed %d, %v, %d shards in %d pools, %d processes started (%d at once)", seed, dur, fleetShards, fleetShards/fleetPerPool, started, fleetSize)
	t.Logf("fleet chaos: %d faults: %s", total, strings.Join(faults, ", "))
	t.Logf("fleet chaos: events: %d dispatches generated (dead sessions' included), %d written to a socket, %d to publish; %d in JetStream exactly once; lost %d, duplicated %d",
		lc.generated, lc.written+setAside, lc.expected+setAside, lc.present, lost, dups)
	t.Logf("fleet chaos: set aside (the tail of a session a fault took, written after its instance stopped reading): %d %v; excused as in the single-instance run: %d tail, %d orphan",
		setAside, sortedCounts(excused), lc.excusedTail, lc.excusedOrphan)
	t.Logf("fleet chaos: overlaps (a shard live on two connections): %d", overlaps)
	t.Logf("fleet chaos: identifies by cause: %v; resumes %v", sortedCounts(identifyCauses(rec, r.events)), sortedCounts(outcomes))
	t.Logf("fleet chaos: drains %d: %d shards resumed by the successor, %d with another fault in between, %d problems", dv.drains, dv.resumed, dv.interfered, len(dv.problems))
	t.Logf("fleet chaos: simulator: %d connections, %d violations (%d not counted: frozen process or stalled test)", rec.Connections, len(rec.Violations), r.excusedViolations)
	for _, name := range slices.Sorted(maps.Keys(end)) {
		b := "started after the baseline"
		if u, ok := base[name]; ok {
			b = u.String()
		}
		t.Logf("fleet chaos: %s baseline %s; end %s", name, b, end[name])
	}
	t.Logf("fleet chaos: %s", r.probe)
	t.Logf("fleet chaos: timeline (faults, claims, ends, violations): %s", r.writeTimeline(rec))
}

// writeTimeline writes the faults and every shard connection's claim, its
// IDENTIFY or RESUME and its end, in time order, to timeline.txt next to
// the instances' logs: the first place to look when a seed fails.
func (r *fleetRun) writeTimeline(rec discordsim.Record) string {
	type line struct {
		at   time.Time
		text string
	}
	var lines []line
	for _, ev := range r.events {
		target := ev.target
		if target == "" {
			target = "fleet"
		}
		lines = append(lines, line{ev.at, fmt.Sprintf("FAULT %s %s (shards %v)", ev.kind, target, ev.shards)})
		if !ev.until.IsZero() && ev.until.After(ev.at) {
			lines = append(lines, line{ev.until, fmt.Sprintf("FAULT %s %s over", ev.kind, target)})
		}
	}
	how := map[int64]string{}
	for _, id := range rec.Identifies {
		how[id.ConnID] = "IDENTIFY " + id.Outcome
	}
	for _, rs := range rec.Resumes {
		how[rs.ConnID] = fmt.Sprintf("RESUME %s seq %d %s", short(rs.SessionID), rs.Seq, rs.Outcome)
	}
	for _, sc := range rec.ShardConns {
		lines = append(lines, line{sc.Claimed, fmt.Sprintf("shard %d conn %d %s: %s, session %s", sc.Shard, sc.ConnID, sc.Label, how[sc.ConnID], short(sc.SessionID))})
		if !sc.Ended.IsZero() {
			lines = append(lines, line{sc.Ended, fmt.Sprintf("shard %d conn %d %s: ended (%s)", sc.Shard, sc.ConnID, sc.Label, sc.EndedBy)})
		}
	}
	for _, v := range rec.Violations {
		lines = append(lines, line{v.At, fmt.Sprintf("VIOLATION %s shard %d conn %d: %s", v.Kind, v.Shard, v.ConnID, v.Detail)})
	}
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].at.Before(lines[j].at) })
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "%s %s\n", r.since(l.at), l.text)
	}
	b.WriteString("\nfault log:\n" + strings.Join(r.log, "\n") + "\n")
	path := filepath.Join(r.f.dir, "timeline.txt")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		r.t.Errorf("timeline: %v", err)
	}
	return path
}

func sortedCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// The verdicts of the fleet chaos run on made-up records: only a fault that
// takes a session away excuses losing its tail, a drain must be followed
// by its successor's RESUME, and every IDENTIFY has a cause.
func TestFleetVerdictsOnMadeUpRecords(t *testing.T) {
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	conn := func(id int64, label, sid string, claimed, ended int) discordsim.ShardConn {
		sc := discordsim.ShardConn{ConnID: id, Label: label, SessionID: sid, Claimed: at(claimed)}
		if ended >= 0 {
			sc.Ended = at(ended)
		}
		return sc
	}
	kill := &faultEvent{kind: "kill", target: "gw1", at: at(1000), until: at(1000)}
	drain := &faultEvent{kind: "drain", target: "gw1", at: at(1000), until: at(1200)}
	restart := &faultEvent{kind: "consul_restart", at: at(1000), until: at(1300)}
	old := &faultEvent{kind: "kill", target: "gw1", at: at(-60000), until: at(-60000)}

	t.Run("abandoned by", func(t *testing.T) {
		rec := discordsim.Record{ShardConns: []discordsim.ShardConn{conn(1, "gw1", "s", 0, 1050)}, At: at(5000)}
		for _, tc := range []struct {
			name   string
			events []*faultEvent
			want   string
		}{
			{"its instance killed", []*faultEvent{kill}, "kill"},
			{"the whole fleet's Consul restarted", []*faultEvent{restart}, "consul_restart"},
			{"a drain hands over, it does not abandon", []*faultEvent{drain}, ""},
			{"another instance killed", []*faultEvent{{kind: "kill", target: "gw2", at: at(1000), until: at(1000)}}, ""},
			{"a fault long over", []*faultEvent{old}, ""},
			{"no fault", nil, ""},
		} {
			if got := abandonedBy(rec, tc.events, "s"); got != tc.want {
				t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
			}
		}
	})

	t.Run("tails set aside", func(t *testing.T) {
		ledger := func(sid string, seqs ...int64) []discordsim.SentDispatch {
			var out []discordsim.SentDispatch
			for _, s := range seqs {
				out = append(out, discordsim.SentDispatch{SessionID: sid, Seq: s, Type: "GUILD_MEMBER_ADD", Written: true})
			}
			return out
		}
		stored := func(sid string, seqs ...int64) map[string]int {
			m := map[string]int{}
			for _, s := range seqs {
				m[event.ID(0, sid, s)] = 1
			}
			return m
		}
		killed := func(string) string { return "kill" }
		none := func(string) string { return "" }
		for _, tc := range []struct {
			name        string
			ledger      []discordsim.SentDispatch
			stored      map[string]int
			cause       func(string) string
			kept, aside int
		}{
			{"the tail after the last stored", ledger("s", 1, 2, 3, 4, 5), stored("s", 1, 2), killed, 2, 3},
			{"a gap stays, to be a problem", ledger("s", 1, 2, 3, 4), stored("s", 1, 3), killed, 3, 1},
			{"nothing without a cause", ledger("s", 1, 2, 3), stored("s", 1), none, 3, 0},
			{"unwritten ones are not counted", append(ledger("s", 1), discordsim.SentDispatch{SessionID: "s", Seq: 2, Type: "GUILD_MEMBER_ADD"}), stored("s", 1), killed, 2, 0},
		} {
			kept, aside := setAsideAbandonedTails(tc.ledger, tc.stored, tc.cause)
			if len(kept) != tc.kept || aside["kill"] != tc.aside {
				t.Errorf("%s: kept %d, set aside %v; want %d, %d", tc.name, len(kept), aside, tc.kept, tc.aside)
			}
		}
	})

	t.Run("identify causes", func(t *testing.T) {
		rec := discordsim.Record{
			ShardConns: []discordsim.ShardConn{
				conn(1, "gw1", "a", 0, 1000), conn(2, "gw2", "b", 9000, -1), // gw1 killed, gw2 takes over
				conn(3, "gw3", "c", 0, 500), conn(4, "gw3", "d", 600, -1), // shard 1: nothing explains it
			},
			Identifies: []discordsim.Identify{
				{Shard: 0, ConnID: 1, At: at(0), Outcome: discordsim.IdentifyReady},
				{Shard: 0, ConnID: 2, At: at(9000), Outcome: discordsim.IdentifyReady},
				{Shard: 1, ConnID: 3, At: at(0), Outcome: discordsim.IdentifyReady},
				{Shard: 1, ConnID: 4, At: at(600), Outcome: discordsim.IdentifyRateLimited},
			},
		}
		rec.ShardConns[2].Shard, rec.ShardConns[3].Shard = 1, 1
		got := sortedCounts(identifyCauses(rec, []*faultEvent{kill}))
		if want := "{first 2, kill 1, unexplained (rate_limited) 1}"; got != want {
			t.Errorf("causes %s, want %s", got, want)
		}
	})

	t.Run("kills", func(t *testing.T) {
		ev := &faultEvent{kind: "kill", target: "gw1", at: at(1000), until: at(1000), shards: []int{0, 1}}
		k := &killEvent{ev: ev, proc: "gw1", sessions: map[int]string{0: "a"}} // shard 1 had no checkpoint yet
		resumed := discordsim.Record{
			ShardConns: []discordsim.ShardConn{conn(1, "gw1", "a", 0, 1000), conn(2, "gw2", "a", 9000, -1)},
			Resumes:    []discordsim.Resume{{Shard: 0, SessionID: "a", ConnID: 2, Outcome: discordsim.ResumeResumed}},
		}
		identified := discordsim.Record{
			ShardConns: []discordsim.ShardConn{conn(1, "gw1", "a", 0, 1000), conn(2, "gw2", "b", 9000, -1)},
		}
		for _, tc := range []struct {
			name                                     string
			rec                                      discordsim.Record
			events                                   []*faultEvent
			resumed, interfered, unrecorded, problem int
		}{
			{"successor resumed the checkpoint", resumed, []*faultEvent{ev}, 1, 0, 1, 0},
			{"successor identified a checkpointed shard", identified, []*faultEvent{ev}, 0, 0, 1, 1},
			{"identified after a Consul restart in between", identified, []*faultEvent{ev, {kind: "consul_restart", at: at(3000), until: at(3300)}}, 0, 1, 1, 0},
		} {
			r := &fleetRun{t: t, start: t0, kills: []*killEvent{k}, events: tc.events}
			v := r.checkKills(tc.rec)
			if v.resumed != tc.resumed || v.interfered != tc.interfered || v.unrecorded != tc.unrecorded || len(v.problems) != tc.problem {
				t.Errorf("%s: %+v; want %d resumed, %d interfered, %d unrecorded, %d problems", tc.name, v, tc.resumed, tc.interfered, tc.unrecorded, tc.problem)
			}
		}

		// A session live on the killed process for two intervals without a
		// checkpoint is a problem, unless Consul lost its records meanwhile.
		bare := &killEvent{ev: ev, proc: "gw1", sessions: map[int]string{0: "a"}, bare: map[int]time.Duration{1: 12 * time.Second}}
		restart := &faultEvent{kind: "consul_restart", at: at(-3000), until: at(-2800)}
		for _, tc := range []struct {
			name    string
			events  []*faultEvent
			problem int
		}{
			{"no checkpoint for 12 s", []*faultEvent{ev}, 1},
			{"no checkpoint since a Consul restart", []*faultEvent{restart, ev}, 0},
		} {
			r := &fleetRun{t: t, start: t0, kills: []*killEvent{bare}, events: tc.events}
			if v := r.checkKills(resumed); len(v.problems) != tc.problem {
				t.Errorf("%s: problems %v, want %d", tc.name, v.problems, tc.problem)
			}
		}
	})

	t.Run("drains", func(t *testing.T) {
		d := &drainEvent{ev: drain, proc: "gw1", pool: 0, sessions: map[int]string{0: "a"}}
		resumed := discordsim.Record{
			ShardConns: []discordsim.ShardConn{conn(1, "gw1", "a", 0, 1100), conn(2, "gw2", "a", 2000, -1)},
			Resumes:    []discordsim.Resume{{Shard: 0, SessionID: "a", ConnID: 2, Outcome: discordsim.ResumeResumed}},
		}
		identified := discordsim.Record{
			ShardConns: []discordsim.ShardConn{conn(1, "gw1", "a", 0, 1100), conn(2, "gw2", "b", 2000, -1)},
		}
		for _, tc := range []struct {
			name                         string
			rec                          discordsim.Record
			events                       []*faultEvent
			resumed, interfered, problem int
		}{
			{"successor resumed", resumed, []*faultEvent{drain}, 1, 0, 0},
			{"successor identified", identified, []*faultEvent{drain}, 0, 0, 1},
			{"identified after a Consul restart in between", identified, []*faultEvent{drain, {kind: "consul_restart", at: at(1500), until: at(1800)}}, 0, 1, 0},
		} {
			r := &fleetRun{t: t, start: t0, drains: []*drainEvent{d}, events: tc.events}
			v := r.checkDrains(tc.rec)
			if v.resumed != tc.resumed || v.interfered != tc.interfered || len(v.problems) != tc.problem {
				t.Errorf("%s: %+v; want %d resumed, %d interfered, %d problems", tc.name, v, tc.resumed, tc.interfered, tc.problem)
			}
		}
	})
}

// killEvent is the SIGKILL of an owner: its shards' sessions that had a
// checkpoint must be RESUMEd by the successor.
type killEvent struct {
	ev       *faultEvent
	proc     string
	sessions map[int]string // shard → its live session, checkpointed in Consul when killed
	// Shards whose session was live on the process without a checkpoint,
	// and how long since the session was claimed on it.
	bare map[int]time.Duration
}

// checkpointed returns, of shards, those whose session (one Discord still
// resumes) has a checkpoint in Consul now, and those whose session is live
// on proc without one, with how long it has been.
func (r *fleetRun) checkpointed(proc string, shards []int) (map[int]string, map[int]time.Duration) {
	out, bare := map[int]string{}, map[int]time.Duration{}
	pairs, _, err := r.f.consul.Client().KV().List("fleet-chaos/handoff/", nil)
	if err != nil {
		r.logf("kill: cannot read the checkpoints: %v", err)
		return out, bare
	}
	saved := map[int]string{}
	for _, p := range pairs {
		var h shard.Handoff
		id, err := strconv.Atoi(p.Key[strings.LastIndex(p.Key, "/")+1:])
		if err == nil && json.Unmarshal(p.Value, &h) == nil {
			saved[id] = h.SessionID
		}
	}
	live := map[int]discordsim.ShardConn{} // shard → its open connection on proc
	for _, sc := range r.f.sim.Record().ShardConns {
		if sc.Label == proc && sc.Ended.IsZero() {
			live[sc.Shard] = sc
		}
	}
	ended := map[string]bool{} // Discord no longer resumes them: nothing to require
	for _, si := range r.f.sim.Sessions() {
		ended[si.ID] = si.Invalid
	}
	for _, id := range shards {
		sid := r.f.sim.CurrentSession(id)
		switch sc, ok := live[id]; {
		case sid != "" && saved[id] == sid && !ended[sid]:
			out[id] = sid
		case ok && sc.SessionID == sid:
			bare[id] = time.Since(sc.Claimed)
		}
	}
	return out, bare
}

// fleetCheckpointInterval is CHECKPOINT_INTERVAL's default, which the run
// keeps.
const fleetCheckpointInterval = 5 * time.Second

// killVerdict sums up the kills.
type killVerdict struct {
	kills, shards, resumed, interfered, unrecorded int
	bare                                           []string // live sessions without a checkpoint: how long they had run
	problems                                       []string
}

// checkKills checks that each killed owner's checkpointed session was next
// claimed by its successor's RESUME, unless another fault came in between;
// a shard without a checkpoint yet (killed within moments of its IDENTIFY,
// before the checkpoint that follows it) identifies, and is counted.
func (r *fleetRun) checkKills(rec discordsim.Record) killVerdict {
	var v killVerdict
	others := map[string]bool{"kill": true, "stop": true, "partition": true, "consul_restart": true}
	for _, k := range r.kills {
		v.kills++
		for _, shard := range k.ev.shards {
			v.shards++
			sid, ok := k.sessions[shard]
			if !ok {
				v.unrecorded++
				if d, live := k.bare[shard]; live {
					v.bare = append(v.bare, d.Round(time.Millisecond).String())
					// A new session is saved within a tenth of the
					// interval; two intervals without one is a bug,
					// unless Consul lost or could not take it.
					wiped := map[string]bool{"consul_restart": true, "partition": true}
					if d > 2*fleetCheckpointInterval && faultBetween(r.events, k.ev.at.Add(-d), k.ev.at, wiped) == nil {
						v.problems = append(v.problems, fmt.Sprintf("kill of %s at %s: shard %d's session had run %v on it without a checkpoint", k.proc, r.since(k.ev.at), shard, d.Round(time.Millisecond)))
					}
				}
				continue
			}
			next := firstClaimAfter(rec, shard, k.ev.at, k.proc)
			if next != nil && resumedOn(rec, next.ConnID, sid) {
				v.resumed++
				continue
			}
			to := rec.At
			if next != nil {
				to = next.Claimed
			}
			if ev := faultBetween(r.events, k.ev.at.Add(time.Nanosecond), to, others); ev != nil {
				v.interfered++
				r.logf("kill of %s at %s: shard %d not resumed, %s at %s came in between", k.proc, r.since(k.ev.at), shard, ev.kind, r.since(ev.at))
				continue
			}
			how := "never claimed again"
			if next != nil {
				how = fmt.Sprintf("next claimed by %s at %s without resuming it", next.Label, r.since(next.Claimed))
			}
			v.problems = append(v.problems, fmt.Sprintf("kill of %s at %s: shard %d's checkpointed session %s was %s", k.proc, r.since(k.ev.at), shard, short(sid), how))
		}
	}
	r.problems = append(r.problems, v.problems...)
	return v
}

func (r *fleetRun) reportKills(v killVerdict) {
	r.t.Logf("fleet chaos: kills %d (%d shards): %d resumed by the successor from a checkpoint, %d with another fault in between, %d without a checkpoint (identified; of them live on the killed process without one, claimed this long before the kill: %v; the others were not connected yet), %d problems",
		v.kills, v.shards, v.resumed, v.interfered, v.unrecorded, v.bare, len(v.problems))
	// The Consul writes checkpoints add, per instance alive at the end
	// (over its whole life: spare time included).
	for _, p := range r.f.live() {
		writes, records := checkpointWrites(p)
		life := time.Since(p.started).Seconds()
		r.t.Logf("fleet chaos: checkpoints of %s (%s): %.0f transactions (%.3f/s), %.0f records (%.3f/s) in %.0f s; refused %.0f, failed %.0f",
			p.name, p.role(), writes, writes/life, records, records/life, life,
			metric(p, `gateway_session_checkpoint_writes_total{result="refused"}`), metric(p, `gateway_session_checkpoint_writes_total{result="failed"}`))
	}
}

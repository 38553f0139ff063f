package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/shardpool/gateway/discovery"
	"github.com/shardpool/gateway/service/event"
)

// handoverWorld is one instance's generations during a hand-over to
// generation 2 at instant at: the event hooks of generation 1 (old) and 2
// (new) judged against the same dispatches.
type handoverWorld struct {
	t        *testing.T
	g        *fleetGens
	at       time.Time
	old, new func(ev *event.Event, session, t string, d []byte) *event.Event
}

func newHandoverWorld(t *testing.T) *handoverWorld {
	at := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	m := &Main{Config: Config{ReshardHandoverTimeout: 30 * time.Second}}
	g := &fleetGens{m: m, metrics: newReshardMetrics(nil)}
	g.plans = discovery.Plans{Current: discovery.Plan{TotalShards: 4, ShardsPerPool: 4, Generation: 1}}
	g.overlap.begin(at.Add(-time.Minute), at.Add(-time.Minute))
	g.settleContentIDs(at.Add(-time.Minute), g.runningSessions) // no shards: every session is new
	g.handover = &handover{to: 2, at: at, deadline: at.Add(30 * time.Second), sessions: map[int]*sessionHandover{}}
	m.gens = g
	m.plan.fleet.Generation = 1
	old := m.rewriteEvent()
	m.plan.fleet.Generation = 2
	return &handoverWorld{t: t, g: g, at: at, old: old, new: m.rewriteEvent()}
}

// snowflakeAt is a snowflake created at t.
func snowflakeAt(t time.Time, n int) string {
	return fmt.Sprint(uint64(t.UnixMilli()-1420070400000)<<22 | uint64(n))
}

// dispatch is one guild dispatch as both generations receive it.
type dispatch struct {
	t string
	d []byte
}

func interaction(guild string, created time.Time, n int) dispatch {
	return dispatch{"INTERACTION_CREATE", []byte(`{"id":"` + snowflakeAt(created, n) + `","type":2,"guild_id":"` + guild + `","channel_id":"5","member":{"user":{"id":"7"}}}`)}
}

func memberUpdate(guild string) dispatch {
	return dispatch{"GUILD_MEMBER_UPDATE", []byte(`{"guild_id":"` + guild + `","user":{"id":"7"},"roles":[]}`)}
}

// published feeds the dispatches in order to one session of hook and says
// which were published.
func (w *handoverWorld) published(hook func(ev *event.Event, session, t string, d []byte) *event.Event, shardID int, ds []dispatch) []bool {
	var out []bool
	for i, d := range ds {
		ev, ok, err := event.Build(shardID, fmt.Sprintf("session-%d", shardID), int64(i+1), d.t, d.d, w.at.Add(time.Duration(i)*time.Second))
		if err != nil || !ok {
			w.t.Fatalf("build %s: %v %v", d.t, ok, err)
		}
		out = append(out, hook(ev, fmt.Sprintf("session-%d", shardID), d.t, d.d) != nil)
	}
	return out
}

func TestHandoverPublishesEachKeylessDispatchInExactlyOneGeneration(t *testing.T) {
	w := newHandoverWorld(t)
	g := "81384788765712384"
	ds := []dispatch{
		memberUpdate(g), // before the point: the old generation's
		interaction(g, w.at.Add(-time.Second), 1), // created before the instant: not the point
		memberUpdate(g),
		interaction(g, w.at.Add(time.Second), 2), // the point: keyed, both publish it under one id
		memberUpdate(g),                          // after the point: the new generation's
		memberUpdate(g),
	}
	old := w.published(w.old, 0, ds) // shard 0 of 4
	new := w.published(w.new, 4, ds) // shard 4 of 8: another shard id, the same guild
	for i := range ds {
		keyed := event.HasContentKey(ds[i].t)
		switch {
		case keyed && (!old[i] || !new[i]):
			t.Errorf("dispatch %d (%s): a keyed dispatch is published by both (old %v, new %v)", i, ds[i].t, old[i], new[i])
		case !keyed && old[i] == new[i]:
			t.Errorf("dispatch %d (%s): published by old %v and new %v; want exactly one", i, ds[i].t, old[i], new[i])
		}
	}
	if !old[0] || !old[2] || !new[4] || !new[5] {
		t.Errorf("old %v new %v: the old generation publishes before the point, the new one after", old, new)
	}
}

func TestWithoutAHandoverTheNextGenerationLeavesKeylessDispatchesToThePlanInForce(t *testing.T) {
	w := newHandoverWorld(t)
	w.g.handover = nil
	g := "81384788765712384"
	ds := []dispatch{memberUpdate(g), interaction(g, w.at, 1)}
	if old := w.published(w.old, 0, ds); !old[0] || !old[1] {
		t.Errorf("the generation in force published %v, want both", old)
	}
	if new := w.published(w.new, 4, ds); new[0] || !new[1] {
		t.Errorf("the next generation published %v, want only the keyed one", new)
	}
}

// seqWorld is one instance's event hook and overlap, for the event id of
// one dispatch received twice: first, and again as a RESUME's replay.
type seqWorld struct {
	t    *testing.T
	g    *fleetGens
	hook func(ev *event.Event, session, t string, d []byte) *event.Event
	now  time.Time
}

func newSeqWorld(t *testing.T) *seqWorld {
	m := &Main{Config: Config{ReshardHandoverTimeout: 30 * time.Second}}
	g := &fleetGens{m: m, metrics: newReshardMetrics(nil)}
	g.plans = discovery.Plans{Current: discovery.Plan{TotalShards: 4, ShardsPerPool: 4, Generation: 1}}
	m.gens = g
	m.plan.fleet.Generation = 1
	return &seqWorld{t: t, g: g, hook: m.rewriteEvent(), now: time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)}
}

// id is the event id the hook gives seq of session on shard 0, received
// now (a keyed dispatch: an interaction).
func (w *seqWorld) id(session string, seq int64) string {
	w.t.Helper()
	w.now = w.now.Add(time.Millisecond)
	d := interaction("81384788765712384", time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), int(seq)) // a replay is the same payload
	ev, ok, err := event.Build(0, session, seq, d.t, d.d, w.now)
	if err != nil || !ok {
		w.t.Fatalf("build: %v %v", ok, err)
	}
	ev = w.hook(ev, session, d.t, d.d)
	if ev == nil {
		w.t.Fatalf("seq %d of %s not published", seq, session)
	}
	return ev.ID
}

// contentID reports whether id is seq's content id rather than its
// (shard, session, seq) id.
func (w *seqWorld) contentID(session string, seq int64, id string) bool {
	ev, _, _ := event.Build(0, session, seq, "INTERACTION_CREATE", []byte(`{"id":"1","type":2}`), w.now)
	return id != ev.ID
}

// running is what the instance's shards report when it takes a snapshot.
func shardsReport(session string, acked, seen int64) func() map[sessionKey]sessionSeqs {
	return func() map[sessionKey]sessionSeqs {
		return map[sessionKey]sessionSeqs{{0, session}: {acked: acked, seen: seen}}
	}
}

func TestAReplayAfterTheOverlapBeganKeepsTheIDItWasFirstPublishedWith(t *testing.T) {
	w := newSeqWorld(t)
	first := map[int64]string{}
	for seq := int64(9); seq <= 11; seq++ {
		first[seq] = w.id("s", seq) // before the overlap: (shard, session, seq) ids
	}
	w.g.overlap.begin(w.now, w.now) // the instance sees the next generation
	w.g.settleContentIDs(w.now, shardsReport("s", 8, 11))
	w.now = w.now.Add(time.Minute) // the connection dropped; Discord replays 9..11 after a RESUME
	for seq := int64(9); seq <= 11; seq++ {
		if got := w.id("s", seq); got != first[seq] {
			t.Errorf("seq %d: replayed during the overlap with id %s, first published with %s: JetStream stores it twice", seq, got, first[seq])
		}
	}
	if id := w.id("s", 12); !w.contentID("s", 12, id) {
		t.Error("a seq received after the overlap began has no content id")
	}
	if id := w.id("s2", 1); !w.contentID("s2", 1, id) {
		t.Error("a session started after the overlap began has no content id")
	}
}

func TestADispatchJudgedWhileTheSnapshotIsTakenKeepsItsID(t *testing.T) {
	w := newSeqWorld(t)
	var during string
	w.g.overlap.begin(w.now, w.now)
	w.g.settleContentIDs(w.now, func() map[sessionKey]sessionSeqs {
		during = w.id("s", 20) // the read goroutine runs on while the shards are asked
		return shardsReport("s", 8, 10)()
	})
	if got := w.id("s", 20); got != during {
		t.Errorf("seq 20: %s during the snapshot, %s on replay", during, got)
	}
}

func TestAReplayAfterTheContentIDMarginKeepsItsContentID(t *testing.T) {
	w := newSeqWorld(t)
	w.g.overlap.begin(w.now, w.now)
	w.g.settleContentIDs(w.now, shardsReport("s", 8, 10))
	first := map[int64]string{}
	for seq := int64(11); seq <= 20; seq++ {
		first[seq] = w.id("s", seq) // during the overlap: content ids
	}
	w.g.overlap.end(w.now, true, time.Second)
	w.now = w.now.Add(2 * time.Second) // the margin passed
	w.g.settleContentIDs(w.now, shardsReport("s", 15, 20))
	for seq := int64(16); seq <= 20; seq++ { // Discord replays from the resume point
		if got := w.id("s", seq); got != first[seq] {
			t.Errorf("seq %d: replayed after the margin with id %s, first published with %s: JetStream stores it twice", seq, got, first[seq])
		}
	}
	if id := w.id("s", 21); w.contentID("s", 21, id) {
		t.Error("a seq received after the margin still has a content id")
	}
	if id := w.id("s", 10); w.contentID("s", 10, id) {
		t.Error("a seq received before the overlap gained a content id after it")
	}
}

func TestKeptContentIDsAreForgottenOnceTheResumePointPassedThem(t *testing.T) {
	w := newSeqWorld(t)
	w.g.overlap.begin(w.now, w.now)
	w.g.settleContentIDs(w.now, shardsReport("s", 8, 10))
	w.g.overlap.end(w.now, true, time.Second)
	w.now = w.now.Add(2 * time.Second)
	w.g.settleContentIDs(w.now, shardsReport("s", 15, 20)) // keeps 11..20
	w.g.settleContentIDs(w.now, shardsReport("s", 19, 25))
	if !w.g.overlap.ids.active.Load() {
		t.Fatal("seq 20 forgotten while a replay can still bring it")
	}
	w.g.settleContentIDs(w.now, shardsReport("s", 20, 25))
	if w.g.overlap.ids.active.Load() {
		t.Fatal("the resume point passed every kept seq, and events still take the mutex")
	}
}

// BenchmarkSeqIDs is the hook's decision per event, outside an overlap
// and during one (8 sessions noted).
func BenchmarkSeqIDs(b *testing.B) {
	var p seqIDs
	b.Run("outside", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			p.content(3, "session-3", int64(i))
		}
	})
	p.begin(func() map[sessionKey]sessionSeqs {
		out := map[sessionKey]sessionSeqs{}
		for s := 0; s < 8; s++ {
			out[sessionKey{s, fmt.Sprintf("session-%d", s)}] = sessionSeqs{seen: 100}
		}
		return out
	})
	b.Run("during", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			p.content(3, "session-3", int64(i))
		}
	})
}

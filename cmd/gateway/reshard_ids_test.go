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

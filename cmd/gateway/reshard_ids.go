package main

import (
	"time"

	"github.com/shardpool/gateway/service/event"
)

// The event ids of a resharding's overlap. While two generations run, a
// guild's dispatch reaches a session of each; JetStream must store one copy.
//
//   - A dispatch type with a content key (event.ContentID: an interaction, a
//     member joining, ...) gets the id derived from what it is, in both
//     generations, from the moment this instance saw the next generation
//     until RESHARD_ID_MARGIN after the overlap ended (and after this
//     instance's old sessions closed): both copies carry one Nats-Msg-Id
//     and the stream's duplicate_window drops the second.
//   - A type without one (a member leaving, a member update, a guild
//     joining or leaving: the same payload can be two events) keeps its
//     (shard, session, seq) id and is published by one generation only: the
//     generation in force (and an older one until its sessions close); a
//     next or aborted generation drops it. At the cut-over the new
//     generation starts publishing them as soon as it sees the cut-over,
//     and the old one stops when its sessions close, 300 ms after seeing
//     it (retireGrace): such events received in that moment by both
//     generations are stored twice, never lost (README: "Resharding").

// retireGrace is how long an old generation keeps serving after it saw the
// cut-over, so that the new one, seeing it at about the same time, already
// publishes the types without a content key when the old one stops.
const retireGrace = 300 * time.Millisecond

// rewriteEvent returns the shard's event hook for the pools of the
// generation the instance is joining (nil without Consul).
func (m *Main) rewriteEvent() func(ev *event.Event, t string, d []byte) *event.Event {
	if m.gens == nil {
		return nil
	}
	g, gen := m.gens, m.plan.fleet.Generation
	return func(ev *event.Event, t string, d []byte) *event.Event {
		if !g.overlap.contentIDs(ev.ReceivedAt) {
			return ev
		}
		if ok, err := event.UseContentID(ev, t, d); ok || err != nil {
			if ok {
				g.metrics.contentIDEvents.Inc()
			}
			return ev // err: a body not built by Build; its own id stays
		}
		if g.publishesUnkeyed(gen) {
			return ev
		}
		g.metrics.unkeyedSkipped.Inc()
		return nil
	}
}

// publishesUnkeyed reports whether generation gen publishes the dispatch
// types without a content key: the generation in force and older ones do,
// a next (or aborted) one does not.
func (g *fleetGens) publishesUnkeyed(gen int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return gen <= g.plans.Current.Generation
}

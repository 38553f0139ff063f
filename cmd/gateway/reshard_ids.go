package main

import (
	"strings"
	"sync"
	"time"

	"github.com/go-kit/log/level"

	"github.com/shardpool/gateway/discovery"
	"github.com/shardpool/gateway/service"
	"github.com/shardpool/gateway/service/event"
	"github.com/shardpool/gateway/service/shard"
)

// handoverLead is how far ahead the hand-over instant is written: every
// instance must know it before it comes (a Consul blocking query tells
// them within milliseconds).
const handoverLead = 2 * time.Second

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
//     (shard, session, seq) id and is published by exactly one generation.
//     Until the hand-over, the generation in force publishes it and the
//     next one drops it. Once every shard of the next generation is READY,
//     one instance writes the hand-over instant At (a moment ahead) into
//     the next plan; from then on each session finds each guild's
//     hand-over point, the guild's first dispatch whose content key is a
//     snowflake created at or after At (event.Handover): the old
//     generation publishes the guild's keyless dispatches before it, the
//     new one those after it. The old sessions close once they passed the
//     point of every guild they hold, or at At + RESHARD_HANDOVER_TIMEOUT;
//     guilds quiet until then are handed over at that deadline, where a
//     keyless dispatch may be stored twice or not at all.

// handover is this instance's side of the hand-over to generation to.
type handover struct {
	to       int
	at       time.Time
	deadline time.Time

	mu       sync.Mutex
	sessions map[int]*sessionHandover // by shard id
}

// sessionHandover is one shard's session's hand-over points.
type sessionHandover struct {
	session string
	points  *event.Handover
}

// of returns the hand-over points of shard's session (new ones for a new
// session).
func (h *handover) of(shardID int, session string) *event.Handover {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.sessions[shardID]
	if s == nil || s.session != session {
		s = &sessionHandover{session: session, points: event.NewHandover(h.at)}
		h.sessions[shardID] = s
	}
	return s.points
}

// passedAll reports whether sh's session passed the hand-over point of
// every guild it holds.
func (h *handover) passedAll(sh *shard.Shard) bool {
	h.mu.Lock()
	s := h.sessions[sh.ID()]
	h.mu.Unlock()
	return s != nil && s.points.PassedGuilds() >= sh.Guilds()
}

// rewriteEvent returns the shard's event hook for the pools of the
// generation the instance is joining (nil without Consul).
func (m *Main) rewriteEvent() func(ev *event.Event, session, t string, d []byte) *event.Event {
	if m.gens == nil {
		return nil
	}
	g, gen := m.gens, m.plan.fleet.Generation
	return func(ev *event.Event, session, t string, d []byte) *event.Event {
		if !g.overlap.contentIDs(ev.ReceivedAt) {
			return ev
		}
		keyed, err := event.UseContentID(ev, t, d)
		if keyed {
			g.metrics.contentIDEvents.Inc()
		}
		publish := g.publishesKeyless(gen, ev, session, t, d)
		if keyed || err != nil || publish {
			return ev // err: a body not built by Build; its own id stays
		}
		g.metrics.unkeyedSkipped.Inc()
		return nil
	}
}

// publishesKeyless reports whether generation gen publishes ev, should
// it have no content key, and feeds the hand-over points.
func (g *fleetGens) publishesKeyless(gen int, ev *event.Event, session, t string, d []byte) bool {
	g.mu.Lock()
	h, current := g.handover, g.plans.Current.Generation
	g.mu.Unlock()
	if h == nil || gen > h.to {
		return gen <= current // no hand-over: the generation in force publishes
	}
	points := h.of(ev.ShardID, session)
	if ev.ReceivedAt.After(h.deadline) {
		points.Settle()
	}
	// A copy: ev.GuildID lies in the event's pooled body, reused once the
	// event is acked, and Observe keeps the guild of a point in a map.
	points.Observe(ev.Seq, strings.Clone(ev.GuildID), t, d)
	after := points.After(ev.GuildID, ev.Seq)
	if gen == h.to {
		return after
	}
	return !after
}

// observeHandover starts this instance's side of a hand-over when the next
// plan names its instant.
func (g *fleetGens) observeHandover(p *discovery.Plan) {
	if p == nil || p.HandoverAt.IsZero() {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.handover != nil && g.handover.to >= p.Generation && g.handover.at.Equal(p.HandoverAt) {
		return
	}
	g.handover = &handover{to: p.Generation, at: p.HandoverAt, deadline: p.HandoverAt.Add(g.m.Config.ReshardHandoverTimeout),
		sessions: map[int]*sessionHandover{}}
	level.Info(g.m.logger).Log("msg", "reshard: hand-over scheduled", "generation", p.Generation,
		"at", p.HandoverAt.Format(time.RFC3339Nano), "deadline", g.handover.deadline.Format(time.RFC3339Nano))
}

// dropHandover forgets a hand-over to a generation that was aborted.
func (g *fleetGens) dropHandover(inForce int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.handover != nil && g.handover.to > inForce {
		g.handover = nil
	}
}

// awaitHandover holds an old generation's pool until each of its sessions
// passed every guild's hand-over point, or the deadline.
func (g *fleetGens) awaitHandover(pool *service.Pool) {
	g.mu.Lock()
	h := g.handover
	g.mu.Unlock()
	if h == nil {
		return
	}
	for time.Now().Before(h.deadline) {
		done := true
		for _, s := range pool.Shards() {
			done = done && (!s.Ready() || h.passedAll(s))
		}
		if done {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// overlapClock times the overlap: from the next generation's creation to
// the end of the old (or aborted) generation, plus the margin during which
// events keep their content ids.
type overlapClock struct {
	mu         sync.Mutex
	start      time.Time // plan-next created; zero when none
	contentEnd time.Time // content ids until then after an overlap
	last       time.Duration
}

func (c *overlapClock) begin(created, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if created.IsZero() || created.After(now) {
		created = now
	}
	c.start, c.contentEnd = created, time.Time{}
}

func (c *overlapClock) end(now time.Time, _ bool, margin time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.start.IsZero() {
		c.last = now.Sub(c.start)
	}
	c.start, c.contentEnd = time.Time{}, now.Add(margin)
}

// closed pushes the content-id margin out to margin after this instance's
// old sessions actually closed.
func (c *overlapClock) closed(now time.Time, margin time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if end := now.Add(margin); end.After(c.contentEnd) {
		c.contentEnd = end
	}
}

// contentIDs reports whether events must carry content-derived ids now.
func (c *overlapClock) contentIDs(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.start.IsZero() || now.Before(c.contentEnd)
}

// seconds is the current overlap's duration so far (0 without one), and
// the last one's.
func (c *overlapClock) seconds(now time.Time) (current, last float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.start.IsZero() {
		current = now.Sub(c.start).Seconds()
	}
	return current, c.last.Seconds()
}

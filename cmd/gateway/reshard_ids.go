package main

import (
	"strings"
	"sync"
	"sync/atomic"
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
		if !g.overlap.ids.content(ev.ShardID, session, ev.Seq) {
			return ev // as it was first published, should this be a replay
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
	ids seqIDs // which seqs carry content ids; settleContentIDs follows the clock

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

// contentIDs reports whether events received now carry content-derived
// ids; settleContentIDs makes seqIDs follow it.
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

// Content id or (shard, session, seq) id: decided per seq, not per
// receive time. A dispatch Discord replays after a RESUME gets a new
// receive time, and must get the id it was first published with, or
// JetStream stores it twice: one first published (unacked) just before
// the overlap began and replayed after it, or first published with its
// content id and replayed after the margin. So when content ids begin,
// the instance notes each running session's last seq (seqIDs.begin): a
// seq up to it keeps its (shard, session, seq) id through the overlap,
// a later seq or a session started since gets its content id. When they
// end it notes each session's last seq again (seqIDs.finish): the seqs
// between the two notes keep their content ids on a replay, until the
// session's resume point passed them (seqIDs.prune).
//
// A session that moves to another process during the overlap (a spare
// taking over a dead owner's pool from its hand-off record, a restart
// resuming from SESSION_STATE_FILE, a drain's successor) brings no note:
// the new process judges it by its own, where the session is one that
// started after the overlap began, so every seq gets its content id. Its
// replay of a keyed dispatch the old owner published, unacked, with its
// seq id just before the overlap began is then stored twice. A session
// that moves just after content ids ended is the same the other way
// round: no process kept its seqs, so a replay of one first published
// with its content id gets its seq id. Both need a keyed dispatch still
// unacked when its owner went, at one of the overlap's two edges; the
// fix would be the notes travelling in the hand-off record (service/shard
// and discovery, not done here).

// sessionKey names one shard's session.
type sessionKey struct {
	shard   int
	session string
}

// sessionSeqs is what a running session reports of its seqs: its resume
// point and the last seq it received.
type sessionSeqs struct{ acked, seen int64 }

// seqRange is the seqs after from, up to and including to.
type seqRange struct{ from, to int64 }

// seqIDs decides which (shard, session, seq) carries its content id.
// Outside an overlap, with nothing kept, an event costs one atomic load.
type seqIDs struct {
	active atomic.Bool // overlap or kept: content looks

	mu      sync.Mutex
	overlap bool                      // content ids for seqs after before's
	before  map[sessionKey]int64      // the last seq of each session when they began
	kept    map[sessionKey][]seqRange // content ids given in an overlap that ended
	judged  map[sessionKey]int64      // while a note is taken: the last seq judged
}

// content reports whether seq of shard's session carries its content id.
func (p *seqIDs) content(shard int, session string, seq int64) bool {
	if !p.active.Load() {
		return false
	}
	k := sessionKey{shard, session}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.judged != nil && seq > p.judged[k] {
		p.judged[k] = seq
	}
	if p.overlap && seq > p.before[k] { // a session absent from before: 0
		return true
	}
	for _, r := range p.kept[k] {
		if seq > r.from && seq <= r.to {
			return true
		}
	}
	return false
}

// begin starts content ids for the seqs after each running session's
// last one.
func (p *seqIDs) begin(running func() map[sessionKey]sessionSeqs) {
	p.mu.Lock()
	if p.overlap {
		p.mu.Unlock()
		return
	}
	p.active.Store(true)
	p.mu.Unlock()
	before := p.note(running)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.overlap, p.before = true, before
}

// finish ends content ids, but for the seqs that got them so far.
func (p *seqIDs) finish(running func() map[sessionKey]sessionSeqs) {
	p.mu.Lock()
	overlap := p.overlap
	p.mu.Unlock()
	if !overlap {
		return
	}
	last := p.note(running)
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, to := range last {
		if from := p.before[k]; to > from {
			if p.kept == nil {
				p.kept = map[sessionKey][]seqRange{}
			}
			p.kept[k] = append(p.kept[k], seqRange{from, to})
		}
	}
	p.overlap, p.before = false, nil
	p.active.Store(len(p.kept) > 0)
}

// noteSettle is how long a note waits, with judged recording, before it
// asks the shards. A session counts a seq just after its event was built
// and judged (the read goroutine builds one dispatch, hands it to the
// session, then reads the next), so the dispatch judged before judged was
// set is counted within microseconds. Guessing instead (seen+1) gives a
// seq id to a dispatch that may arrive after the note, which a next
// generation's session, READY within 50 ms in the simulator, also
// receives: the reshard end-to-end tests stored dispatches twice so.
const noteSettle = 20 * time.Millisecond

// note returns each running session's last seq, sure to cover every seq
// content judged before it returns: those judged before it began are
// counted by their sessions after noteSettle, judged has those judged
// while the note was taken.
func (p *seqIDs) note(running func() map[sessionKey]sessionSeqs) map[sessionKey]int64 {
	p.mu.Lock()
	p.judged = map[sessionKey]int64{}
	p.mu.Unlock()
	time.Sleep(noteSettle)
	last := map[sessionKey]int64{}
	for k, s := range running() {
		last[k] = s.seen
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, seq := range p.judged {
		last[k] = max(last[k], seq)
	}
	p.judged = nil
	return last
}

// prune forgets the kept seqs no replay can bring back: those of a
// session no longer running here, or at or before its resume point.
func (p *seqIDs) prune(running map[sessionKey]sessionSeqs) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, rs := range p.kept {
		s, ok := running[k]
		if !ok || s.acked >= rs[len(rs)-1].to {
			delete(p.kept, k)
		}
	}
	p.active.Store(p.overlap || len(p.kept) > 0)
}

// settleContentIDs makes the seqs' content ids follow the overlap clock:
// called on each reading of the plans (at least every 2 s), so they end
// up to 2 s after the margin, which only lengthens it.
func (g *fleetGens) settleContentIDs(now time.Time, running func() map[sessionKey]sessionSeqs) {
	ids := &g.overlap.ids
	if g.overlap.contentIDs(now) {
		ids.begin(running)
		return
	}
	ids.finish(running)
	if ids.active.Load() {
		ids.prune(running())
	}
}

// runningSessions reports the sessions of this instance's shards.
func (g *fleetGens) runningSessions() map[sessionKey]sessionSeqs {
	member := g.current()
	if member == nil || member.Pool() == nil {
		return nil
	}
	out := map[sessionKey]sessionSeqs{}
	for _, s := range member.Pool().Shards() {
		// The session id first: a new session's READY between the two
		// calls pairs the old id, which replays nothing, with the new
		// seq; the other order would pair the new id with the old seq.
		h := s.Handoff()
		if h == nil {
			continue // no session, or one ending for good
		}
		out[sessionKey{s.ID(), h.SessionID}] = sessionSeqs{acked: h.Seq, seen: s.Status().LastSeq}
	}
	return out
}

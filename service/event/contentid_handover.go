package event

import (
	"sync/atomic"
	"time"

	"github.com/shardpool/gateway/service/event/jsonscan"
)

// Handing the dispatches without a content key over from one shard count
// to the other, exactly.
//
// Both generations publish a dispatch with a content key (ContentID) and
// JetStream keeps one copy. A dispatch without one (a member update, a
// member leaving, ...) must be published by exactly one generation, and
// the two must agree, for each guild, on the last one the old generation
// publishes. Receive times cannot say it: the two copies arrive at
// slightly different times. What the copies share is their content, and a
// dispatch that creates something (a message, an interaction, ...) carries
// a snowflake with Discord's clock in it. So the handover point of a guild
// is the first dispatch of the guild, in the session's order, whose
// content key is a snowflake created at or after an instant At both
// generations know beforehand (the cut-over time the orchestration
// writes, a few seconds ahead). Every session finds the same dispatch:
// the old generation publishes the guild's keyless dispatches before it,
// the new generation those after it, and the point itself has a content
// key, so both publish it under one ID.
//
// This rests on one assumption: Discord sends a guild's dispatches to
// every session that holds the guild in the same order (its docs do not
// say so; the simulator does). A guild that stays quiet (no message or
// interaction after At) has no handover point; the orchestration needs a
// deadline for those, after which a keyless dispatch may be published
// twice or not at all around the switch.

// CreatedAt returns when the thing a dispatch (t, d) creates was created,
// read from the snowflake of its content key, for the types whose key is
// a new snowflake: MESSAGE_CREATE, INTERACTION_CREATE, THREAD_CREATE
// (newly_created), GUILD_ROLE_CREATE and GUILD_AUDIT_LOG_ENTRY_CREATE.
// ok is false for any other dispatch, and for one whose key is missing or
// not a snowflake.
func CreatedAt(t string, d []byte) (time.Time, bool) {
	if !createsSnowflake(t) {
		return time.Time{}, false
	}
	k, _ := contentKeyOf(t)
	last := len(k.parts) - 1
	var found [maxContentPart]jsonscan.Value
	if !k.find(d, &found) {
		return time.Time{}, false
	}
	id, ok := snowflake(found[last].Content(d))
	if !ok {
		return time.Time{}, false
	}
	return time.UnixMilli(int64(id>>22) + discordEpochMs), true
}

// createsSnowflake reports whether the content key of dispatch type t is
// the snowflake of something the dispatch creates (a deletion names an old
// one).
func createsSnowflake(t string) bool {
	switch t {
	case "MESSAGE_CREATE", "INTERACTION_CREATE", "THREAD_CREATE", "GUILD_ROLE_CREATE", "GUILD_AUDIT_LOG_ENTRY_CREATE":
		return true
	}
	return false
}

// discordEpochMs is the snowflake epoch, 2015-01-01T00:00:00Z.
const discordEpochMs = 1420070400000

// snowflake parses a decimal snowflake without allocating.
func snowflake(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		next := n*10 + uint64(c-'0')
		if next/10 != n {
			return 0, false // overflow
		}
		n = next
	}
	return n, true
}

// Handover finds, for one session, each guild's handover point around the
// instant At (see above). Feed it every guild dispatch of the session in
// seq order, the ones the gateway does not publish too (a MESSAGE_CREATE
// is as good a point as any); a replayed seq is ignored. One per session,
// used by the session's reader: only PassedGuilds may be called from
// another goroutine (the one deciding when the old generation may close).
type Handover struct {
	at      time.Time
	last    int64
	point   map[string]int64 // guild → seq of its handover point in this session
	settled int64            // Settle's seq for the other guilds, 0 before
	passed  atomic.Int64     // len(point)
}

// NewHandover returns a Handover around the instant at.
func NewHandover(at time.Time) *Handover {
	return &Handover{at: at, point: map[string]int64{}}
}

// Observe notes the dispatch seq of type t with data d in guild. The
// dispatches without a guild (direct messages, which Discord sends to
// shard 0 of every count) are guild "", a stream of their own.
func (h *Handover) Observe(seq int64, guild, t string, d []byte) {
	if seq <= h.last {
		return // a replay: seen already
	}
	h.last = seq
	if _, found := h.point[guild]; found {
		return
	}
	if created, ok := CreatedAt(t, d); ok && !created.Before(h.at) {
		h.point[guild] = seq
		h.passed.Add(1)
	}
}

// After reports whether the dispatch seq of guild comes after the
// guild's handover point: the new generation publishes such a keyless
// dispatch, the old one does not. It is false before the point is known,
// and for the point itself (which has a content key). The answer for a
// seq never changes, so a dispatch replayed after a resume is judged as
// it was the first time.
func (h *Handover) After(guild string, seq int64) bool {
	if p, found := h.point[guild]; found {
		return seq > p
	}
	return h.settled > 0 && seq > h.settled
}

// Settle gives every guild without a handover point one at the last seq
// observed: the orchestration's deadline for quiet guilds, when the old
// generation closes. Only there can a keyless dispatch be published twice
// or not at all (one that reached the two sessions on either side of
// their deadlines).
func (h *Handover) Settle() {
	if h.settled == 0 {
		h.settled = max(h.last, 1)
	}
}

// PassedGuilds returns how many guilds' handover points have been seen.
// It is safe to call from any goroutine.
func (h *Handover) PassedGuilds() int { return int(h.passed.Load()) }

// Passed reports whether guild's handover point has been seen.
func (h *Handover) Passed(guild string) bool {
	_, found := h.point[guild]
	return found
}

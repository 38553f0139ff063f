package discordsim

import (
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// genTick is the load generator's scheduling granularity. Events due within
// a tick are emitted together, which keeps the cost independent of the rate.
const genTick = 10 * time.Millisecond

// genKind is one entry of the generated event mix. Weights approximate a busy
// bot: mostly messages, presences and typing, some member churn and
// interactions.
type genKind struct {
	typ    string
	weight int
	intent int64 // required intent, 0 for none
}

var genMix = []genKind{
	{"MESSAGE_CREATE", 35, IntentGuildMessages},
	{"PRESENCE_UPDATE", 25, IntentGuildPresences},
	{"TYPING_START", 15, IntentGuildMessageTyping},
	{"GUILD_MEMBER_UPDATE", 10, IntentGuildMembers},
	{"INTERACTION_CREATE", 7, 0},
	{"GUILD_MEMBER_ADD", 5, IntentGuildMembers},
	{"GUILD_MEMBER_REMOVE", 3, IntentGuildMembers},
}

// allowedMix returns the mix entries the intents allow, as Discord only sends
// events whose intents were requested. The rate stays the same: the allowed
// kinds share it.
func allowedMix(intents int64) ([]genKind, int) {
	var out []genKind
	total := 0
	for _, k := range genMix {
		if k.intent == 0 || intents&k.intent != 0 {
			out = append(out, k)
			total += k.weight
		}
	}
	return out, total
}

func (s *Server) startGenerator() {
	s.genOnce.Do(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed {
			return
		}
		s.wg.Add(1)
		go s.genLoop()
	})
}

func (s *Server) genLoop() {
	defer s.wg.Done()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0x5eed))
	t := time.NewTicker(genTick)
	defer t.Stop()
	last := time.Now()
	for {
		if s.EventRate() <= 0 {
			// Idle without ticking until the rate changes.
			select {
			case <-s.quit:
				return
			case <-s.rateCh:
			}
			last = time.Now()
			continue
		}
		var now time.Time
		select {
		case <-s.quit:
			return
		case <-s.rateCh:
			continue
		case now = <-t.C:
		}
		rate := s.EventRate()
		// Cap the catch-up after a stall (GC, overloaded CI) to one second of
		// events instead of emitting an unbounded burst.
		dt := min(now.Sub(last).Seconds(), 1.0)
		last = now
		for _, ss := range s.genSessions(now) {
			ss.genAcc += rate * dt
			n := math.Floor(ss.genAcc)
			ss.genAcc -= n
			for i := 0; i < int(n); i++ {
				typ, body := s.genEvent(ss, rng)
				if typ == "" {
					break
				}
				if _, err := ss.dispatch(typ, body); err != nil {
					break
				}
			}
		}
	}
}

// genSessions returns the sessions that receive generated events: every
// valid session, connected or not (events for a disconnected session go to
// its replay log). Expired sessions are invalidated here.
func (s *Server) genSessions(now time.Time) []*session {
	s.mu.Lock()
	all := slices.Clone(s.order)
	s.mu.Unlock()
	out := all[:0]
	for _, ss := range all {
		ss.mu.Lock()
		if ss.expiredLocked(now) {
			ss.invalidateLocked()
			s.logf("discordsim: session %s of shard %d expired", ss.id, ss.shard)
		}
		ok := !ss.invalid
		ss.mu.Unlock()
		if ok {
			out = append(out, ss)
		}
	}
	return out
}

// genEvent builds one random event for ss, or "" if its intents allow none.
func (s *Server) genEvent(ss *session, rng *rand.Rand) (string, []byte) {
	mix, total := allowedMix(ss.intents)
	if total == 0 {
		return "", nil
	}
	w := rng.IntN(total)
	var kind genKind
	for _, k := range mix {
		if w < k.weight {
			kind = k
			break
		}
		w -= k.weight
	}
	guild := GuildIDForShard(ss.shard, ss.total, 0)
	if len(ss.guilds) > 0 {
		guild = ss.guilds[rng.IntN(len(ss.guilds))]
	}
	pool := max(s.cfg.MembersPerGuild, 100)
	user := memberUserID(guild, rng.IntN(pool))
	channel := channelID(guild, textChannels[rng.IntN(len(textChannels))])
	switch kind.typ {
	case "MESSAGE_CREATE":
		return kind.typ, s.MessageCreateBody(guild, channel, user, ss.intents&IntentMessageContent != 0)
	case "PRESENCE_UPDATE":
		return kind.typ, s.PresenceUpdateBody(guild, user)
	case "TYPING_START":
		return kind.typ, s.TypingStartBody(guild, channel, user)
	case "GUILD_MEMBER_UPDATE":
		return kind.typ, s.MemberUpdateBody(guild, user)
	case "INTERACTION_CREATE":
		return kind.typ, s.InteractionCreateBody(guild, channel, user)
	case "GUILD_MEMBER_ADD":
		// New members come from beyond the GUILD_CREATE member list.
		return kind.typ, s.MemberAddBody(guild, memberUserID(guild, pool+rng.IntN(1<<20)))
	default:
		return kind.typ, s.MemberRemoveBody(guild, user)
	}
}

package discordsim

import (
	"math/rand/v2"
	"slices"
	"time"
)

// genRefresh is how often the load generator looks for new, ended and
// expired sessions.
const genRefresh = 10 * time.Millisecond

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

// genLoop emits each generated event at its own time: the sessions share
// one evenly spaced schedule at their total rate, round robin, and the loop
// sleeps finely until the next event is due (Go's timers alone would batch
// events by their millisecond of lateness). How late each event is handed
// to its connection is recorded for GeneratorJitter.
func (s *Server) genLoop() {
	defer s.wg.Done()
	lockForFineSleep()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0x5eed))
	var (
		sessions  []*session
		refreshed time.Time
		sched     paceSchedule
		total     float64 // sched's rate; 0 before the first schedule
		turn      int
	)
	for {
		perSession := s.EventRate()
		if perSession <= 0 {
			// Idle without waking until the rate changes.
			select {
			case <-s.quit:
				return
			case <-s.rateCh:
			}
			total = 0
			continue
		}
		now := time.Now()
		if now.Sub(refreshed) >= genRefresh {
			sessions, refreshed = s.genSessions(now), now
		}
		if r := perSession * float64(len(sessions)); r != total {
			// A new rate or another set of sessions: a new schedule from now.
			sched, total = newPaceSchedule(now, r), r
		}
		wake := refreshed.Add(genRefresh)
		if total > 0 && sched.due().Before(wake) {
			wake = sched.due()
		}
		if !waitUntil(wake, s.quit, s.rateCh) {
			return
		}
		// Under genMu, and only while the rate is still set: once
		// SetEventRate(0) returns, nothing more is generated.
		s.genMu.Lock()
		if total > 0 && s.EventRate() > 0 {
			turn = s.genDue(&sched, sessions, turn, rng)
		}
		s.genMu.Unlock()
	}
}

// genDue emits every event of sched that is due, each to the next session
// in turn, and returns the next turn.
func (s *Server) genDue(sched *paceSchedule, sessions []*session, turn int, rng *rand.Rand) int {
	for {
		due, ok := sched.next(time.Now())
		if !ok {
			return turn
		}
		ss := sessions[turn%len(sessions)]
		turn++
		typ, body := s.genEvent(ss, rng)
		if typ == "" {
			continue
		}
		s.genJitter.record(time.Since(due))
		// An ended session's events are lost, as at Discord; the next
		// refresh drops it.
		s.genDispatch(ss, typ, body)
	}
}

// GeneratorJitter returns the load generator's send-time jitter since the
// last ResetGeneratorJitter.
func (s *Server) GeneratorJitter() PaceStats { return s.genJitter.stats() }

// ResetGeneratorJitter starts the jitter record anew, e.g. when a
// measurement's steady state begins.
func (s *Server) ResetGeneratorJitter() { s.genJitter.reset() }

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
	if s.guildMode() {
		return s.guildSources(out)
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

package discordsim

import (
	"bytes"
	"fmt"
	"slices"
)

// The bot's guilds (Config.Guilds) and how they reach sessions: Discord
// routes every guild-scoped dispatch to the shard (guild_id >> 22) % total
// of every session that holds the guild, so while a bot runs two shard
// counts side by side (resharding without downtime) each such dispatch
// reaches two sessions, one per count.

// universePeriod makes the bot's guild i land on shard i % total for every
// total that divides it (1 to 16, 18, 20, 24, 32, 64, ...): its guild ids'
// timestamps start at a multiple of it. Any other total still spreads the
// guilds evenly, only in another order.
const universePeriod = 2882880 // 2^6 · 3^2 · 5 · 7 · 11 · 13

// universeBaseMs is the snowflake timestamp of the bot's guild 0.
const universeBaseMs = guildBaseMs - guildBaseMs%universePeriod

// DefaultMaxGuildsPerShard is Discord's documented limit of guilds per
// shard, beyond which IDENTIFY is closed with 4011.
const DefaultMaxGuildsPerShard = 2500

// UniverseGuildID returns the id of the bot's i-th guild (0 <= i <
// Config.Guilds). The ids are consecutive in their timestamp, so any shard
// count spreads them evenly.
func UniverseGuildID(i int) string {
	return idString(snowflake(universeBaseMs+int64(i), 8, 0, 0))
}

// universeShard is the shard of total that holds the bot's i-th guild.
func universeShard(i, total int) int {
	return int((universeBaseMs + int64(i)) % int64(total))
}

// universeGuilds returns the ids of the bot's guilds (the first n of the
// universe) that shard of total holds.
func universeGuilds(n, shard, total int) []string {
	var out []string
	first := (shard - universeShard(0, total) + total) % total
	for i := first; i < n; i += total {
		out = append(out, UniverseGuildID(i))
	}
	return out
}

// universeCount is len(universeGuilds(n, shard, total)) without building it.
func universeCount(n, shard, total int) int {
	first := (shard - universeShard(0, total) + total) % total
	if first >= n {
		return 0
	}
	return (n-first-1)/total + 1
}

// guildMode reports whether sessions hold guilds of the bot's guild set
// (Config.Guilds) rather than guilds of their own (GuildsPerShard).
func (s *Server) guildMode() bool { return s.cfg.Guilds > 0 }

// Guilds returns the ids of the bot's guilds (Config.Guilds), in order;
// nil when sessions invent their own (GuildsPerShard).
func (s *Server) Guilds() []string {
	out := make([]string, 0, s.cfg.Guilds)
	for i := 0; i < s.cfg.Guilds; i++ {
		out = append(out, UniverseGuildID(i))
	}
	return out
}

// ShardGuilds returns the guilds a session identified as [shard, total]
// holds: the bot's guilds that Discord routes to it (Config.Guilds), or
// GuildsPerShard generated ones when there is no guild set.
func (s *Server) ShardGuilds(shard, total int) []string {
	if s.guildMode() {
		return universeGuilds(s.cfg.Guilds, shard, total)
	}
	out := make([]string, 0, s.cfg.GuildsPerShard)
	for n := 0; n < s.cfg.GuildsPerShard; n++ {
		out = append(out, GuildIDForShard(shard, total, n))
	}
	return out
}

// shardGuildCount is len(ShardGuilds(shard, total)), for the 4011 rule.
func (s *Server) shardGuildCount(shard, total int) int {
	if s.guildMode() {
		return universeCount(s.cfg.Guilds, shard, total)
	}
	return s.cfg.GuildsPerShard
}

// SetMaxGuildsPerShard changes the 4011 threshold (Config.MaxGuildsPerShard)
// for the IDENTIFYs that follow; sessions already running keep going, as at
// Discord, which checks at IDENTIFY. n <= 0 turns the rule off.
func (s *Server) SetMaxGuildsPerShard(n int) { s.maxGuilds.Store(int64(n)) }

// MaxGuildsPerShard returns the 4011 threshold; 0 means none.
func (s *Server) MaxGuildsPerShard() int { return int(max(s.maxGuilds.Load(), 0)) }

// tooManyGuilds reports whether a session of [shard, total] would hold more
// guilds than the threshold allows, with the detail for the record.
func (s *Server) tooManyGuilds(shard, total int) (bool, string) {
	limit := s.MaxGuildsPerShard()
	n := s.shardGuildCount(shard, total)
	if limit <= 0 || n <= limit {
		return false, ""
	}
	return true, fmt.Sprintf("shard [%d, %d] would hold %d guilds, more than %d", shard, total, n, limit)
}

// SetRecommendedShards changes the shard count /gateway/bot recommends
// (Config.Shards), as Discord raises it while a bot grows.
func (s *Server) SetRecommendedShards(n int) {
	s.mu.Lock()
	s.cfg.Shards = max(n, 1)
	s.mu.Unlock()
}

// holds reports whether ss holds guild: Discord's routing rule.
func (ss *session) holds(guild uint64) bool {
	return int((guild>>22)%uint64(ss.total)) == ss.shard
}

// holders returns the valid sessions that hold guild, in creation order:
// one per shard count in normal operation, two while a bot reshards.
func (s *Server) holders(guild string) []*session {
	g := parseID(guild)
	s.mu.Lock()
	all := slices.Clone(s.order)
	s.mu.Unlock()
	out := all[:0]
	for _, ss := range all {
		if ss.holds(g) && ss.valid() {
			out = append(out, ss)
		}
	}
	return out
}

// DispatchGuild sends a dispatch of type t with body d about guild to every
// valid session that holds the guild (one per live shard count), each with
// its own seq, and returns the key its copies share in the ledger
// (SentDispatch.Key). Like Dispatch it does not filter by intents. It
// returns ErrNoSession when no session holds the guild.
func (s *Server) DispatchGuild(guild, t string, d []byte) (uint64, error) {
	if err := checkDispatch(t, d); err != nil {
		return 0, err
	}
	key := s.genKey.Add(1)
	if s.fanOut(s.holders(guild), guild, key, t, d, 0) == 0 {
		return 0, ErrNoSession
	}
	return key, nil
}

// fanOut appends one guild-scoped dispatch to each session in to whose
// intents include need (0: any), and returns how many took it. Every copy
// carries the same guild and key, so a test can tell that the copies on
// two shard counts are one event.
func (s *Server) fanOut(to []*session, guild string, key uint64, t string, d []byte, need int64) int {
	n := 0
	for _, ss := range to {
		if need != 0 && ss.intents&need == 0 {
			continue
		}
		if _, err := ss.dispatchGuild(t, d, guild, key); err == nil {
			n++
		}
	}
	return n
}

// guildSources are the load generator's sources with a guild set: one
// entry per guild that a valid session holds, in guild order, naming its
// oldest holder, so that the generator's rate (EventRate per entry) is per
// guild and does not change when a second shard count comes up or goes
// away. valid are the valid sessions in creation order.
func (s *Server) guildSources(valid []*session) []*session {
	holder := make([]*session, s.cfg.Guilds)
	for _, ss := range valid {
		first := (ss.shard - universeShard(0, ss.total) + ss.total) % ss.total
		for i := first; i < len(holder); i += ss.total {
			if holder[i] == nil {
				holder[i] = ss
			}
		}
	}
	out := holder[:0]
	for _, ss := range holder {
		if ss != nil {
			out = append(out, ss)
		}
	}
	return out
}

// genDispatch hands a generated event made for ss to ss or, with a guild
// set, to every valid session that holds its guild and asked for its
// intent. An ended session's copy is lost, as at Discord. Without a guild
// set nothing changes, not even the cost per event, which the pipeline
// benchmarks measure against.
func (s *Server) genDispatch(ss *session, typ string, body []byte) {
	if !s.guildMode() {
		_, _ = ss.dispatch(typ, body)
		return
	}
	guild := generatedGuild(body)
	s.fanOut(s.holders(guild), guild, s.genKey.Add(1), typ, body, mixIntent(typ))
}

// generatedGuild returns the guild of a body made by genEvent: every
// "guild_id" in such a body, nested ones included, names the event's
// guild, so the first one will do without decoding the body.
func generatedGuild(body []byte) string {
	const key = `"guild_id":"`
	i := bytes.Index(body, []byte(key))
	if i < 0 {
		return ""
	}
	rest := body[i+len(key):]
	if j := bytes.IndexByte(rest, '"'); j >= 0 {
		return string(rest[:j])
	}
	return ""
}

// mixIntent is the intent a generated event type needs (0: none).
func mixIntent(typ string) int64 {
	for _, k := range genMix {
		if k.typ == typ {
			return k.intent
		}
	}
	return 0
}

package discordsim

import (
	"encoding/json"
	"strings"
	"sync"
	"time"
)

// What the simulator answers to the commands a bot sends (op 3, 4, 8), as
// https://discord.com/developers/docs/events/gateway-events documents:
//
//   - op 3 (presence update): nothing; the command is recorded.
//   - op 4 (voice state update) for one of the session's guilds: a
//     VOICE_STATE_UPDATE of the bot (with GUILD_VOICE_STATES), then, when
//     it joins a channel, a VOICE_SERVER_UPDATE with a token and endpoint.
//   - op 8 (request guild members): GUILD_MEMBERS_CHUNK dispatches of at
//     most 1000 members, each with the request's nonce (a nonce over 32
//     bytes is ignored, as Discord does), with presences when asked and the
//     session has GUILD_PRESENCES; a second request for all of a guild's
//     members (query "" and limit 0) within AllMembersWindow gets a
//     RATE_LIMITED dispatch {opcode, retry_after, meta{guild_id, nonce}}.

// AllMembersWindow is how often Discord lets a bot request all of a
// guild's members.
const AllMembersWindow = 30 * time.Second

// IntentGuildVoiceStates gates the bot's own VOICE_STATE_UPDATE.
const IntentGuildVoiceStates = 1 << 7

// maxNonceBytes: a longer op 8 nonce is ignored.
const maxNonceBytes = 32

// memberChunkSize is Discord's number of members per GUILD_MEMBERS_CHUNK.
const memberChunkSize = 1000

// commandState is what the simulator remembers between commands.
type commandState struct {
	mu         sync.Mutex
	allMembers map[string]time.Time // guild → last request for all its members
}

// answerCommand answers a command the session's connection sent.
func (s *Server) answerCommand(sess *session, op int, raw json.RawMessage) {
	switch op {
	case OpVoiceStateUpdate:
		s.voiceStateUpdate(sess, raw)
	case OpRequestGuildMembers:
		s.requestGuildMembers(sess, raw)
	}
}

func (ss *session) hasGuild(id string) bool {
	for _, g := range ss.guilds {
		if g == id {
			return true
		}
	}
	return false
}

// voiceStateUpdate answers op 4 for one of the session's guilds.
func (s *Server) voiceStateUpdate(sess *session, raw json.RawMessage) {
	var d struct {
		GuildID   string  `json:"guild_id"`
		ChannelID *string `json:"channel_id"`
		SelfMute  bool    `json:"self_mute"`
		SelfDeaf  bool    `json:"self_deaf"`
	}
	if json.Unmarshal(raw, &d) != nil || !sess.hasGuild(d.GuildID) {
		return
	}
	if sess.intents&IntentGuildVoiceStates != 0 {
		member := memberFor(d.GuildID, s.botUserID, snowflakeTime(parseID(d.GuildID)))
		if _, err := sess.dispatch("VOICE_STATE_UPDATE", mustJSON(map[string]any{
			"guild_id": d.GuildID, "channel_id": d.ChannelID, "user_id": s.botUserID, "member": member,
			"session_id": sess.id, "deaf": false, "mute": false, "self_deaf": d.SelfDeaf, "self_mute": d.SelfMute,
			"self_video": false, "suppress": false, "request_to_speak_timestamp": nil,
		})); err != nil {
			return
		}
	}
	if d.ChannelID != nil {
		_, _ = sess.dispatch("VOICE_SERVER_UPDATE", mustJSON(map[string]any{
			"token": newSessionID()[:16], "guild_id": d.GuildID, "endpoint": "sim-voice.discord.media:443",
		}))
	}
}

// membersRequest is an op 8 d.
type membersRequest struct {
	GuildID   json.RawMessage `json:"guild_id"`
	Query     *string         `json:"query"`
	Limit     int             `json:"limit"`
	Presences bool            `json:"presences"`
	UserIDs   json.RawMessage `json:"user_ids"`
	Nonce     *string         `json:"nonce"`
}

// allMembers reports whether the request is for every member of the guild.
func (r *membersRequest) allMembers() bool {
	return r.UserIDs == nil && (r.Query == nil || *r.Query == "") && r.Limit == 0
}

// requestGuildMembers answers op 8 for the session's own guilds.
func (s *Server) requestGuildMembers(sess *session, raw json.RawMessage) {
	var d membersRequest
	if json.Unmarshal(raw, &d) != nil {
		return
	}
	if d.Nonce != nil && len(*d.Nonce) > maxNonceBytes {
		d.Nonce = nil
	}
	presences := d.Presences && sess.intents&IntentGuildPresences != 0
	for _, g := range stringOrList(d.GuildID) {
		if !sess.hasGuild(g) {
			continue
		}
		if d.allMembers() {
			if wait := s.takeAllMembers(g, time.Now()); wait > 0 {
				meta := map[string]any{"guild_id": g}
				if d.Nonce != nil {
					meta["nonce"] = *d.Nonce
				}
				_, _ = sess.dispatch("RATE_LIMITED", mustJSON(map[string]any{
					"opcode": OpRequestGuildMembers, "retry_after": wait.Seconds(), "meta": meta,
				}))
				continue
			}
		}
		members, notFound := s.matchMembers(g, &d)
		if !s.sendChunks(sess, g, members, notFound, presences, d.Nonce) {
			return
		}
	}
}

// takeAllMembers records a request for all of guild's members at now, or
// returns how long until one is allowed again.
func (s *Server) takeAllMembers(guild string, now time.Time) time.Duration {
	c := &s.cmds
	c.mu.Lock()
	defer c.mu.Unlock()
	if last, ok := c.allMembers[guild]; ok && now.Sub(last) < AllMembersWindow {
		return AllMembersWindow - now.Sub(last)
	}
	if c.allMembers == nil {
		c.allMembers = map[string]time.Time{}
	}
	c.allMembers[guild] = now
	return 0
}

// matchMembers returns the generated members the request names (user_ids,
// with the ids not found) or matches (query and limit).
func (s *Server) matchMembers(guild string, d *membersRequest) (members []apiMember, notFound []string) {
	if d.UserIDs != nil {
		notFound = []string{}
		index := map[string]int{}
		for i := 0; i < s.cfg.MembersPerGuild; i++ {
			index[memberUserID(guild, i)] = i
		}
		for _, u := range stringOrList(d.UserIDs) {
			if i, ok := index[u]; ok {
				members = append(members, generatedMember(guild, i))
			} else {
				notFound = append(notFound, u)
			}
		}
		return members, notFound
	}
	q := ""
	if d.Query != nil {
		q = strings.ToLower(*d.Query)
	}
	for i := 0; i < s.cfg.MembersPerGuild; i++ {
		if d.Limit > 0 && len(members) >= d.Limit {
			break
		}
		m := generatedMember(guild, i)
		if q == "" || strings.HasPrefix(strings.ToLower(m.User.Username), q) {
			members = append(members, m)
		}
	}
	return members, nil
}

// sendChunks dispatches members as GUILD_MEMBERS_CHUNKs; false when the
// session is gone.
func (s *Server) sendChunks(sess *session, guild string, members []apiMember, notFound []string, presences bool, nonce *string) bool {
	count := max(1, (len(members)+memberChunkSize-1)/memberChunkSize)
	for i := 0; i < count; i++ {
		chunk := members[min(i*memberChunkSize, len(members)):min((i+1)*memberChunkSize, len(members))]
		body := map[string]any{"guild_id": guild, "members": append([]apiMember{}, chunk...), "chunk_index": i, "chunk_count": count}
		if i == 0 && notFound != nil {
			body["not_found"] = notFound
		}
		if presences {
			body["presences"] = onlinePresences(chunk)
		}
		if nonce != nil {
			body["nonce"] = *nonce
		}
		if _, err := sess.dispatch("GUILD_MEMBERS_CHUNK", mustJSON(body)); err != nil {
			return false
		}
	}
	return true
}

// onlinePresences shows every member of chunk online on desktop.
func onlinePresences(chunk []apiMember) []map[string]any {
	out := make([]map[string]any, len(chunk))
	for i, m := range chunk {
		out[i] = map[string]any{"user": map[string]any{"id": m.User.ID}, "status": "online", "activities": []any{},
			"client_status": map[string]any{"desktop": "online"}}
	}
	return out
}

// stringOrList reads a snowflake or an array of them.
func stringOrList(raw json.RawMessage) []string {
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}
	}
	var list []string
	_ = json.Unmarshal(raw, &list)
	return list
}

package discordsim

import (
	"encoding/json"
	"testing"
)

type chunkHeader struct {
	GuildID    string            `json:"guild_id"`
	Members    []json.RawMessage `json:"members"`
	Presences  []json.RawMessage `json:"presences"`
	ChunkIndex int               `json:"chunk_index"`
	ChunkCount int               `json:"chunk_count"`
	Nonce      *string           `json:"nonce"`
}

func decodeChunk(t *testing.T, p payload) chunkHeader {
	t.Helper()
	var d chunkHeader
	if err := json.Unmarshal(p.D, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestSecondRequestForAllMembersWithinTheWindowIsRateLimited(t *testing.T) {
	srv := startServer(t, Config{GuildsPerShard: 1, MembersPerGuild: 10})
	c, ready := connectReady(t, srv, CompressNone, 0, 1, allIntents)
	c.expectDispatch("GUILD_CREATE")
	guild := ready.Guilds[0].ID
	all := func(nonce string) {
		c.send(map[string]any{"op": OpRequestGuildMembers, "d": map[string]any{"guild_id": guild, "query": "", "limit": 0, "nonce": nonce}})
	}
	all("first")
	if d := decodeChunk(t, c.expectDispatch("GUILD_MEMBERS_CHUNK")); len(d.Members) != 10 || *d.Nonce != "first" {
		t.Fatalf("first request: %d members, nonce %v", len(d.Members), d.Nonce)
	}
	all("second")
	p := c.expectDispatch("RATE_LIMITED")
	var rl struct {
		Opcode     int     `json:"opcode"`
		RetryAfter float64 `json:"retry_after"`
		Meta       struct {
			GuildID string `json:"guild_id"`
			Nonce   string `json:"nonce"`
		} `json:"meta"`
	}
	if err := json.Unmarshal(p.D, &rl); err != nil {
		t.Fatal(err)
	}
	if rl.Opcode != OpRequestGuildMembers || rl.RetryAfter <= 0 || rl.RetryAfter > AllMembersWindow.Seconds() ||
		rl.Meta.GuildID != guild || rl.Meta.Nonce != "second" {
		t.Fatalf("RATE_LIMITED %s", p.D)
	}
	// A query is not a request for all members: answered at once.
	c.send(map[string]any{"op": OpRequestGuildMembers, "d": map[string]any{"guild_id": guild, "query": "", "limit": 3, "nonce": "third"}})
	if d := decodeChunk(t, c.expectDispatch("GUILD_MEMBERS_CHUNK")); len(d.Members) != 3 || *d.Nonce != "third" {
		t.Fatalf("limited request: %d members, nonce %v", len(d.Members), d.Nonce)
	}
}

func TestMemberChunksCarryPresencesOnlyWhenAskedWithTheIntent(t *testing.T) {
	srv := startServer(t, Config{GuildsPerShard: 1, MembersPerGuild: 4, MaxConcurrency: 2})
	for shard, tc := range []struct {
		intents int64
		want    int
	}{{IntentGuilds | IntentGuildMembers | IntentGuildPresences, 4}, {IntentGuilds | IntentGuildMembers, 0}} {
		c, ready := connectReady(t, srv, CompressNone, shard, 2, tc.intents)
		c.expectDispatch("GUILD_CREATE")
		c.send(map[string]any{"op": OpRequestGuildMembers, "d": map[string]any{"guild_id": ready.Guilds[0].ID, "query": "", "limit": 4, "presences": true}})
		if d := decodeChunk(t, c.expectDispatch("GUILD_MEMBERS_CHUNK")); len(d.Presences) != tc.want || d.Nonce != nil {
			t.Errorf("intents %d: %d presences, nonce %v; want %d and none", tc.intents, len(d.Presences), d.Nonce, tc.want)
		}
		c.close()
	}
}

func TestNonceOverThirtyTwoBytesIsIgnored(t *testing.T) {
	srv := startServer(t, Config{GuildsPerShard: 1, MembersPerGuild: 2})
	c, ready := connectReady(t, srv, CompressNone, 0, 1, allIntents)
	c.expectDispatch("GUILD_CREATE")
	long := "0123456789abcdef0123456789abcdef!"
	c.send(map[string]any{"op": OpRequestGuildMembers, "d": map[string]any{"guild_id": ready.Guilds[0].ID, "user_ids": []string{"1"}, "nonce": long}})
	if d := decodeChunk(t, c.expectDispatch("GUILD_MEMBERS_CHUNK")); d.Nonce != nil {
		t.Fatalf("nonce of %d bytes kept: %q", len(long), *d.Nonce)
	}
}

func TestVoiceStateUpdateIsAnsweredWithBothVoiceDispatches(t *testing.T) {
	srv := startServer(t, Config{GuildsPerShard: 1})
	c, ready := connectReady(t, srv, CompressNone, 0, 1, allIntents)
	c.expectDispatch("GUILD_CREATE")
	guild, channel := ready.Guilds[0].ID, "41771983423143937"
	c.send(map[string]any{"op": OpVoiceStateUpdate, "d": map[string]any{"guild_id": guild, "channel_id": channel, "self_mute": false, "self_deaf": true}})
	var vs struct {
		GuildID   string `json:"guild_id"`
		ChannelID string `json:"channel_id"`
		UserID    string `json:"user_id"`
		SessionID string `json:"session_id"`
		SelfDeaf  bool   `json:"self_deaf"`
	}
	if err := json.Unmarshal(c.expectDispatch("VOICE_STATE_UPDATE").D, &vs); err != nil {
		t.Fatal(err)
	}
	if vs.GuildID != guild || vs.ChannelID != channel || vs.UserID != srv.BotUserID() || vs.SessionID != ready.SessionID || !vs.SelfDeaf {
		t.Errorf("VOICE_STATE_UPDATE %+v", vs)
	}
	var server struct {
		Token, GuildID, Endpoint string
	}
	p := c.expectDispatch("VOICE_SERVER_UPDATE")
	if err := json.Unmarshal(p.D, &server); err != nil || server.Token == "" || server.Endpoint == "" {
		t.Errorf("VOICE_SERVER_UPDATE %s", p.D)
	}
	rec := srv.Record()
	if len(rec.Commands) != 1 || rec.Commands[0].Op != OpVoiceStateUpdate || rec.Commands[0].SessionID != ready.SessionID {
		t.Errorf("commands recorded: %+v", rec.Commands)
	}
}

func TestIdentifyRecordsThePresenceItCarries(t *testing.T) {
	srv := startServer(t, Config{})
	c := dial(t, srv, "/gateway", CompressNone)
	c.expectOp(OpHello)
	p := identifyPayload(srv.cfg.Token, 0, 1, allIntents)
	p["d"].(map[string]any)["presence"] = map[string]any{"status": "dnd", "activities": []any{}, "afk": false, "since": nil}
	c.send(p)
	c.expectDispatch("READY")
	rec := srv.Record()
	if len(rec.Identifies) != 1 || string(rec.Identifies[0].Presence) != `{"activities":[],"afk":false,"since":null,"status":"dnd"}` {
		t.Fatalf("identify presence %s", rec.Identifies[0].Presence)
	}
}

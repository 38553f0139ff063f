package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shardpool/gateway/internal/discordsim"
	"github.com/shardpool/gateway/service/event"
	"github.com/shardpool/gateway/service/shard"
)

type published struct {
	EventID   string          `json:"event_id"`
	EventType string          `json:"event_type"`
	ShardID   int             `json:"shard_id"`
	Timestamp int64           `json:"timestamp"`
	GuildID   *string         `json:"guild_id"`
	ChannelID *string         `json:"channel_id"`
	UserID    *string         `json:"user_id"`
	Data      json.RawMessage `json:"data"`
}

func strp(s string) *string { return &s }

func eq(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func show(p *string) string {
	if p == nil {
		return "null"
	}
	return strconv.Quote(*p)
}

func TestEndToEndPublishesTheSixEventTypesFieldByField(t *testing.T) {
	e := startEnv(t, envOptions{sim: discordsim.Config{Shards: 2}})
	e.waitShardsReady(2)
	sim := e.sim
	const sh = 1
	guild := sim.GuildIDForShard(sh, 2, 0)
	user, channel := "80351110224678912", "41771983423143937"

	// Unpublished dispatches first: when the last published one is in the
	// stream, these were handled too.
	for _, d := range []struct {
		t string
		d []byte
	}{
		{"MESSAGE_CREATE", sim.MessageCreateBody(guild, channel, user, true)},
		{"TYPING_START", sim.TypingStartBody(guild, channel, user)},
		{"PRESENCE_UPDATE", sim.PresenceUpdateBody(guild, user)},
		{"GUILD_DELETE", sim.GuildDeleteBody(guild, true)}, // outage, not a leave
	} {
		if _, err := sim.Dispatch(sh, d.t, d.d); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		t, eventType, subject string
		d                     []byte
		guild, channel, user  *string
	}{
		{"GUILD_CREATE", "guild.join", "events.guild.join", sim.GuildCreateBody(sh, guild, 3), strp(guild), nil, nil},
		{"GUILD_MEMBER_ADD", "member.join", "events.member.join", sim.MemberAddBody(guild, user), strp(guild), nil, strp(user)},
		{"GUILD_MEMBER_UPDATE", "member.update", "events.member.update", sim.MemberUpdateBody(guild, user), strp(guild), nil, strp(user)},
		{"GUILD_MEMBER_REMOVE", "member.leave", "events.member.leave", sim.MemberRemoveBody(guild, user), strp(guild), nil, strp(user)},
		{"INTERACTION_CREATE", "interaction.create", "commands.interaction", sim.InteractionCreateBody(guild, channel, user), strp(guild), strp(channel), strp(user)},
		{"GUILD_DELETE", "guild.leave", "events.guild.leave", sim.GuildDeleteBody(guild, false), strp(guild), nil, nil},
	}
	before := time.Now().UnixMilli()
	seqs := map[string]int64{}
	for _, c := range cases {
		seq, err := sim.Dispatch(sh, c.t, c.d)
		if err != nil {
			t.Fatal(err)
		}
		seqs[c.t] = seq
	}
	e.eventually("six events in the streams", 20*time.Second, func() bool {
		return e.streamCount("EVENTS") >= 5 && e.streamCount("COMMANDS") >= 1
	})
	after := time.Now().UnixMilli()
	session := sim.CurrentSession(sh)

	bySubject := map[string]*jetstream.RawStreamMsg{}
	var all []*jetstream.RawStreamMsg
	for _, s := range []string{"EVENTS", "COMMANDS"} {
		all = append(all, e.streamMsgs(s)...)
	}
	// GUILD_CREATEs of the initial guilds are none (GuildsPerShard 0), so
	// exactly the six cases are stored.
	if len(all) != len(cases) {
		t.Fatalf("%d messages in the streams, want %d", len(all), len(cases))
	}
	for _, m := range all {
		bySubject[m.Subject] = m
	}
	for _, c := range cases {
		t.Run(c.t, func(t *testing.T) {
			m := bySubject[c.subject]
			if m == nil {
				t.Fatalf("nothing on %s", c.subject)
			}
			var p published
			if err := json.Unmarshal(m.Data, &p); err != nil {
				t.Fatalf("body is not JSON: %v", err)
			}
			wantID := event.ID(sh, session, seqs[c.t])
			if p.EventID != wantID || m.Header.Get("Nats-Msg-Id") != wantID {
				t.Errorf("event_id %q, Nats-Msg-Id %q, want %q", p.EventID, m.Header.Get("Nats-Msg-Id"), wantID)
			}
			if p.EventType != c.eventType {
				t.Errorf("event_type %q, want %q", p.EventType, c.eventType)
			}
			if p.ShardID != sh {
				t.Errorf("shard_id %d", p.ShardID)
			}
			if p.Timestamp < before || p.Timestamp > after {
				t.Errorf("timestamp %d not within [%d, %d]", p.Timestamp, before, after)
			}
			if !eq(p.GuildID, c.guild) || !eq(p.ChannelID, c.channel) || !eq(p.UserID, c.user) {
				t.Errorf("guild_id %s channel_id %s user_id %s, want %s %s %s",
					show(p.GuildID), show(p.ChannelID), show(p.UserID), show(c.guild), show(c.channel), show(c.user))
			}
			if !bytes.Equal(p.Data, c.d) {
				t.Errorf("data differs from the dispatch's d:\n got %s\nwant %s", p.Data, c.d)
			}
			var keys []string
			var raw map[string]json.RawMessage
			json.Unmarshal(m.Data, &raw)
			for k := range raw {
				keys = append(keys, k)
			}
			if len(keys) != 8 {
				t.Errorf("body has fields %v, want exactly the 8 of the contract", keys)
			}
		})
	}
	// The outage GUILD_DELETE kept the guild counted; the real leave removed it.
	st := e.status()
	if got := st.Shards[sh].Guilds; got != 0 {
		t.Errorf("guild count %d after create+leave, want 0", got)
	}
}

func TestEndToEndPoolRunsExactlyItsShards(t *testing.T) {
	e := startEnv(t, envOptions{
		sim:    discordsim.Config{Shards: 6, MaxConcurrency: 6},
		config: func(c *Config) { c.TotalShards, c.ShardsPerPool, c.PoolID = 6, 4, 1 },
	})
	e.waitShardsReady(2)
	_, r := e.readiness()
	if r.ShardsTotal != 2 || r.PoolID != 1 {
		t.Fatalf("readiness %+v, want 2 shards in pool 1", r)
	}
	got := map[int]int{}
	for _, id := range e.sim.Record().Identifies {
		got[id.Shard]++
		if id.Total != 6 {
			t.Errorf("IDENTIFY with shard total %d, want 6", id.Total)
		}
		if id.Intents != 3 {
			t.Errorf("IDENTIFY intents %d, want 3 (GUILDS|GUILD_MEMBERS)", id.Intents)
		}
	}
	if len(got) != 2 || got[4] != 1 || got[5] != 1 {
		t.Fatalf("identified shards %v, want exactly 4 and 5 once", got)
	}
}

func TestEndToEndPoolWithoutShardsIsAStartupError(t *testing.T) {
	sim := discordsim.New(discordsim.Config{Shards: 6})
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	m := NewMain()
	m.LogOutput = &lockedBuffer{}
	if err := m.ParseFlags(nil, func(k string) string {
		return map[string]string{"DISCORD_TOKEN": discordsim.DefaultToken, "DISCORD_API_URL": sim.APIURL(),
			"TOTAL_SHARDS": "6", "SHARDS_PER_POOL": "4", "POOL_ID": "2", "HTTP_PORT": "0"}[k]
	}); err != nil {
		t.Fatal(err)
	}
	err := m.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "POOL_ID") {
		t.Fatalf("Run = %v, want an error naming POOL_ID", err)
	}
}

func TestEndToEndIdentifyBucketsAreRespected(t *testing.T) {
	// 10 ms of tolerance: the simulator stamps an IDENTIFY when its reader
	// gets to it, which on a loaded machine lags the write by a few ms
	// (the limiter's own margin is 2% of the window, 5 ms here).
	e := startEnv(t, envOptions{sim: discordsim.Config{Shards: 6, MaxConcurrency: 2, IdentifyWindow: 250 * time.Millisecond, IdentifyTolerance: 10 * time.Millisecond}})
	e.waitShardsReady(6)
	rec := e.sim.Record()
	if v := rec.ViolationsOf(discordsim.ViolationIdentifyBucket); len(v) != 0 {
		t.Fatalf("identify bucket violations: %+v", v)
	}
	// Buckets start in order: within a bucket, shards identify by id.
	last := map[int]int{}
	for _, id := range rec.Identifies {
		if prev, ok := last[id.Bucket]; ok && id.Shard < prev {
			t.Errorf("bucket %d: shard %d identified after shard %d", id.Bucket, id.Shard, prev)
		}
		last[id.Bucket] = id.Shard
	}
	if len(rec.Identifies) != 6 {
		t.Fatalf("%d identifies, want 6", len(rec.Identifies))
	}
}

func TestEndToEndResumesOnResumeURLAfterADroppedSocketWithoutLossOrDuplicates(t *testing.T) {
	e := startEnv(t, envOptions{sim: discordsim.Config{Shards: 2, EventRate: 200}})
	e.waitShardsReady(2)
	time.Sleep(300 * time.Millisecond) // let events flow
	if err := e.sim.Drop(0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.sim.WaitResumes(ctx, 1); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	e.sim.SetEventRate(0)
	e.settle()
	rec := e.sim.Record()
	r := rec.Resumes[0]
	if r.Path != "/resume" || r.Outcome != discordsim.ResumeResumed || r.Shard != 0 {
		t.Fatalf("resume %+v, want shard 0 resumed on /resume (resume_gateway_url)", r)
	}
	if len(rec.Identifies) != 2 {
		t.Fatalf("%d identifies: the shard re-identified instead of resuming", len(rec.Identifies))
	}
	e.assertExactlyOnce(expectedIDs(t, e.sim, false))
}

// settle waits until every dispatch the simulator generated was acked.
func (e *testEnv) settle() {
	e.t.Helper()
	e.eventually("every dispatch acked", 30*time.Second, func() bool {
		st := e.status()
		for _, s := range st.Shards {
			for _, si := range e.sim.Sessions() {
				if si.ID != "" && si.Shard == s.ID && !si.Invalid && si.Live && s.LastAckedSeq < si.Seq {
					return false
				}
			}
		}
		return st.Publish.BufferEvents == 0
	})
}

func TestEndToEndOp7ReconnectResumes(t *testing.T) {
	e := startEnv(t, envOptions{sim: discordsim.Config{Shards: 1, EventRate: 100}})
	e.waitShardsReady(1)
	if err := e.sim.Reconnect(0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.sim.WaitResumes(ctx, 1); err != nil {
		t.Fatal(err)
	}
	e.sim.SetEventRate(0)
	e.settle()
	rec := e.sim.Record()
	if rec.Resumes[0].Outcome != discordsim.ResumeResumed {
		t.Fatalf("resume %+v", rec.Resumes[0])
	}
	for _, c := range rec.ClientCloses {
		if c.Code == 1000 || c.Code == 1001 {
			t.Fatalf("gateway closed with %d, ending the session", c.Code)
		}
	}
	e.assertExactlyOnce(expectedIDs(t, e.sim, false))
}

func TestEndToEndOp9FalseStartsANewSessionWithIdentify(t *testing.T) {
	e := startEnv(t, envOptions{sim: discordsim.Config{Shards: 1}})
	e.waitShardsReady(1)
	first := e.sim.CurrentSession(0)
	if err := e.sim.InvalidSession(0, false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.sim.WaitIdentifies(ctx, 2); err != nil {
		t.Fatal(err)
	}
	rec := e.sim.Record()
	gap := rec.Identifies[1].At.Sub(rec.Identifies[0].At)
	if gap < time.Second {
		t.Errorf("re-identified %v after op 9, Discord asks for 1-5 s", gap)
	}
	if len(rec.Resumes) != 0 {
		t.Errorf("resumed an invalidated session: %+v", rec.Resumes)
	}
	e.waitShardsReady(1)
	if e.sim.CurrentSession(0) == first {
		t.Fatal("still on the invalidated session")
	}
}

func TestEndToEndZombieConnectionIsClosedAndResumed(t *testing.T) {
	e := startEnv(t, envOptions{sim: discordsim.Config{Shards: 1, HeartbeatInterval: 150 * time.Millisecond}})
	e.waitShardsReady(1)
	if err := e.sim.WithholdAcks(0, true); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.sim.WaitResumes(ctx, 1); err != nil {
		t.Fatal(err)
	}
	rec := e.sim.Record()
	closed := false
	for _, c := range rec.ClientCloses {
		if c.Code == 1000 || c.Code == 1001 {
			t.Fatalf("zombie closed with %d", c.Code)
		}
		if c.Code != 0 {
			closed = true
		}
	}
	if !closed {
		t.Fatal("the gateway never closed the zombie connection itself")
	}
	if v := rec.ViolationsOf(discordsim.ViolationHeartbeatLate); len(v) != 0 {
		t.Fatalf("heartbeat violations: %+v", v)
	}
	e.eventually("zombie counted", 5*time.Second, func() bool {
		_, b := e.get("/metrics")
		return strings.Contains(string(b), `gateway_shard_reconnects_total{reason="zombie",shard_id="0"}`)
	})
}

func TestEndToEndFatal4004StopsTheShardWithAPlainMessage(t *testing.T) {
	e := startEnv(t, envOptions{sim: discordsim.Config{Shards: 2}})
	e.waitShardsReady(2)
	before := e.sim.Record().Connections
	if err := e.sim.CloseWith(0, 4004, "Authentication failed."); err != nil {
		t.Fatal(err)
	}
	e.eventually("shard 0 failed", 10*time.Second, func() bool { return e.status().Shards[0].State == shard.StateFailed })
	// The shard logs why it stopped just after its state says failed.
	e.eventually("a log line naming the cause", 10*time.Second, func() bool {
		return strings.Contains(e.logs.String(), "authentication failed: check DISCORD_TOKEN")
	})
	st := e.status()
	if !strings.Contains(st.Shards[0].LastError, "authentication failed") {
		t.Fatalf("status last_error %q", st.Shards[0].LastError)
	}
	_, r := e.readiness()
	if r.ShardsReady != 1 {
		t.Fatalf("shards_ready %d, want 1", r.ShardsReady)
	}
	time.Sleep(500 * time.Millisecond) // backoff max is 500 ms in tests: a loop would show
	if after := e.sim.Record().Connections; after != before {
		t.Fatalf("%d new connections after a fatal close: reconnect loop", after-before)
	}
}

func TestEndToEndReadinessFollowsShardsAndNATS(t *testing.T) {
	e := startEnv(t, envOptions{sim: discordsim.Config{Shards: 1}})
	e.waitShardsReady(1)
	code, r := e.readiness()
	if code != 200 || !r.Ready || !r.NATSConnected {
		t.Fatalf("ready %d %+v", code, r)
	}
	e.sim.CloseWith(0, 4004, "Authentication failed.")
	e.eventually("not ready", 10*time.Second, func() bool { c, _ := e.readiness(); return c == 503 })
	_, r = e.readiness()
	if r.Ready || r.ShardsReady != 0 || r.ShardsTotal != 1 {
		t.Fatalf("readiness %+v", r)
	}
}

func TestEndToEndLocalModeCountsWithoutNATS(t *testing.T) {
	e := startEnv(t, envOptions{noNATS: true, sim: discordsim.Config{Shards: 1}})
	e.waitShardsReady(1)
	code, r := e.readiness()
	if code != 200 || r.NATSConnected {
		t.Fatalf("local mode readiness %d %+v", code, r)
	}
	g := e.sim.GuildIDForShard(0, 1, 0)
	for i := 0; i < 5; i++ {
		e.sim.Dispatch(0, "GUILD_MEMBER_ADD", e.sim.MemberAddBody(g, strconv.Itoa(1000+i)))
	}
	e.eventually("5 routed", 10*time.Second, func() bool {
		_, b := e.get("/metrics")
		return strings.Contains(string(b), `gateway_events_routed_total{shard_id="0"} 5`)
	})
	e.eventually("the events logged at debug", 10*time.Second, func() bool {
		return strings.Contains(e.logs.String(), "subject=events.member.join")
	})
	st := e.status()
	if !st.LocalMode || st.Shards[0].LastAckedSeq < 6 {
		t.Fatalf("status %+v", st)
	}
}

func TestEndToEndMetricsAndReadyReportTheRightValues(t *testing.T) {
	e := startEnv(t, envOptions{sim: discordsim.Config{Shards: 2, GuildsPerShard: 3, MembersPerGuild: 2}})
	e.waitShardsReady(2)
	e.eventually("guild creates routed", 10*time.Second, func() bool { return e.streamCount("EVENTS") == 6 })
	_, r := e.readiness()
	if r.GuildsTotal != 6 || r.ShardsReady != 2 || r.ShardsTotal != 2 {
		t.Fatalf("readiness %+v", r)
	}
	_, b := e.get("/metrics")
	body := string(b)
	for _, want := range []string{
		`gateway_events_received_total{event_type="GUILD_CREATE",shard_id="0"} 3`,
		`gateway_events_received_total{event_type="READY",shard_id="1"} 1`,
		`gateway_events_routed_total{shard_id="1"} 3`,
		`gateway_guilds_total{shard_id="0"} 3`,
		`gateway_shards_ready{pool_id="0"} 2`,
		`gateway_nats_connected 1`,
		`gateway_event_route_duration_seconds_count{shard_id="0"} 3`,
		`# TYPE gateway_route_failures_total counter`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	code, _ := e.get("/health")
	if code != 200 {
		t.Fatalf("/health %d", code)
	}
}

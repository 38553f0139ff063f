package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/shardpool/gateway/client"
	"github.com/shardpool/gateway/internal/discordsim"
	"github.com/shardpool/gateway/service/shard"
)

// The command path end to end: workers (the client package) over NATS, the
// gateway, the simulator.

func (e *testEnv) client() *client.Client {
	e.t.Helper()
	nc, err := nats.Connect(e.ns.ClientURL())
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	return client.New(nc)
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// commandsOf returns the commands of op the simulator received, by shard.
func commandsOf(sim *discordsim.Server, op int) map[int][]discordsim.Command {
	out := map[int][]discordsim.Command{}
	for _, c := range sim.Record().Commands {
		if c.Op == op {
			out[c.Shard] = append(out[c.Shard], c)
		}
	}
	return out
}

func TestPresenceIsSentOnEveryShardAndInTheNextIdentify(t *testing.T) {
	e := startEnv(t, envOptions{sim: discordsim.Config{Shards: 2}})
	e.waitShardsReady(2)
	r, err := e.client().SetPresence(ctxFor(t, 10*time.Second), client.Presence{Status: "dnd", Activities: []client.Activity{{Name: "the shards", Type: 3}}})
	if err != nil || !r.OK || r.Shards != 2 {
		t.Fatalf("presence: %+v %v; the simulator got %+v", r, err, e.sim.Record().Commands)
	}
	want := `{"since":null,"activities":[{"name":"the shards","type":3}],"status":"dnd","afk":false}`
	// Written is not yet read: the simulator records a command when it
	// reads it.
	e.eventually("op 3 on both shards", 10*time.Second, func() bool {
		sent := commandsOf(e.sim, shard.OpPresenceUpdate)
		return len(sent[0]) == 1 && len(sent[1]) == 1
	})
	sent := commandsOf(e.sim, shard.OpPresenceUpdate)
	for sh := 0; sh < 2; sh++ {
		if string(sent[sh][0].Data) != want {
			t.Errorf("shard %d got op 3 %s, want %s", sh, sent[sh][0].Data, want)
		}
	}
	// Discord ends shard 1's session: its new IDENTIFY carries the presence.
	before := len(e.sim.Record().Identifies)
	if err := e.sim.InvalidSession(1, false); err != nil {
		t.Fatal(err)
	}
	e.eventually("a new identify", 30*time.Second, func() bool { return len(e.sim.Record().Identifies) > before })
	ids := e.sim.Record().Identifies
	if last := ids[len(ids)-1]; last.Shard != 1 || string(last.Presence) != want {
		t.Fatalf("next IDENTIFY of shard %d (%s) carried presence %s", last.Shard, last.Outcome, last.Presence)
	}
}

func TestAnInstanceStartedLaterIdentifiesWithTheStoredPresence(t *testing.T) {
	// Pool 0 runs shard 0; pool 1 (shard 1) starts after the presence.
	e := startEnv(t, envOptions{sim: discordsim.Config{Shards: 2}, config: func(c *Config) { c.ShardsPerPool = 1 }})
	e.waitShardsReady(1)
	if _, err := e.client().SetPresence(ctxFor(t, 10*time.Second), client.Presence{Status: "idle"}); err != nil {
		t.Fatal(err)
	}
	later := NewMain()
	later.Config = e.m.Config
	later.Config.PoolID = 1
	later.LogOutput = io.Discard
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- later.Run(ctx) }()
	t.Cleanup(func() { stop(); <-done })
	e.eventually("shard 1 identified", 30*time.Second, func() bool {
		for _, id := range e.sim.Record().Identifies {
			if id.Shard == 1 {
				return true
			}
		}
		return false
	})
	for _, id := range e.sim.Record().Identifies {
		if id.Shard == 1 && string(id.Presence) != `{"since":null,"activities":[],"status":"idle","afk":false}` {
			t.Fatalf("shard 1 identified with presence %s", id.Presence)
		}
	}
}

func TestVoiceStateUpdateBringsBothVoiceDispatchesToEventsDispatch(t *testing.T) {
	e := startEnv(t, envOptions{sim: discordsim.Config{Shards: 2, GuildsPerShard: 1}, config: func(c *Config) {
		c.Intents, _ = shard.ParseIntents("GUILDS,GUILD_MEMBERS,GUILD_VOICE_STATES")
		c.ExtraEvents = "VOICE_STATE_UPDATE,VOICE_SERVER_UPDATE"
	}})
	e.waitShardsReady(2)
	guild, channel := e.sim.GuildIDForShard(1, 2, 0), "41771983423143937"
	if err := e.client().UpdateVoiceState(ctxFor(t, 10*time.Second), guild, channel, false, true); err != nil {
		t.Fatal(err)
	}
	got := map[string]client.Envelope{}
	var mu sync.Mutex
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go e.client().Consume(ctx, client.ConsumeConfig{Stream: client.StreamEvents, Durable: "voice", Subjects: []string{"events.dispatch.>"}},
		func(_ context.Context, ev client.Envelope) error {
			mu.Lock()
			got[ev.Subject] = ev
			mu.Unlock()
			return nil
		})
	e.eventually("both voice dispatches", 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 2
	})
	state, server := got["events.dispatch.VOICE_STATE_UPDATE"], got["events.dispatch.VOICE_SERVER_UPDATE"]
	if state.EventType != "VOICE_STATE_UPDATE" || state.ShardID != 1 || *state.GuildID != guild || *state.ChannelID != channel {
		t.Errorf("VOICE_STATE_UPDATE envelope %+v", state)
	}
	var d struct{ Token, Endpoint string }
	if server.EventType != "VOICE_SERVER_UPDATE" || *server.GuildID != guild || json.Unmarshal(server.Data, &d) != nil || d.Token == "" || d.Endpoint == "" {
		t.Errorf("VOICE_SERVER_UPDATE envelope %+v", server)
	}
}

func TestMemberChunksReachTheAskerInOrderAndASecondAskIsRateLimited(t *testing.T) {
	// Chunks nobody asked for would go to events.dispatch.GUILD_MEMBERS_CHUNK.
	e := startEnv(t, envOptions{sim: discordsim.Config{Shards: 2, GuildsPerShard: 1, MembersPerGuild: 2500},
		config: func(c *Config) { c.ExtraEvents = "GUILD_MEMBERS_CHUNK" }})
	e.waitShardsReady(2)
	e.eventually("the GUILD_CREATEs stored", 30*time.Second, func() bool { return e.streamCount("EVENTS") == 2 })
	c := e.client()
	guild := e.sim.GuildIDForShard(1, 2, 0)
	var chunks []client.Chunk
	members := 0
	for ch, err := range c.Members(ctxFor(t, 20*time.Second), client.AllMembers(guild)) {
		if err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, ch)
		members += len(ch.Members)
	}
	if len(chunks) != 3 || members != 2500 {
		t.Fatalf("%d chunks, %d members; want 3 and 2500", len(chunks), members)
	}
	for i, ch := range chunks {
		if ch.ChunkIndex != i || ch.ChunkCount != 3 || ch.GuildID != guild || ch.Nonce == "" || ch.Nonce != chunks[0].Nonce {
			t.Errorf("chunk %d: index %d of %d, guild %s, nonce %q", i, ch.ChunkIndex, ch.ChunkCount, ch.GuildID, ch.Nonce)
		}
	}
	// The replies went to the asker, not to the streams.
	for _, m := range e.streamMsgs("EVENTS") {
		if m.Subject != "events.guild.join" {
			t.Errorf("EVENTS got a message on %s", m.Subject)
		}
	}
	for _, err := range c.Members(ctxFor(t, 20*time.Second), client.AllMembers(guild)) {
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Result != shard.ResultRateLimited || ce.RetryAfter <= 0 || ce.RetryAfter > discordsim.AllMembersWindow {
			t.Fatalf("second ask within 30 s: %v", err)
		}
	}
}

func TestAFloodOfCommandsFromSeveralWorkersNeverBreaksTheSendBudget(t *testing.T) {
	const limit, window = 12, 2 * time.Second
	e := startEnv(t, envOptions{
		sim:    discordsim.Config{Shards: 2, SendLimit: limit, SendWindow: window, HeartbeatInterval: time.Second, HeartbeatGrace: 400 * time.Millisecond},
		config: func(c *Config) { c.SendBudget = shard.SendBudget{Limit: limit, Window: window} },
	})
	e.waitShardsReady(2)
	var mu sync.Mutex
	results := map[string]int{}
	var wg sync.WaitGroup
	end := time.Now().Add(5 * time.Second)
	for w := 0; w < 4; w++ {
		c := e.client()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				err := c.SendToShard(ctx, 0, client.Command{Op: client.OpPresenceUpdate, D: map[string]any{"status": "online"}})
				cancel()
				result := "ok"
				var ce *client.Error
				switch {
				case errors.As(err, &ce):
					result = ce.Result
					time.Sleep(min(ce.RetryAfter, 200*time.Millisecond))
				case err != nil:
					result = err.Error()
				}
				mu.Lock()
				results[result]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	rec := e.sim.Record()
	if v := rec.ViolationsOf(discordsim.ViolationSendRate); len(v) > 0 {
		t.Fatalf("send budget broken: %+v", v)
	}
	if v := rec.ViolationsOf(discordsim.ViolationHeartbeatLate); len(v) > 0 {
		t.Fatalf("heartbeats late: %+v", v)
	}
	if results["ok"] < 2*(limit-3) || results[shard.ResultNoBudget] == 0 || len(results) != 2 {
		t.Fatalf("results %v", results)
	}
	e.eventually("every command written read by the simulator", 10*time.Second, func() bool {
		return len(commandsOf(e.sim, shard.OpPresenceUpdate)[0]) == results["ok"]
	})
}

func TestACommandForAShardNobodyRunsFailsCleanly(t *testing.T) {
	e := startEnv(t, envOptions{sim: discordsim.Config{Shards: 2}, config: func(c *Config) { c.ShardsPerPool = 1 }}) // pool 0: shard 0 only
	e.waitShardsReady(1)
	c := e.client()
	start := time.Now()
	err := c.SendToShard(ctxFor(t, 5*time.Second), 1, client.Command{Op: client.OpPresenceUpdate, D: map[string]any{"status": "online"}})
	if !errors.Is(err, client.ErrNoInstance) || time.Since(start) > 2*time.Second {
		t.Fatalf("shard 1: %v after %v", err, time.Since(start))
	}
	if p, err := c.Plan(ctxFor(t, 5*time.Second)); err != nil || p.TotalShards != 2 || p.ShardsPerPool != 1 || p.Pools != 2 {
		t.Fatalf("plan %+v %v", p, err)
	}
}

func TestADrainedInstanceStopsAnsweringAndItsSuccessorAnswers(t *testing.T) {
	e := startEnv(t, envOptions{sim: discordsim.Config{Shards: 1}})
	e.waitShardsReady(1)
	c := e.client()
	send := func() error {
		return c.SendToShard(ctxFor(t, 5*time.Second), 0, client.Command{Op: client.OpPresenceUpdate, D: map[string]any{"status": "idle"}})
	}
	if err := send(); err != nil {
		t.Fatal(err)
	}
	if code, b := e.do("POST", "/drain", ""); code != http.StatusOK {
		t.Fatalf("drain: %d %s", code, b)
	}
	if err := send(); !errors.Is(err, client.ErrNoInstance) {
		t.Fatalf("after the drain: %v", err)
	}
	next := NewMain()
	next.Config = e.m.Config
	next.LogOutput = io.Discard
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- next.Run(ctx) }()
	t.Cleanup(func() { stop(); <-done })
	e.eventually("the successor answers", 30*time.Second, func() bool { return send() == nil })
}

func TestHTTPSendNeedsTheDrainTokenAndAnswersLikeNATS(t *testing.T) {
	e := startEnv(t, envOptions{sim: discordsim.Config{Shards: 1}, config: func(c *Config) { c.DrainToken = "s3cret" }})
	e.waitShardsReady(1)
	post := func(path, body, auth string) (int, string) {
		req, _ := http.NewRequest("POST", e.base+path, strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	presence := `{"op":3,"d":{"status":"online"}}`
	if code, _ := post("/shards/0/send", presence, ""); code != http.StatusUnauthorized {
		t.Errorf("without the token: %d", code)
	}
	if code, body := post("/shards/0/send", presence, "Bearer s3cret"); code != http.StatusOK || body != `{"ok":true}` {
		t.Errorf("presence: %d %s", code, body)
	}
	if code, body := post("/shards/0/send", `{"op":2,"d":{}}`, "Bearer s3cret"); code != http.StatusBadRequest || !strings.Contains(body, `"ok":false`) {
		t.Errorf("op 2: %d %s", code, body)
	}
	if code, body := post("/shards/7/send", presence, "Bearer s3cret"); code != http.StatusNotFound || !strings.Contains(body, "does not run shard 7") {
		t.Errorf("shard 7: %d %s", code, body)
	}
}

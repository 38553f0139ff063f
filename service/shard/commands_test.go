package shard

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/diamondburned/arikawa/v3/gateway"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shardpool/gateway/internal/discordsim"
	"github.com/shardpool/gateway/service/event"
)

func TestEncodeCommandNormalisesWhatDiscordRequires(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"presence fills activities, since and afk", `{"op":3,"d":{"status":"idle"}}`,
			`{"op":3,"d":{"since":null,"activities":[],"status":"idle","afk":false}}`},
		{"presence keeps what it was given", `{"op":3,"d":{"status":"online","activities":[{"name":"x","type":0}],"afk":true,"since":91879201}}`,
			`{"op":3,"d":{"since":91879201,"activities":[{"name":"x","type":0}],"status":"online","afk":true}}`},
		{"voice state join", `{"op":4,"d":{"guild_id":"41771983423143937","channel_id":"127121515262115840","self_deaf":true}}`,
			`{"op":4,"d":{"guild_id":"41771983423143937","channel_id":"127121515262115840","self_mute":false,"self_deaf":true}}`},
		{"voice state leave", `{"op":4,"d":{"guild_id":"41771983423143937","channel_id":null}}`,
			`{"op":4,"d":{"guild_id":"41771983423143937","channel_id":null,"self_mute":false,"self_deaf":false}}`},
		{"members keep their nonce", `{"op":8,"d":{"guild_id":"41771983423143937","query":"","limit":0,"nonce":"mine"}}`,
			`{"op":8,"d":{"guild_id":"41771983423143937","query":"","limit":0,"nonce":"mine"}}`},
		{"members by user ids", `{"op":8,"d":{"guild_id":"41771983423143937","user_ids":["80351110224678912"],"presences":true,"nonce":"n"}}`,
			`{"op":8,"d":{"guild_id":"41771983423143937","presences":true,"user_ids":["80351110224678912"],"nonce":"n"}}`},
	} {
		var cmd Command
		if err := json.Unmarshal([]byte(tc.in), &cmd); err != nil {
			t.Fatal(err)
		}
		got, _, err := encodeCommand(cmd)
		if err != nil || string(got) != tc.want {
			t.Errorf("%s:\n got %s %v\nwant %s", tc.name, got, err, tc.want)
		}
	}
}

func TestEncodeCommandRefusesWhatDiscordWouldNot(t *testing.T) {
	long := strings.Repeat("a", 4100)
	for _, in := range []string{
		`{"op":1,"d":null}`, `{"op":2,"d":{}}`, `{"op":6,"d":{}}`, `{"op":31,"d":{}}`,
		`{"op":3,"d":{"status":"away"}}`, `{"op":3,"d":{"status":"online","activities":{}}}`, `{"op":3,"d":"online"}`,
		`{"op":3,"d":{"status":"online","since":"yesterday"}}`, `{"op":3,"d":{"status":"online","game":{}}}`,
		`{"op":4,"d":{"channel_id":null}}`, `{"op":4,"d":{"guild_id":"abc","channel_id":null}}`,
		`{"op":8,"d":{"guild_id":"1"}}`, `{"op":8,"d":{"guild_id":"1","query":"","user_ids":["2"]}}`,
		`{"op":8,"d":{"guild_id":["1","2"],"query":""}}`, `{"op":8,"d":{"guild_id":"1","query":"","nonce":"0123456789abcdef0123456789abcdef!"}}`,
		`{"op":8,"d":{"guild_id":"1","user_ids":[]}}`, `{"op":8,"d":{"guild_id":"1","query":"","limit":-1}}`,
		`{"op":3,"d":{"status":"online","activities":[{"name":"` + long + `"}]}}`,
	} {
		var cmd Command
		if err := json.Unmarshal([]byte(in), &cmd); err != nil {
			t.Fatal(err)
		}
		if got, _, err := encodeCommand(cmd); err == nil {
			t.Errorf("%.80s accepted as %s", in, got)
		}
	}
}

func TestRequestWithoutNonceGetsOneWithinDiscordsLimit(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		payload, nonce, err := encodeCommand(Command{Op: 8, D: json.RawMessage(`{"guild_id":"1","query":"","limit":0}`)})
		if err != nil {
			t.Fatal(err)
		}
		if len(nonce) > maxNonceBytes || !strings.HasPrefix(nonce, nonceStart) || seen[nonce] || !strings.Contains(string(payload), `"nonce":"`+nonce+`"`) {
			t.Fatalf("nonce %q in %s", nonce, payload)
		}
		seen[nonce] = true
	}
}

func TestParseIntentsReadsNamesOrABitField(t *testing.T) {
	for in, want := range map[string]gateway.Intents{
		"GUILDS,GUILD_MEMBERS":                    gateway.IntentGuilds | gateway.IntentGuildMembers,
		" guilds , guild_voice_states ":           gateway.IntentGuilds | gateway.IntentGuildVoiceStates,
		"GUILDS,GUILD_MEMBERS,GUILD_VOICE_STATES": 131,
		"3":                           Intents,
		"GUILD_BANS,GUILD_MODERATION": gateway.IntentGuildModeration,
	} {
		if got, err := ParseIntents(in); err != nil || got != want {
			t.Errorf("%q: %d %v, want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", ",", "GUILD", "GUILDS,NOPE", "-1", "4194304", "1099511627776"} {
		if got, err := ParseIntents(in); err == nil {
			t.Errorf("%q accepted as %d", in, got)
		}
	}
}

func TestSendLimiterTellsFreeSlotsAndTheWaitOfTheNthCommand(t *testing.T) {
	l := newSendLimiter(10, time.Second, 3) // 7 for commands
	t0 := time.Now()
	for i := 0; i < 5; i++ {
		if l.reserveSlot(t0.Add(time.Duration(i)*100*time.Millisecond), false) != 0 {
			t.Fatal("refused within the budget")
		}
	}
	now := t0.Add(450 * time.Millisecond)
	if got := l.free(now); got != 2 {
		t.Errorf("free = %d, want 2", got)
	}
	for ahead, want := range map[int]time.Duration{0: 0, 1: 0, 2: 550 * time.Millisecond, 3: 650 * time.Millisecond, 6: 950 * time.Millisecond, 7: time.Second} {
		if got := l.until(now, ahead); got != want {
			t.Errorf("until(ahead %d) = %v, want %v", ahead, got, want)
		}
	}
	if got := l.free(t0.Add(1150 * time.Millisecond)); got != 4 {
		t.Errorf("free after two left the window = %d, want 4", got)
	}
}

// commandRun is a shard with the command path against the simulator.
type commandRun struct {
	sim     *discordsim.Server
	shard   *Shard
	metrics *CommandMetrics
	reg     *prometheus.Registry
}

func startCommandShard(t *testing.T, simCfg discordsim.Config, cc CommandConfig) *commandRun {
	t.Helper()
	r := &commandRun{sim: startSim(t, simCfg), reg: prometheus.NewRegistry()}
	r.metrics = NewCommandMetrics(r.reg)
	cc.Metrics = r.metrics
	r.shard = startShard(t, Config{GatewayURL: r.sim.GatewayURL(), Commands: cc}).shard
	waitShard(t, "ready", r.shard.Ready)
	return r
}

func (r *commandRun) guild() string { return r.sim.GuildIDForShard(0, 1, 0) }

// collect gathers the replies of one request until the last or an error.
type collect struct {
	mu      sync.Mutex
	replies []Reply
	done    chan struct{}
}

func newCollect() *collect { return &collect{done: make(chan struct{})} }

func (c *collect) reply(r Reply) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r.Chunk = append([]byte(nil), r.Chunk...) // valid only during the call
	c.replies = append(c.replies, r)
	if r.Last || r.RateLimited {
		close(c.done)
	}
}

func (c *collect) wait(t *testing.T) []Reply {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		t.Fatal("no last reply")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.replies
}

func TestMemberChunksGoToTheAskerInOrderAndASecondAskIsRateLimited(t *testing.T) {
	r := startCommandShard(t, discordsim.Config{GuildsPerShard: 1, MembersPerGuild: 2500}, CommandConfig{})
	ask := func() (*collect, string) {
		c := newCollect()
		nonce, err := r.shard.Send(waitCtx(t), Command{Op: 8, D: json.RawMessage(`{"guild_id":"` + r.guild() + `","query":"","limit":0}`)}, c.reply)
		if err != nil {
			t.Fatal(err)
		}
		return c, nonce
	}
	c, nonce := ask()
	replies := c.wait(t)
	if len(replies) != 3 {
		t.Fatalf("%d replies, want 3 chunks", len(replies))
	}
	members := 0
	for i, rp := range replies {
		var d struct {
			ChunkIndex int               `json:"chunk_index"`
			ChunkCount int               `json:"chunk_count"`
			Nonce      string            `json:"nonce"`
			Members    []json.RawMessage `json:"members"`
		}
		if err := json.Unmarshal(rp.Chunk, &d); err != nil {
			t.Fatal(err)
		}
		if d.ChunkIndex != i || d.ChunkCount != 3 || d.Nonce != nonce || rp.Last != (i == 2) {
			t.Errorf("reply %d: chunk %d/%d nonce %q last %v", i, d.ChunkIndex, d.ChunkCount, d.Nonce, rp.Last)
		}
		members += len(d.Members)
	}
	if members != 2500 {
		t.Errorf("%d members, want 2500", members)
	}
	second, _ := ask()
	replies = second.wait(t)
	if len(replies) != 1 || !replies[0].RateLimited || replies[0].RetryAfter <= 0 || replies[0].RetryAfter > discordsim.AllMembersWindow {
		t.Fatalf("second ask: %+v", replies)
	}
	if got := testutil.ToFloat64(r.metrics.Replies.WithLabelValues("0", "chunk")); got != 3 {
		t.Errorf("chunk replies counted %v, want 3", got)
	}
	if got := testutil.ToFloat64(r.metrics.Commands.WithLabelValues("0", "8", ResultOK)); got != 2 {
		t.Errorf("op 8 commands counted %v, want 2", got)
	}
}

func TestChunksOfAGatewayNonceWhoseAskerIsGoneAreDroppedAndCounted(t *testing.T) {
	pub := &recordingPublisher{}
	router, err := event.NewRouter([]string{"GUILD_MEMBERS_CHUNK"})
	if err != nil {
		t.Fatal(err)
	}
	sim := startSim(t, discordsim.Config{GuildsPerShard: 1})
	metrics := NewCommandMetrics(prometheus.NewRegistry())
	s := startShard(t, Config{GatewayURL: sim.GatewayURL(), Publisher: pub, Commands: CommandConfig{Events: router, Metrics: metrics}}).shard
	waitShard(t, "ready", s.Ready)
	guild := sim.GuildIDForShard(0, 1, 0)
	// Nobody asked for these: one with a gateway nonce (its asker gone),
	// one with a nonce of someone else, published as EXTRA_EVENTS says.
	for _, nonce := range []string{nonceStart + "0123456789abcdef01234567", "theirs"} {
		if _, err := sim.Dispatch(0, "GUILD_MEMBERS_CHUNK", []byte(`{"guild_id":"`+guild+`","members":[],"chunk_index":0,"chunk_count":1,"nonce":"`+nonce+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	published := func() int {
		n := 0
		for _, e := range pub.Events() {
			if e.Type == "GUILD_MEMBERS_CHUNK" {
				n++
			}
		}
		return n
	}
	waitShard(t, "the other chunk published", func() bool { return published() == 1 })
	if got := testutil.ToFloat64(metrics.Replies.WithLabelValues("0", "dropped")); got != 1 {
		t.Errorf("dropped counted %v, want 1", got)
	}
}

func TestCommandsAreRefusedWithRetryHintsWhenTheShardCannotSend(t *testing.T) {
	sim := startSim(t, discordsim.Config{})
	s := New(Config{ID: 0, Total: 1, GatewayURL: sim.GatewayURL(), Metrics: NewMetrics(prometheus.NewRegistry())})
	_, err := s.Send(context.Background(), Command{Op: 3, D: json.RawMessage(`{"status":"online"}`)}, nil)
	var ce *CommandError
	if !errors.As(err, &ce) || ce.Result != ResultNotReady || ce.RetryAfter <= 0 {
		t.Fatalf("before READY: %v", err)
	}
	_, err = s.Send(context.Background(), Command{Op: 2, D: json.RawMessage(`{}`)}, nil)
	if !errors.As(err, &ce) || ce.Result != ResultInvalid {
		t.Fatalf("op 2: %v", err)
	}
}

func TestAFloodOfCommandsNeverBreaksTheSendBudgetAndHeartbeatsKeepTheirTiming(t *testing.T) {
	const limit, window = 12, 2 * time.Second
	// A starved heartbeat would wait for a slot of the 2 s window; 400 ms of
	// grace tells that apart from scheduling delay on a loaded machine.
	sim := startSim(t, discordsim.Config{SendLimit: limit, SendWindow: window, HeartbeatInterval: 600 * time.Millisecond, HeartbeatGrace: 400 * time.Millisecond})
	metrics := NewCommandMetrics(prometheus.NewRegistry())
	s := startShard(t, Config{GatewayURL: sim.GatewayURL(), Commands: CommandConfig{Metrics: metrics, Budget: SendBudget{Limit: limit, Window: window}}}).shard
	waitShard(t, "ready", s.Ready)

	// Six workers, each sending commands one after the other for 5 s with
	// a 700 ms deadline each: far more than the budget allows.
	var wg sync.WaitGroup
	var mu sync.Mutex
	results := map[string]int{}
	end := time.Now().Add(5 * time.Second)
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
				_, err := s.Send(ctx, Command{Op: 3, D: json.RawMessage(`{"status":"online"}`)}, nil)
				cancel()
				result := ResultOK
				var ce *CommandError
				if errors.As(err, &ce) {
					result = ce.Result
					if ce.Result != ResultNoBudget || ce.RetryAfter <= 0 {
						t.Errorf("refused as %s, retry after %v: %v", ce.Result, ce.RetryAfter, err)
					}
					time.Sleep(min(ce.RetryAfter, 100*time.Millisecond))
				}
				mu.Lock()
				results[result]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	rec := sim.Record()
	if v := rec.ViolationsOf(discordsim.ViolationSendRate); len(v) > 0 {
		t.Fatalf("send budget broken: %+v", v)
	}
	if v := rec.ViolationsOf(discordsim.ViolationHeartbeatLate); len(v) > 0 {
		t.Fatalf("heartbeats late: %+v", v)
	}
	// 5 s is about three windows of (limit - reserve) commands.
	if results[ResultOK] < 2*(limit-heartbeatReserve) || results[ResultNoBudget] == 0 {
		t.Fatalf("results %v", results)
	}
	waitShard(t, "every command written read by the simulator", func() bool { return len(sim.Record().Commands) == results[ResultOK] })
	if !s.Ready() || len(rec.Identifies) != 1 {
		t.Fatalf("the connection did not survive the flood: %d identifies", len(rec.Identifies))
	}
}

func TestIdentifyCarriesTheConfiguredIntentsAndTheLatestPresence(t *testing.T) {
	var p Presence
	if err := p.Set(json.RawMessage(`{"status":"dnd","activities":[{"name":"tests","type":0}]}`)); err != nil {
		t.Fatal(err)
	}
	want := gateway.IntentGuilds | gateway.IntentGuildVoiceStates
	r := startCommandShard(t, discordsim.Config{}, CommandConfig{Intents: want, Presence: &p})
	ids := r.sim.Record().Identifies
	if len(ids) != 1 || ids[0].Intents != int64(want) {
		t.Fatalf("identifies %+v", ids)
	}
	if got := string(ids[0].Presence); got != `{"since":null,"activities":[{"name":"tests","type":0}],"status":"dnd","afk":false}` {
		t.Errorf("IDENTIFY presence %s", got)
	}
}

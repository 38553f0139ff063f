package discordsim

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"
)

const allGeneratedIntents = IntentGuilds | IntentGuildMembers | IntentGuildPresences |
	IntentGuildMessages | IntentGuildMessageTyping | IntentMessageContent

// shardCount is one shard count's sessions, connected and READY.
type shardCount struct {
	total   int
	clients []*testClient
	ready   []readyInfo
}

// connectCount identifies every shard of total, each after the previous
// one's READY (LenientIdentify keeps the test free of identify waits).
func connectCount(t *testing.T, srv *Server, total int) shardCount {
	t.Helper()
	sc := shardCount{total: total}
	for shard := 0; shard < total; shard++ {
		c, r := connectReady(t, srv, CompressNone, shard, total, allGeneratedIntents)
		sc.clients = append(sc.clients, c)
		sc.ready = append(sc.ready, r)
	}
	return sc
}

// guildOf decodes a generated or test body's guild_id.
func guildOf(t *testing.T, d []byte) string {
	t.Helper()
	var v struct {
		GuildID string `json:"guild_id"`
		ID      string `json:"id"`
	}
	if err := json.Unmarshal(d, &v); err != nil {
		t.Fatalf("body %.100s: %v", d, err)
	}
	return v.GuildID
}

func TestSessionHoldsTheGuildsOfItsShardForItsCount(t *testing.T) {
	srv := startServer(t, Config{Guilds: 12, LenientIdentify: true, MaxConcurrency: 4})
	for _, total := range []int{1, 3, 4} {
		sc := connectCount(t, srv, total)
		for shard, r := range sc.ready {
			var got []string
			for _, g := range r.Guilds {
				got = append(got, g.ID)
				if want, _ := ShardForGuild(g.ID, total); want != shard {
					t.Errorf("[%d, %d] READY lists guild %s of shard %d", shard, total, g.ID, want)
				}
			}
			if len(got) != 12/total {
				t.Errorf("[%d, %d] READY lists %d guilds, want %d", shard, total, len(got), 12/total)
			}
			if want := srv.ShardGuilds(shard, total); !slices.Equal(got, want) {
				t.Errorf("[%d, %d] READY guilds %v, ShardGuilds %v", shard, total, got, want)
			}
			for _, g := range got {
				p := sc.clients[shard].expectDispatch("GUILD_CREATE")
				var body struct{ ID string }
				_ = json.Unmarshal(p.D, &body)
				if body.ID != g {
					t.Errorf("[%d, %d] GUILD_CREATE for %s, want %s (READY's order)", shard, total, body.ID, g)
				}
			}
		}
	}
}

func TestGuildDispatchReachesItsShardOfEveryLiveCount(t *testing.T) {
	srv := startServer(t, Config{Guilds: 16, LenientIdentify: true, MaxConcurrency: 4})
	counts := []shardCount{connectCount(t, srv, 2), connectCount(t, srv, 4)}
	for _, sc := range counts {
		for _, c := range sc.clients {
			for range len(srv.ShardGuilds(0, sc.total)) {
				c.expectDispatch("GUILD_CREATE")
			}
		}
	}

	keys := map[string]uint64{}
	for _, g := range srv.Guilds() {
		key, err := srv.DispatchGuild(g, "MARKER", fmt.Appendf(nil, `{"guild_id":%q}`, g))
		if err != nil {
			t.Fatal(err)
		}
		keys[g] = key
	}
	for _, sc := range counts {
		for shard, c := range sc.clients {
			want := srv.ShardGuilds(shard, sc.total)
			var got []string
			for range want {
				got = append(got, guildOf(t, c.expectDispatch("MARKER").D))
			}
			if !slices.Equal(got, want) {
				t.Errorf("[%d, %d] received the dispatches of %v, want %v", shard, sc.total, got, want)
			}
		}
	}
	copies := map[uint64][]int{} // key → the totals its copies went to
	for _, d := range srv.Dispatches() {
		if d.Type != "MARKER" {
			continue
		}
		if d.Key != keys[d.Guild] {
			t.Errorf("copy of %s has key %d, DispatchGuild returned %d", d.Guild, d.Key, keys[d.Guild])
		}
		for _, s := range srv.Sessions() {
			if s.ID == d.SessionID {
				copies[d.Key] = append(copies[d.Key], s.Total)
			}
		}
	}
	for g, key := range keys {
		if got := copies[key]; !slices.Equal(got, []int{2, 4}) {
			t.Errorf("guild %s dispatch went to counts %v, want [2 4]", g, got)
		}
	}
}

func TestGeneratedTrafficIsOneStreamPerGuildCopiedToEveryCount(t *testing.T) {
	srv := startServer(t, Config{Guilds: 8, LenientIdentify: true, MaxConcurrency: 4})
	connectCount(t, srv, 2)
	connectCount(t, srv, 4)
	const perGuild = 25.0
	srv.SetEventRate(perGuild)
	time.Sleep(400 * time.Millisecond)
	srv.SetEventRate(0)

	totalOf := map[string]int{}
	for _, s := range srv.Sessions() {
		totalOf[s.ID] = s.Total
	}
	type copyOf struct {
		total, shard int
		data         string
	}
	byKey := map[uint64][]copyOf{}
	guildOfKey := map[uint64]string{}
	for _, d := range srv.Dispatches() {
		if d.Key == 0 {
			continue // READY and the GUILD_CREATEs of one session
		}
		byKey[d.Key] = append(byKey[d.Key], copyOf{totalOf[d.SessionID], d.Shard, string(d.Data)})
		guildOfKey[d.Key] = d.Guild
		if got := guildOf(t, d.Data); got != d.Guild {
			t.Fatalf("ledger names guild %s for a body of guild %s", d.Guild, got)
		}
	}
	// 8 guilds at 25/s for 0.4 s is about 80 events, not twice as many for
	// two shard counts.
	if n := len(byKey); n < 30 || n > 160 {
		t.Errorf("%d generated events, want about 80 (the rate is per guild, whatever the counts)", n)
	}
	for key, cs := range byKey {
		if len(cs) != 2 {
			t.Errorf("event %d has %d copies, want one per count: %+v", key, len(cs), cs)
			continue
		}
		for _, c := range cs {
			if want, _ := ShardForGuild(guildOfKey[key], c.total); c.shard != want {
				t.Errorf("event %d of guild %s went to shard %d of %d, want %d", key, guildOfKey[key], c.shard, c.total, want)
			}
		}
		if cs[0].total == cs[1].total || cs[0].data != cs[1].data {
			t.Errorf("event %d: copies %+v, want the same body on both counts", key, cs)
		}
	}
}

func TestEachConnectionDelaysFramesIndependentlyAndInOrder(t *testing.T) {
	const most = 15 * time.Millisecond
	srv := startServer(t, Config{Guilds: 1, ConnDelay: most, LenientIdentify: true})
	a, _ := connectReady(t, srv, CompressNone, 0, 1, 0)
	b, _ := connectReady(t, srv, CompressNone, 0, 2, 0)
	a.expectDispatch("GUILD_CREATE")
	b.expectDispatch("GUILD_CREATE")
	guild := srv.Guilds()[0]

	type arrival struct {
		seq int64
		at  time.Time
	}
	const n = 40
	collect := func(c *testClient) chan []arrival {
		out := make(chan []arrival, 1)
		go func() {
			var got []arrival
			for len(got) < n {
				p, ok := <-c.msgs
				if !ok {
					break
				}
				got = append(got, arrival{p.seq(), time.Now()})
			}
			out <- got
		}()
		return out
	}
	ca, cb := collect(a), collect(b)
	sent := make([]time.Time, n)
	for i := range sent {
		sent[i] = time.Now()
		if _, err := srv.DispatchGuild(guild, "MARKER", fmt.Appendf(nil, `{"guild_id":%q}`, guild)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * most) // so that each frame's delay is its own
	}
	ga, gb := <-ca, <-cb
	if len(ga) != n || len(gb) != n {
		t.Fatalf("received %d and %d dispatches, want %d each", len(ga), len(gb), n)
	}
	aFirst, bFirst := 0, 0
	for i := range n {
		if i > 0 && (ga[i].seq <= ga[i-1].seq || gb[i].seq <= gb[i-1].seq) {
			t.Fatalf("frames out of order at %d: %d after %d, %d after %d", i, ga[i].seq, ga[i-1].seq, gb[i].seq, gb[i-1].seq)
		}
		if ga[i].at.Before(gb[i].at) {
			aFirst++
		} else {
			bFirst++
		}
	}
	// Independent delays: each connection is sometimes the first to see a
	// dispatch (a shared or fixed delay would make one always first).
	if aFirst == 0 || bFirst == 0 {
		t.Errorf("connection a first %d times, b first %d times: the delays are not independent", aFirst, bFirst)
	}
}

func TestIdentifyOfAShardWithTooManyGuildsIsClosedWith4011(t *testing.T) {
	srv := startServer(t, Config{Guilds: 10, MaxGuildsPerShard: 3, LenientIdentify: true, SessionStartTotal: 100})
	c := dial(t, srv, "/gateway", CompressNone)
	c.expectOp(OpHello)
	c.identify(srv.cfg.Token, 0, 2, 0) // guilds 0, 2, 4, 6, 8: five
	if code, reason := c.expectClose(); code != CloseShardingRequired || reason != "Sharding required." {
		t.Fatalf("close %d %q, want 4011 \"Sharding required.\"", code, reason)
	}
	rec := srv.Record()
	if got := rec.Identifies[len(rec.Identifies)-1].Outcome; got != IdentifyShardingRequired {
		t.Errorf("identify outcome %q, want %q", got, IdentifyShardingRequired)
	}
	if len(srv.Sessions()) != 0 {
		t.Errorf("a session was created for a refused IDENTIFY: %+v", srv.Sessions())
	}

	// With four shards each holds two or three guilds: allowed.
	connectReady(t, srv, CompressNone, 1, 4, 0)

	// The threshold can change at runtime, for IDENTIFYs that follow.
	srv.SetMaxGuildsPerShard(2)
	c = dial(t, srv, "/gateway", CompressNone)
	c.expectOp(OpHello)
	c.identify(srv.cfg.Token, 0, 4, 0) // guilds 0, 4, 8
	if code, _ := c.expectClose(); code != CloseShardingRequired {
		t.Fatalf("close %d after lowering the threshold, want 4011", code)
	}
	connectReady(t, srv, CompressNone, 3, 4, 0) // guilds 3, 7
}

func TestGuildsPerShardAboveTheThresholdIsClosedWith4011(t *testing.T) {
	srv := startServer(t, Config{GuildsPerShard: 4, MaxGuildsPerShard: 3})
	c := dial(t, srv, "/gateway", CompressNone)
	c.expectOp(OpHello)
	c.identify(srv.cfg.Token, 0, 1, 0)
	if code, _ := c.expectClose(); code != CloseShardingRequired {
		t.Fatalf("close %d, want 4011", code)
	}
}

func TestIdentifyBucketsAndSessionStartsAreSharedByEveryCount(t *testing.T) {
	srv := startServer(t, Config{Guilds: 8, MaxConcurrency: 2, IdentifyWindow: 300 * time.Millisecond,
		SessionStartTotal: 3, SessionLimitInvalidSession: true})
	connectReady(t, srv, CompressNone, 0, 2, 0)
	// [2, 4] is in bucket 0 too (2 % 2), identifying right after [0, 2].
	c := dial(t, srv, "/gateway", CompressNone)
	c.expectOp(OpHello)
	c.identify(srv.cfg.Token, 2, 4, 0)
	if p := c.expectOp(OpInvalidSession); string(p.D) != "false" {
		t.Fatalf("op 9 d=%s, want false", p.D)
	}
	if v := srv.Record().ViolationsOf(ViolationIdentifyBucket); len(v) != 1 {
		t.Fatalf("bucket violations %+v, want one", v)
	}
	connectReady(t, srv, CompressNone, 1, 4, 0) // bucket 1 is free
	time.Sleep(srv.cfg.IdentifyWindow)
	connectReady(t, srv, CompressNone, 1, 2, 0) // the third session start of 3, over two counts
	time.Sleep(srv.cfg.IdentifyWindow)
	c = dial(t, srv, "/gateway", CompressNone)
	c.expectOp(OpHello)
	c.identify(srv.cfg.Token, 0, 4, 0)
	c.expectOp(OpInvalidSession)
	rec := srv.Record()
	if v := rec.ViolationsOf(ViolationSessionStartLimit); len(v) != 1 {
		t.Fatalf("session start violations %+v, want one: the counts share the budget", v)
	}
	if v := rec.ViolationsOf(ViolationIdentifyBucket); len(v) != 1 {
		t.Fatalf("bucket violations %+v, want still one", v)
	}
}

func TestRecommendedShardsCanRise(t *testing.T) {
	srv := startServer(t, Config{Shards: 4})
	srv.SetRecommendedShards(8)
	var body struct{ Shards int }
	getJSON(t, srv.APIURL()+"/gateway/bot", "Bot "+srv.cfg.Token, &body)
	if body.Shards != 8 {
		t.Fatalf("/gateway/bot shards = %d, want 8", body.Shards)
	}
}

package client

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/shardpool/gateway/internal/natstest"
	"github.com/shardpool/gateway/transport"
)

func TestTheContractMatchesTheGatewaysTransport(t *testing.T) {
	for _, c := range [][2]string{
		{PlanSubject, transport.PlanSubject}, {PresenceSubject, transport.PresenceSubject},
		{TimeoutHeader, transport.TimeoutHeader}, {ReplyHeader, transport.ReplyHeader},
		{ChunkLastHeader, transport.ChunkLastHeader}, {"chunk", transport.ReplyChunk},
		{SendSubject(17), transport.SendSubject(17)},
	} {
		if c[0] != c[1] {
			t.Errorf("client says %q, the gateway %q", c[0], c[1])
		}
	}
}

func TestShardForIsGuildIDShiftedModuloTotalShards(t *testing.T) {
	p := Plan{TotalShards: 16}
	for guild, want := range map[string]int{"41771983423143937": int((uint64(41771983423143937) >> 22) % 16), "0": 0, "4194304": 1} {
		if got, err := p.ShardFor(guild); err != nil || got != want {
			t.Errorf("%s: %d %v, want %d", guild, got, err, want)
		}
	}
	for _, bad := range []string{"", "guild", "-1"} {
		if _, err := p.ShardFor(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := (Plan{}).ShardFor("1"); err == nil {
		t.Error("a plan without shards computed a shard")
	}
}

// fakeGateway answers the plan and shard 1's send subject as the gateway
// does; answer decides each command's messages on the reply subject.
func fakeGateway(t *testing.T, answer func(nc *nats.Conn, m *nats.Msg)) *Client {
	t.Helper()
	ns := natstest.Run(t)
	gw, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Close)
	gw.Subscribe(PlanSubject, func(m *nats.Msg) { m.Respond([]byte(`{"total_shards":2,"shards_per_pool":2,"pools":1}`)) })
	gw.Subscribe(SendSubject(1), func(m *nats.Msg) { answer(gw, m) })
	gw.Flush()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return New(nc)
}

// guildOnShard1 is a guild of shard 1 of 2.
const guildOnShard1 = "4194304"

func chunk(i, n int) *nats.Msg {
	m := nats.NewMsg("")
	m.Data = []byte(`{"guild_id":"` + guildOnShard1 + `","members":[{},{}],"chunk_index":` + strconv.Itoa(i) + `,"chunk_count":` + strconv.Itoa(n) + `,"nonce":"gw-1"}`)
	m.Header.Set(ReplyHeader, "chunk")
	if i == n-1 {
		m.Header.Set(ChunkLastHeader, "true")
	}
	return m
}

func TestMembersYieldsTheChunksInOrderWhereverTheAckFalls(t *testing.T) {
	c := fakeGateway(t, func(nc *nats.Conn, m *nats.Msg) {
		for i := 0; i < 3; i++ {
			ch := chunk(i, 3)
			ch.Subject = m.Reply
			nc.PublishMsg(ch)
			if i == 0 {
				nc.Publish(m.Reply, []byte(`{"ok":true,"nonce":"gw-1"}`)) // after the first chunk
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var got []int
	for ch, err := range c.Members(ctx, AllMembers(guildOnShard1)) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ch.ChunkIndex)
	}
	if len(got) != 3 || got[0] != 0 || got[2] != 2 {
		t.Fatalf("chunks %v", got)
	}
}

func TestMembersEndsWithTheRateLimitedError(t *testing.T) {
	c := fakeGateway(t, func(nc *nats.Conn, m *nats.Msg) {
		nc.Publish(m.Reply, []byte(`{"ok":true,"nonce":"gw-2"}`))
		nc.Publish(m.Reply, []byte(`{"ok":false,"error":"Discord rate limited the request (RATE_LIMITED)","result":"rate_limited","retry_after_ms":29500}`))
	})
	n := 0
	for _, err := range c.Members(context.Background(), AllMembers(guildOnShard1)) {
		n++
		var e *Error
		if !errors.As(err, &e) || e.Result != "rate_limited" || e.RetryAfter != 29500*time.Millisecond {
			t.Fatalf("got %v", err)
		}
	}
	if n != 1 {
		t.Fatalf("%d yields, want the error once", n)
	}
}

func TestSendToShardCarriesTheDeadlineAndTurnsRefusalsIntoErrors(t *testing.T) {
	var timeout string
	var cmd Command
	c := fakeGateway(t, func(nc *nats.Conn, m *nats.Msg) {
		timeout = m.Header.Get(TimeoutHeader)
		json.Unmarshal(m.Data, &cmd)
		m.Respond([]byte(`{"ok":false,"error":"no room","result":"no_budget","retry_after_ms":1200}`))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := c.Send(ctx, guildOnShard1, Command{Op: OpPresenceUpdate, D: map[string]any{"status": "idle"}})
	var e *Error
	if !errors.As(err, &e) || e.Result != "no_budget" || e.RetryAfter != 1200*time.Millisecond {
		t.Fatalf("got %v", err)
	}
	if ms, _ := strconv.Atoi(timeout); ms <= 0 || ms > 2000 || cmd.Op != OpPresenceUpdate {
		t.Fatalf("timeout header %q, command %+v", timeout, cmd)
	}
}

func TestACommandForAShardNobodyRunsIsErrNoInstance(t *testing.T) {
	c := fakeGateway(t, func(*nats.Conn, *nats.Msg) {})
	start := time.Now()
	err := c.SendToShard(context.Background(), 0, Command{Op: OpPresenceUpdate, D: map[string]any{"status": "idle"}})
	if !errors.Is(err, ErrNoInstance) || time.Since(start) > time.Second {
		t.Fatalf("got %v after %v", err, time.Since(start))
	}
	for _, err := range c.Members(context.Background(), AllMembers("1")) { // shard 0 of 2
		if !errors.Is(err, ErrNoInstance) {
			t.Fatalf("members: %v", err)
		}
	}
}

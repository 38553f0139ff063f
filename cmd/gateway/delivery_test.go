package main

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shardpool/gateway/internal/discordsim"
	"github.com/shardpool/gateway/service/event"
)

// streamConfig is a stream's configuration as NATS holds it.
func (e *testEnv) streamConfig(name string) jetstream.StreamConfig {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, name)
	if err != nil {
		e.t.Fatalf("stream %s: %v", name, err)
	}
	return s.CachedInfo().Config
}

// operatorSets changes a stream as an operator does with the nats CLI,
// once the gateway has created it.
func (e *testEnv) operatorSets(name string, edit func(*jetstream.StreamConfig)) {
	e.t.Helper()
	e.eventually("stream "+name, 20*time.Second, func() bool { return e.streamCount(name) >= 0 })
	cfg := e.streamConfig(name)
	edit(&cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.js.UpdateStream(ctx, cfg); err != nil {
		e.t.Fatalf("update stream %s: %v", name, err)
	}
}

// An operator raised a stream's max age and duplicate window and limited
// its message size: the gateway, reconnecting twice, changes none of it
// and says once that the stream differs from what it recommends.
func TestStreamSettingsAnOperatorChangedSurviveReconnects(t *testing.T) {
	e := startEnv(t, envOptions{storage: "file", sim: discordsim.Config{Shards: 1}})
	e.waitShardsReady(1)
	e.operatorSets("EVENTS", func(c *jetstream.StreamConfig) {
		c.MaxAge, c.Duplicates, c.MaxMsgSize = time.Hour, time.Minute, 1<<20
	})
	// COMMANDS, left alone, is checked after EVENTS in every round.
	rounds := func() int { return len(e.logLines("stream up to date", "stream=COMMANDS")) }
	for i := 1; i <= 2; i++ {
		before := rounds()
		e.outage(100 * time.Millisecond)
		e.eventually("the streams checked after reconnect "+strconv.Itoa(i), 20*time.Second, func() bool { return rounds() > before })
		if c := e.streamConfig("EVENTS"); c.MaxAge != time.Hour || c.Duplicates != time.Minute || c.MaxMsgSize != 1<<20 {
			t.Fatalf("after reconnect %d EVENTS has max_age %v, duplicate_window %v, max_msg_size %d; want the operator's 1h, 1m, 1048576",
				i, c.MaxAge, c.Duplicates, c.MaxMsgSize)
		}
	}
	warnings := e.logLines("level=warn", "stream=EVENTS", "differ")
	if len(warnings) != 1 {
		t.Fatalf("%d warnings about EVENTS; want 1 (once, not per reconnect):\n%s", len(warnings), strings.Join(warnings, "\n"))
	}
	for _, s := range []string{"max_age=1h0m0s", "duplicate_window=1m0s", "max_msg_size=1048576"} {
		if !strings.Contains(warnings[0], s) {
			t.Errorf("the warning does not name %s:\n%s", s, warnings[0])
		}
	}
	if n := len(e.logLines("level=warn", "stream=COMMANDS")); n != 0 {
		t.Errorf("%d warnings about COMMANDS, which has the recommended settings", n)
	}
}

// An operator limits EVENTS to 16 KiB messages. A big GUILD_CREATE is
// refused and stored compact; a member event with a 20 KB nickname is
// refused compact too and dropped: counted, logged, and its shard goes on.
// Everything else is stored exactly once and the drain flushes.
func TestEventsTheStreamRefusesAreTruncatedOrDroppedAndStallNothing(t *testing.T) {
	e := startEnv(t, envOptions{sim: discordsim.Config{Shards: 1}})
	e.waitShardsReady(1)
	e.operatorSets("EVENTS", func(c *jetstream.StreamConfig) { c.MaxMsgSize = 16 << 10 })

	guild := e.sim.GuildIDForShard(0, 1, 7)
	big := e.sim.GuildCreateBody(0, guild, 500)
	if len(big) < 32<<10 || len(big) > 512<<10 {
		t.Fatalf("GUILD_CREATE of %d bytes; want between 32 KiB and the 1 MiB max_payload", len(big))
	}
	bigSeq := e.dispatch("GUILD_CREATE", big)
	poison := json.RawMessage(`{"guild_id":"` + guild + `","user":{"id":"424242"},"roles":[],"nick":"` + strings.Repeat("n", 20000) + `"}`)
	poisonSeq := e.dispatch("GUILD_MEMBER_ADD", poison)
	e.dispatch("GUILD_MEMBER_ADD", e.sim.MemberAddBody(guild, "434343"))
	e.settle()

	session := e.sim.CurrentSession(0)
	poisonID := event.ID(0, session, poisonSeq)
	want := expectedIDs(t, e.sim, true)
	delete(want, poisonID)
	e.assertExactlyOnce(want)
	for _, m := range e.streamMsgs("EVENTS") {
		if m.Header.Get(jetstream.MsgIDHeader) == event.ID(0, session, bigSeq) && !strings.Contains(string(m.Data), `"data_truncated":true`) {
			t.Errorf("the big GUILD_CREATE stored as %d bytes without data_truncated", len(m.Data))
		}
	}
	if v := e.metric("gateway_events_dropped_total", map[string]string{"shard_id": "0", "reason": "too_large"}); v != 1 {
		t.Errorf(`gateway_events_dropped_total{shard_id="0",reason="too_large"} = %v; want 1`, v)
	}
	drops := e.logLines("level=error", "event dropped")
	if len(drops) != 1 {
		t.Fatalf("%d drop log lines; want 1", len(drops))
	}
	for _, kv := range []string{"event_id=" + poisonID, "event_type=member.join", "shard_id=0", "seq=" + strconv.FormatInt(poisonSeq, 10)} {
		if !strings.Contains(drops[0], kv) {
			t.Errorf("the drop log line lacks %s:\n%s", kv, drops[0])
		}
	}
	if v := e.metric("gateway_circuit_breaker_transitions_total", map[string]string{"from": "closed", "to": "open"}); v != 0 {
		t.Errorf("the breaker opened %v times; refusals of a message must not trip it", v)
	}
	if err := e.stop(); err != nil || !e.m.drainedClean {
		t.Errorf("drain: err %v, every event acked %v; want a clean drain", err, e.m.drainedClean)
	}
}

// dispatch sends a dispatch on shard 0 and returns its seq.
func (e *testEnv) dispatch(t string, d []byte) int64 {
	e.t.Helper()
	seq, err := e.sim.Dispatch(0, t, d)
	if err != nil {
		e.t.Fatal(err)
	}
	return seq
}

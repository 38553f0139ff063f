package main

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shardpool/gateway/internal/discordsim"
)

// A GUILD_CREATE of a big guild (2 MiB) against a NATS server with the
// default max_payload (1 MiB): published compact, counted, logged, and it
// blocks nothing behind it.
func TestOversizeGuildCreateIsPublishedTruncated(t *testing.T) {
	e := startEnv(t, envOptions{sim: discordsim.Config{Shards: 1}})
	e.waitShardsReady(1)
	guild := e.sim.GuildIDForShard(0, 1, 7)
	d := e.sim.GuildCreateBody(0, guild, 5000)
	for len(d) < 2<<20 {
		d = e.sim.GuildCreateBody(0, guild, 2*strings.Count(string(d), `"joined_at"`)+5000)
	}
	if _, err := e.sim.Dispatch(0, "GUILD_CREATE", d); err != nil {
		t.Fatal(err)
	}
	if _, err := e.sim.Dispatch(0, "GUILD_MEMBER_ADD", e.sim.MemberAddBody(guild, strconv.Itoa(424242))); err != nil {
		t.Fatal(err)
	}
	e.eventually("both events stored", 20*time.Second, func() bool { return e.streamCount("EVENTS") == 2 })
	msgs := e.streamMsgs("EVENTS")
	var body struct {
		GuildID       string                     `json:"guild_id"`
		Data          map[string]json.RawMessage `json:"data"`
		DataTruncated bool                       `json:"data_truncated"`
	}
	if err := json.Unmarshal(msgs[0].Data, &body); err != nil {
		t.Fatal(err)
	}
	if !body.DataTruncated || body.GuildID != guild || len(msgs[0].Data) > 64<<10 {
		t.Fatalf("oversize event stored as %d bytes, truncated=%v guild=%s", len(msgs[0].Data), body.DataTruncated, body.GuildID)
	}
	for _, k := range []string{"id", "name", "member_count", "owner_id"} {
		if _, ok := body.Data[k]; !ok {
			t.Errorf("compact data lacks %s", k)
		}
	}
	if _, ok := body.Data["members"]; ok {
		t.Error("compact data kept the members array")
	}
	if v := e.metric("gateway_events_oversize_total", map[string]string{"event_type": "guild.join"}); v != 1 {
		t.Errorf("gateway_events_oversize_total = %v", v)
	}
	if !strings.Contains(e.logs.String(), "guild_id="+guild) || !strings.Contains(e.logs.String(), "max_payload") {
		t.Error("no warning naming the guild")
	}
	e.settle()
}

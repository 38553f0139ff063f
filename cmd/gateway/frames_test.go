package main

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/shardpool/gateway/internal/discordsim"
)

func TestEndToEndEveryCompressionModeSurvivesAResume(t *testing.T) {
	for _, mode := range []string{"none", "zlib-stream", "zstd-stream"} {
		t.Run(mode, func(t *testing.T) {
			e := startEnv(t, envOptions{
				sim:    discordsim.Config{Shards: 1, GuildsPerShard: 5, MembersPerGuild: 20, EventRate: 200},
				config: func(c *Config) { c.Compression = mode },
			})
			e.waitShardsReady(1)
			time.Sleep(200 * time.Millisecond)
			// A new connection must start a fresh compression context.
			if err := e.sim.Drop(0); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := e.sim.WaitResumes(ctx, 1); err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond)
			e.sim.SetEventRate(0)
			e.settle()
			if r := e.sim.Record().Resumes[0]; r.Outcome != discordsim.ResumeResumed {
				t.Fatalf("resume %+v", r)
			}
			if v := e.metric("gateway_frames_malformed_total", map[string]string{"shard_id": "0"}); v != 0 {
				t.Fatalf("%v malformed frames", v)
			}
			e.assertExactlyOnce(expectedIDs(t, e.sim, false))
		})
	}
}

func TestEndToEndMalformedFramesAreCountedAndSkipped(t *testing.T) {
	for _, mode := range []string{"none", "zlib-stream"} {
		t.Run(mode, func(t *testing.T) {
			e := startEnv(t, envOptions{
				sim:    discordsim.Config{Shards: 1},
				config: func(c *Config) { c.Compression = mode },
			})
			e.waitShardsReady(1)
			for _, frame := range []string{
				`{"op":0,"s":`,     // truncated JSON
				`[1,2,3]`,          // not an object
				`{"op":99,"d":{}}`, // unknown opcode
				`{"op":0,"s":9000,"t":"GUILD_MEMBER_ADD","d":{"guild_id":12}}`, // bad routing field
				`{"op":0,"s":9001,"t":"SOMETHING_NEW","d":{}}`,                 // unknown event type
			} {
				if err := e.sim.SendRaw(0, []byte(frame)); err != nil {
					t.Fatal(err)
				}
			}
			g := e.sim.GuildIDForShard(0, 1, 0)
			for i := 0; i < 3; i++ {
				if _, err := e.sim.Dispatch(0, "GUILD_MEMBER_ADD", e.sim.MemberAddBody(g, strconv.Itoa(500+i))); err != nil {
					t.Fatal(err)
				}
			}
			e.eventually("events after the bad frames", 10*time.Second, func() bool { return e.streamCount("EVENTS") == 3 })
			if v := e.metric("gateway_frames_malformed_total", map[string]string{"reason": "json"}); v < 2 {
				t.Errorf("json malformed %v, want 2", v)
			}
			if v := e.metric("gateway_frames_malformed_total", map[string]string{"reason": "payload"}); v < 2 {
				t.Errorf("payload malformed %v, want 2 (unknown opcode, bad guild_id)", v)
			}
			if v := e.metric("gateway_events_received_total", map[string]string{"event_type": "SOMETHING_NEW"}); v != 1 {
				t.Errorf("unknown event type counted %v times, want 1", v)
			}
			if st := e.status(); st.Shards[0].State != "ready" {
				t.Fatalf("shard state %q after bad frames", st.Shards[0].State)
			}
			if n := len(e.sim.Record().Identifies); n != 1 {
				t.Fatalf("%d identifies: the bad frames cost the session", n)
			}
		})
	}
}

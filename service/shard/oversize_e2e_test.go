package shard

import (
	"context"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// A dispatch over the shard's Limits is skipped, counted and stepped over,
// on the same connection. Closing and resuming cannot help: Discord replays
// every dispatch after the resume point, the oversized one first, so a shard
// that reconnects over it loops forever. sim.Dispatch puts it in the
// session's replay log, as on Discord.
func TestOversizedDispatchIsSkippedWithoutReconnecting(t *testing.T) {
	limits := Limits{MaxFrameBytes: 32 << 10, MaxMessageBytes: 64 << 10}
	// tail ends the oversized dispatch and is repeated by the ones after
	// it, so with transport compression they refer back into its data: a
	// shard that dropped the oversized message without running it through
	// its decompression context would corrupt or lose them.
	tail := "shared with the dispatches that follow: " + strings.Repeat("guild member list ", 8)
	for _, tc := range []struct {
		name, compression string
		d                 []byte
	}{
		// Uncompressed, the websocket message is the payload.
		{"none, frame over MaxFrameBytes", CompressionNone, guildCreateBody(strings.Repeat("a", 1<<20), tail)},
		// 42 KiB of random bytes cannot compress below 42 KiB, so the
		// message on the wire is over MaxFrameBytes; inflated (base64, 56
		// KiB) it is under MaxMessageBytes.
		{"zlib-stream, frame over MaxFrameBytes (incompressible)", CompressionZlibStream, guildCreateBody(incompressibleText(42<<10), tail)},
		{"zstd-stream, frame over MaxFrameBytes (incompressible)", CompressionZstdStream, guildCreateBody(incompressibleText(42<<10), tail)},
		// A zip bomb: a few KiB on the wire, 1 MiB inflated.
		{"zlib-stream, message over MaxMessageBytes (zip bomb)", CompressionZlibStream, guildCreateBody(strings.Repeat("a", 1<<20), tail)},
		{"zstd-stream, message over MaxMessageBytes (zip bomb)", CompressionZstdStream, guildCreateBody(strings.Repeat("a", 1<<20), tail)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runShard(t, tc.compression, limits)
			want := []simDispatched{sendDispatch(t, r.sim, "GUILD_MEMBER_ADD", memberAddBody(0, tail))}
			big := sendDispatch(t, r.sim, "GUILD_CREATE", tc.d)
			for i := 1; i <= 5; i++ {
				want = append(want, sendDispatch(t, r.sim, "GUILD_MEMBER_ADD", memberAddBody(i, tail)))
			}
			last := want[len(want)-1].Seq
			r.waitUnlessReconnected(t, "the dispatches after the oversized one published and acked", func() bool {
				return r.pub.has(last) && r.shard.Status().LastAckedSeq >= last
			})

			r.expectOneConnection(t)
			if got := r.counterByLabel(t, "gateway_frames_malformed_total", "reason"); len(got) != 1 || got["too_large"] != 1 {
				t.Errorf("gateway_frames_malformed_total by reason %v, want too_large 1 and nothing else", got)
			}
			expectPublishedExactly(t, r.pub, want)
			if acked := r.shard.Status().LastAckedSeq; acked < last {
				t.Errorf("resume point seq %d, want %d: the oversized seq %d pins it", acked, last, big.Seq)
			}
			if t.Failed() {
				return
			}

			// The resume point is past it, so a later RESUME does not bring
			// the oversized dispatch back.
			if err := r.sim.Drop(0); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if err := r.sim.WaitResumes(ctx, 1); err != nil {
				t.Fatalf("no RESUME after a dropped connection: %v", err)
			}
			if res := r.sim.Record().Resumes[0]; res.Seq < last || res.Replayed != 0 {
				t.Errorf("RESUME from seq %d replayed %d dispatches, want seq %d and none", res.Seq, res.Replayed, last)
			}
			waitShard(t, "ready after the RESUME", r.shard.Ready)
			if got := r.counterByLabel(t, "gateway_frames_malformed_total", "reason"); got["too_large"] != 1 {
				t.Errorf("too_large %v after the RESUME, want still 1", got["too_large"])
			}
		})
	}
}

// guildCreateBody is a GUILD_CREATE d carrying filler (a JSON-safe string) and
// ending with tail.
func guildCreateBody(filler, tail string) []byte {
	return fmt.Appendf(nil, `{"id":"41771983423143937","name":"huge guild","unavailable":false,"filler":"%s","note":%q}`, filler, tail)
}

// incompressibleText returns n random bytes as base64: incompressible beyond the
// 6 bits of each character. The seed is fixed so runs are repeatable.
func incompressibleText(n int) string {
	b := make([]byte, n)
	rng := rand.NewChaCha8([32]byte{'s', 'h', 'a', 'r', 'd'})
	_, _ = rng.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

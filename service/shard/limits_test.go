package shard

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shardpool/gateway/internal/discordsim"
	"github.com/shardpool/gateway/service/event"
	"github.com/shardpool/gateway/service/publish"
)

// runShard runs one shard against sim with an in-memory publisher that acks
// everything at once.
func runShard(t *testing.T, sim *discordsim.Server, compression string, limits Limits) (*Shard, *Metrics) {
	t.Helper()
	m := NewMetrics(prometheus.NewRegistry())
	s := New(Config{
		ID: 0, Total: 1, Token: discordsim.DefaultToken, GatewayURL: sim.GatewayURL(), Compression: compression,
		Limits: limits, Backoff: Backoff{Base: 10 * time.Millisecond, Max: 100 * time.Millisecond},
		Identify:  NewBucketLimiter(1, 50*time.Millisecond),
		Publisher: publish.PublisherFunc(func(_ context.Context, _ *event.Event, done publish.Done) error { done(nil); return nil }),
		Metrics:   m,
		Logger:    log.NewNopLogger(),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitShard(t, "ready", func() bool { return s.Ready() })
	return s, m
}

func waitShard(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestOversizedFramesCloseAndResumeTheShard(t *testing.T) {
	for _, tc := range []struct {
		name, compression string
		limits            Limits
	}{
		{"frame over MaxFrameBytes", CompressionNone, Limits{MaxFrameBytes: 32 << 10, MaxMessageBytes: 1 << 20}},
		{"zlib message over MaxMessageBytes (zip bomb)", CompressionZlibStream, Limits{MaxFrameBytes: 32 << 10, MaxMessageBytes: 64 << 10}},
		{"zstd message over MaxMessageBytes (zip bomb)", CompressionZstdStream, Limits{MaxFrameBytes: 32 << 10, MaxMessageBytes: 64 << 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sim := discordsim.New(discordsim.Config{})
			if err := sim.Start(); err != nil {
				t.Fatal(err)
			}
			defer sim.Close()
			s, m := runShard(t, sim, tc.compression, tc.limits)
			// 1 MiB of one byte: tiny once compressed, huge once inflated.
			huge := []byte(`{"op":0,"s":99999,"t":"TYPING_START","d":{"x":"` + strings.Repeat("a", 1<<20) + `"}}`)
			if err := sim.SendRaw(0, huge); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if err := sim.WaitResumes(ctx, 1); err != nil {
				t.Fatalf("no resume after the oversized frame: %v", err)
			}
			waitShard(t, "ready again", func() bool { return s.Ready() })
			if n := len(sim.Record().Identifies); n != 1 {
				t.Fatalf("%d identifies: the session was lost", n)
			}
			if !bytes.Contains([]byte(s.Status().LastError), []byte("limit")) && !bytes.Contains([]byte(s.Status().LastError), []byte("too")) {
				t.Errorf("last error %q does not say what happened", s.Status().LastError)
			}
			if v := testutil.ToFloat64(m.Reconnects.WithLabelValues("0", "frame_too_large")); v != 1 {
				t.Errorf("frame_too_large reconnects %v, want 1", v)
			}
		})
	}
}

package shard

import (
	"context"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardpool/gateway/internal/discordsim"
	"github.com/shardpool/gateway/internal/natstest"
	"github.com/shardpool/gateway/service/event"
	"github.com/shardpool/gateway/service/publish"
	jspub "github.com/shardpool/gateway/service/publish/jetstream"
)

// BenchmarkHotPath is the whole hot path per event, as the gateway runs it:
// a websocket message of a realistic mix (the pipeline benchmark's:
// ~600-byte member events, interactions, a 100-member GUILD_CREATE every
// 200) is read and inflated by the payload reader, its envelope parsed,
// the event built, the session stepped, and the event published through
// the publish path cmd/gateway builds (buffer, logging, circuit breaker,
// instrumenting, oversize check) until its ack moves the shard's resume
// point. Only the socket and the broker are not real: the messages come
// pre-encoded from memory, and the broker is
//
//   - ack: a publisher that acks every event at once, so the numbers are
//     the gateway's own (allocs/op must be 0);
//   - jetstream: the JetStream publisher over a NATS connection to an
//     embedded server (memory storage), whose allocations and CPU (the
//     server's included, in the same process) count too.
//
// ns/op is wall time per event (the read and the publish goroutines
// overlap); cpu-ns/op is the process's CPU time per event.
func BenchmarkHotPath(b *testing.B) {
	payloads := hotPathPayloads(2000)
	for _, broker := range []string{"ack", "jetstream"} {
		for _, compression := range []string{CompressionNone, CompressionZlibStream, CompressionZstdStream} {
			b.Run(broker+"/"+compression, func(b *testing.B) {
				var bottom publish.Publisher = publish.PublisherFunc(ackAtOnce)
				maxPayload := func() int64 { return 1 << 20 }
				if broker == "jetstream" {
					p := benchJetStream(b)
					bottom, maxPayload = p, p.MaxPayload
				}
				benchHotPath(b, compression, encodeStream(b, compression, payloads), bottom, maxPayload)
			})
		}
	}
}

func ackAtOnce(_ context.Context, _ *event.Event, done publish.Done) error {
	done(nil)
	return nil
}

// hotPathPayloads are a READY, then n dispatches of the pipeline
// benchmark's mix, as Discord frames them.
func hotPathPayloads(n int) [][]byte {
	sim := discordsim.New(discordsim.Config{})
	frame := func(t string, seq int, d []byte) []byte {
		return []byte(`{"t":"` + t + `","s":` + strconv.Itoa(seq) + `,"op":0,"d":` + string(d) + `}`)
	}
	out := [][]byte{frame("READY", 1, []byte(`{"v":10,"session_id":"bench","resume_gateway_url":"wss://gateway.example","guilds":[]}`))}
	for i := 0; i < n; i++ {
		g := sim.GuildIDForShard(0, 1, i%50)
		u := strconv.Itoa(100000000000000000 + i)
		var t string
		var d []byte
		switch {
		case i%200 == 199:
			t, d = "GUILD_CREATE", sim.GuildCreateBody(0, sim.GuildIDForShard(0, 1, 1000+i), 100)
		case i%8 == 0:
			t, d = "INTERACTION_CREATE", sim.InteractionCreateBody(g, "41771983423143937", u)
		case i%3 == 0:
			t, d = "GUILD_MEMBER_ADD", sim.MemberAddBody(g, u)
		case i%3 == 1:
			t, d = "GUILD_MEMBER_UPDATE", sim.MemberUpdateBody(g, u)
		default:
			t, d = "GUILD_MEMBER_REMOVE", sim.MemberRemoveBody(g, u)
		}
		out = append(out, frame(t, i+2, d))
	}
	return out
}

// benchJetStream is a JetStream publisher connected to an embedded server
// with the gateway's streams.
func benchJetStream(b *testing.B) *jspub.Publisher {
	ns := natstest.Run(b)
	b.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	for _, sc := range jspub.Streams(jspub.StreamConfig{Storage: jetstream.MemoryStorage, Replicas: 1}) {
		sc.MaxMsgs = 100000 // memory storage: keep the heap flat over a long run
		if _, err := js.CreateOrUpdateStream(context.Background(), sc); err != nil {
			b.Fatal(err)
		}
	}
	p, err := jspub.NewPublisher(nc, log.NewNopLogger())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.Close)
	return p
}

// benchPublishPath is the publish path of cmd/gateway (openPublishPath)
// over bottom.
func benchPublishPath(reg *prometheus.Registry, bottom publish.Publisher, maxPayload func() int64) *publish.Buffer {
	logger := log.NewNopLogger()
	breaker := publish.NewBreaker(publish.BreakerConfig{}, publish.NewBreakerMetrics(reg), logger)
	pub := bottom
	pub = publish.Oversize(maxPayload, publish.NewOversizeCounter(reg), logger)(pub)
	pub = publish.Instrumenting(publish.NewRouteMetrics(reg))(pub)
	pub = publish.CircuitBreaker(breaker)(pub)
	pub = publish.Logging(logger, time.Minute)(pub)
	return publish.NewBuffer(pub, publish.BufferConfig{MaxEvents: 500000, MaxBytes: 256 << 20, Metrics: publish.NewBufferMetrics(reg), Logger: logger})
}

func benchHotPath(b *testing.B, compression string, msgs []fakeMessage, bottom publish.Publisher, maxPayload func() int64) {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	buffer := benchPublishPath(reg, bottom, maxPayload)
	defer buffer.Close()
	router, _ := event.NewRouter(nil)
	s := New(Config{ID: 0, Total: 1, Compression: compression, Publisher: buffer,
		Metrics: NewMetrics(reg), Logger: log.NewNopLogger(), Commands: CommandConfig{Events: router}})
	l := &link{conn: &conn{}, ctx: ctx}
	s.sess.Handle(Dialed{}, nil)
	s.sess.Handle(Hello{Interval: time.Minute}, nil)
	src := &fakeSource{msgs: msgs}
	var pr *payloadReader
	var r *reader
	sessions := 0
	// start opens the stream again: a new connection, whose READY starts
	// a new session. Each gets its own session id, so that JetStream does
	// not take the events for duplicates of the last round's.
	start := func() {
		if pr != nil {
			pr.Close()
		}
		src.next = 0
		pr = newPayloadReader(src, compression, DefaultLimits, nil)
		r = s.newReader(l)
		next(b, s, pr, r)
		if !s.Ready() {
			b.Fatal("not READY")
		}
		sessions++
		r.session = "bench-" + strconv.Itoa(sessions)
	}
	// One round first, so that the pools hold what a steady state keeps
	// in flight: the measured rounds are the steady state.
	start()
	for src.next < len(msgs) {
		next(b, s, pr, r)
	}
	flush(b, buffer)
	start()
	b.SetBytes(int64(totalBytes(msgs) / len(msgs)))
	b.ReportAllocs()
	cpu, mallocs := processCPU(), heapMallocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if src.next == len(msgs) {
			b.StopTimer()
			flush(b, buffer)
			m := heapMallocs()
			start() // a new connection's decoder: not per event
			mallocs += heapMallocs() - m
			b.StartTimer()
		}
		next(b, s, pr, r)
	}
	flush(b, buffer)
	b.StopTimer()
	b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
	// allocs/op rounds down; this says how far below one it is.
	b.ReportMetric(float64(heapMallocs()-mallocs)/float64(b.N), "mallocs/op")
	if st := s.Status(); st.LastAckedSeq != st.LastSeq {
		b.Fatalf("resume point %d, last seq %d: not every event was acked", st.LastAckedSeq, st.LastSeq)
	}
	pr.Close()
}

// next reads, builds and publishes one payload as the read loop does.
func next(b *testing.B, s *Shard, pr *payloadReader, r *reader) {
	msg, err := pr.Next()
	if err != nil {
		b.Fatal(err)
	}
	if s.payload(context.Background(), r, msg, time.Now()) != nil {
		b.Fatal("the connection ended")
	}
}

func flush(b *testing.B, buffer *publish.Buffer) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := buffer.Flush(ctx); err != nil {
		b.Fatal(err)
	}
}

// heapMallocs is the number of heap allocations so far.
func heapMallocs() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.Mallocs
}

// processCPU is the CPU time the process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

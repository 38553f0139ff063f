package jetstream

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shardpool/gateway/internal/natstest"
	"github.com/shardpool/gateway/service/event"
)

// setup starts a server with the streams and returns a connection and a
// JetStream context on it.
func setup(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc := connect(t, natstest.Run(t), log.NewNopLogger())
	js := newJetStream(t, nc)
	if err := EnsureStreams(context.Background(), js, StreamConfig{Storage: jetstream.MemoryStorage}, log.NewNopLogger()); err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func streamMsgs(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.Msgs
}

func TestPublishAcksEveryEventOnceAndStoresIt(t *testing.T) {
	nc, js := setup(t)
	p := newPublisher(t, nc)
	const n = 1000
	rec := newDoneRecorder(n)
	events := map[string]int{}
	for i := range n {
		ev := newEvent(t, i)
		events[ev.Subject]++
		if err := p.Publish(context.Background(), ev, rec.done(i)); err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
	}
	rec.wait(t, 10*time.Second)
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i, errs := range rec.snapshot() {
		if len(errs) != 1 || errs[0] != nil {
			t.Fatalf("event %d: done calls %v; want one done(nil)", i, errs)
		}
	}
	wantCommands := uint64(events["commands.interaction"])
	if got := streamMsgs(t, js, StreamCommands); got != wantCommands {
		t.Errorf("COMMANDS holds %d messages; want %d", got, wantCommands)
	}
	if got := streamMsgs(t, js, StreamEvents); got != n-wantCommands {
		t.Errorf("EVENTS holds %d messages; want %d", got, n-wantCommands)
	}
}

func TestPublishSendsTheBodyWithTheEventIDAsMsgID(t *testing.T) {
	nc, js := setup(t)
	p := newPublisher(t, nc)
	ev := newEvent(t, 0)
	rec := newDoneRecorder(1)
	if err := p.Publish(context.Background(), ev, rec.done(0)); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, 5*time.Second)
	s, err := js.Stream(context.Background(), StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != ev.Subject || !bytes.Equal(m.Data, ev.Body) || m.Header.Get(jetstream.MsgIDHeader) != ev.ID {
		t.Errorf("stored %s %q %v; want %s %q with Nats-Msg-Id %s", m.Subject, m.Data, m.Header, ev.Subject, ev.Body, ev.ID)
	}
}

func TestPublishDeduplicatesARepublishedEvent(t *testing.T) {
	nc, js := setup(t)
	p := newPublisher(t, nc)
	ev := newEvent(t, 0)
	rec := newDoneRecorder(2)
	for i := range 2 {
		// A replayed dispatch: same ID, new Event value.
		copy := *ev
		if err := p.Publish(context.Background(), &copy, rec.done(i)); err != nil {
			t.Fatal(err)
		}
		if err := p.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	rec.wait(t, 5*time.Second)
	for i, errs := range rec.snapshot() {
		if len(errs) != 1 || errs[0] != nil {
			t.Errorf("publish %d: done calls %v; want one done(nil) (a duplicate is a success)", i, errs)
		}
	}
	if got := streamMsgs(t, js, StreamEvents); got != 1 {
		t.Errorf("EVENTS holds %d messages; want 1", got)
	}
}

func TestPublishReportsAnEventNoStreamTakes(t *testing.T) {
	nc, _ := setup(t)
	p := newPublisher(t, nc)
	ev := newEvent(t, 0)
	ev.Subject = "elsewhere.member.join"
	rec := newDoneRecorder(1)
	if err := p.Publish(context.Background(), ev, rec.done(0)); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, 5*time.Second)
	if errs := rec.snapshot()[0]; len(errs) != 1 || !errors.Is(errs[0], jetstream.ErrNoStreamResponse) {
		t.Errorf("done calls %v; want one done(ErrNoStreamResponse)", errs)
	}
}

func TestPublishFailsAnEventWhoseAckTimesOut(t *testing.T) {
	nc := connect(t, natstest.Run(t, withoutJetStream), log.NewNopLogger())
	swallow(t, nc)
	p := newPublisher(t, nc, WithAckTimeout(100*time.Millisecond))
	rec := newDoneRecorder(1)
	if err := p.Publish(context.Background(), newEvent(t, 0), rec.done(0)); err != nil {
		t.Fatal(err)
	}
	rec.wait(t, 5*time.Second)
	if errs := rec.snapshot()[0]; len(errs) != 1 || !errors.Is(errs[0], jetstream.ErrAsyncPublishTimeout) {
		t.Errorf("done calls %v; want one done(ErrAsyncPublishTimeout)", errs)
	}
	// done runs before the in-flight count drops: wait for it.
	waitFor(t, "nothing pending after the timeout", func() bool { return p.Pending() == 0 })
}

func TestPublishFailsInFlightEventsWhenTheServerGoesAway(t *testing.T) {
	s := natstest.Run(t, withoutJetStream)
	nc := connect(t, s, log.NewNopLogger())
	swallow(t, nc)
	p := newPublisher(t, nc, WithAckTimeout(time.Minute)) // the disconnect must fail them, not the timeout
	const n = 50
	rec := newDoneRecorder(n)
	for i := range n {
		if err := p.Publish(context.Background(), newEvent(t, i), rec.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	if got := p.Pending(); got != n {
		t.Fatalf("%d pending; want %d", got, n)
	}

	s.Shutdown()
	rec.wait(t, 10*time.Second)
	for i, errs := range rec.snapshot() {
		if len(errs) != 1 || !errors.Is(errs[0], nats.ErrDisconnected) {
			t.Errorf("event %d: done calls %v; want one done(ErrDisconnected)", i, errs)
		}
	}

	// While disconnected, Publish refuses the event at once.
	waitFor(t, "reconnecting", nc.IsReconnecting)
	var called atomic.Bool
	err := p.Publish(context.Background(), newEvent(t, n), func(error) { called.Store(true) })
	if err == nil {
		t.Error("Publish while disconnected returned nil")
	}
	if p.Pending() != 0 {
		t.Error("a refused event is pending")
	}
	time.Sleep(50 * time.Millisecond)
	if called.Load() {
		t.Error("done called for a refused event")
	}
}

func TestPublishResolvesEveryEventWhenTheServerStopsMidFlight(t *testing.T) {
	s := natstest.Run(t)
	nc := connect(t, s, log.NewNopLogger())
	if err := EnsureStreams(context.Background(), newJetStream(t, nc), StreamConfig{Storage: jetstream.FileStorage}, log.NewNopLogger()); err != nil {
		t.Fatal(err)
	}
	p := newPublisher(t, nc, WithAckTimeout(2*time.Second), WithMaxPending(256))
	const n = 3000
	rec := newDoneRecorder(n)
	var refused atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range n {
			if err := p.Publish(context.Background(), newEvent(t, i), rec.done(i)); err != nil {
				refused.Add(1)
				rec.done(i)(errors.New("refused")) // counted as resolved
			}
			if i == n/3 {
				go s.Shutdown()
			}
		}
	}()
	wg.Wait()
	rec.wait(t, 15*time.Second)

	var acked, failed int
	for i, errs := range rec.snapshot() {
		if len(errs) != 1 {
			t.Fatalf("event %d: %d done calls %v; want exactly one", i, len(errs), errs)
		}
		if errs[0] == nil {
			acked++
		} else {
			failed++
		}
	}
	t.Logf("%d acked, %d failed (%d refused by Publish)", acked, failed, refused.Load())
	if failed == 0 {
		t.Error("no event failed although the server stopped mid-flight")
	}
}

func TestPublishBlocksAtMaxPendingUntilCtxEnds(t *testing.T) {
	nc := connect(t, natstest.Run(t, withoutJetStream), log.NewNopLogger())
	swallow(t, nc)
	p := newPublisher(t, nc, WithMaxPending(2), WithAckTimeout(time.Minute))
	rec := newDoneRecorder(2)
	for i := range 2 {
		if err := p.Publish(context.Background(), newEvent(t, i), rec.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	var called atomic.Bool
	err := p.Publish(ctx, newEvent(t, 2), func(error) { called.Store(true) })
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) < 90*time.Millisecond {
		t.Errorf("third Publish = %v after %s; want DeadlineExceeded after blocking", err, time.Since(start))
	}
	if called.Load() || p.Pending() != 2 {
		t.Errorf("the refused event was accepted (done called %v, %d pending)", called.Load(), p.Pending())
	}
}

func TestPublishProceedsWhenASlotFrees(t *testing.T) {
	nc, _ := setup(t)
	p := newPublisher(t, nc, WithMaxPending(1))
	const n = 200
	rec := newDoneRecorder(n)
	for i := range n {
		if err := p.Publish(context.Background(), newEvent(t, i), rec.done(i)); err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
	}
	rec.wait(t, 10*time.Second)
}

func TestFlushWaitsForEveryAck(t *testing.T) {
	nc, _ := setup(t)
	p := newPublisher(t, nc)
	const n = 500
	var resolved atomic.Int64
	for i := range n {
		if err := p.Publish(context.Background(), newEvent(t, i), func(error) { resolved.Add(1) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := resolved.Load(); got != n {
		t.Errorf("Flush returned with %d of %d events resolved", got, n)
	}
	if err := p.Flush(context.Background()); err != nil {
		t.Errorf("Flush with nothing in flight = %v", err)
	}
}

func TestFlushGivesUpWhenCtxEnds(t *testing.T) {
	nc := connect(t, natstest.Run(t, withoutJetStream), log.NewNopLogger())
	swallow(t, nc)
	p := newPublisher(t, nc, WithAckTimeout(time.Minute))
	if err := p.Publish(context.Background(), newEvent(t, 0), func(error) {}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := p.Flush(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Flush = %v; want DeadlineExceeded while an ack is outstanding", err)
	}
}

func TestCloseFailsPendingEventsAndRefusesNewOnes(t *testing.T) {
	nc := connect(t, natstest.Run(t, withoutJetStream), log.NewNopLogger())
	swallow(t, nc)
	p := newPublisher(t, nc, WithMaxPending(2), WithAckTimeout(time.Minute))
	rec := newDoneRecorder(2)
	for i := range 2 {
		if err := p.Publish(context.Background(), newEvent(t, i), rec.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	blocked := make(chan error, 1)
	go func() { blocked <- p.Publish(context.Background(), newEvent(t, 2), func(error) {}) }()
	time.Sleep(50 * time.Millisecond) // let it block on the full publisher

	flushed := make(chan error, 1)
	go func() { flushed <- p.Flush(context.Background()) }()

	p.Close()
	rec.wait(t, 5*time.Second)
	for i, errs := range rec.snapshot() {
		if len(errs) != 1 || !errors.Is(errs[0], ErrClosed) {
			t.Errorf("event %d: done calls %v; want one done(ErrClosed)", i, errs)
		}
	}
	if err := <-blocked; !errors.Is(err, ErrClosed) {
		t.Errorf("blocked Publish = %v; want ErrClosed", err)
	}
	if err := <-flushed; err != nil {
		t.Errorf("Flush during Close = %v; want nil once nothing is in flight", err)
	}
	if err := p.Publish(context.Background(), newEvent(t, 3), func(error) {}); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close = %v; want ErrClosed", err)
	}
	p.Close() // idempotent
}

func TestPublishHonoursAnEndedCtx(t *testing.T) {
	nc, _ := setup(t)
	p := newPublisher(t, nc)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Publish(ctx, newEvent(t, 0), func(error) { t.Error("done called") }); !errors.Is(err, context.Canceled) {
		t.Errorf("Publish = %v; want Canceled", err)
	}
}

// BenchmarkPublish measures Publish through to the ack against an
// embedded server, so it counts the server's work too: an upper bound for
// the client's cost per event.
func BenchmarkPublish(b *testing.B) {
	s := natstest.Run(b)
	nc := connect(b, s, log.NewNopLogger())
	if err := EnsureStreams(context.Background(), newJetStream(b, nc), StreamConfig{Storage: jetstream.MemoryStorage}, log.NewNopLogger()); err != nil {
		b.Fatal(err)
	}
	p := newPublisher(b, nc)
	events := make([]*event.Event, 1024)
	for i := range events {
		events[i] = newEvent(b, i)
	}
	var failed atomic.Int64
	done := func(err error) {
		if err != nil {
			failed.Add(1)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := p.Publish(context.Background(), events[i%len(events)], done); err != nil {
			b.Fatal(err)
		}
		i++
	}
	if err := p.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d publishes failed", n)
	}
}

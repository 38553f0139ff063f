package publish

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sony/gobreaker/v2"

	"github.com/shardpool/gateway/service/event"
)

// fakeBroker is the next layer in unit tests: it records what it was handed
// and settles acks when told to.
type fakeBroker struct {
	mu      sync.Mutex
	refuse  error          // returned by Publish when set
	pending []func(error)  // done callbacks not yet settled
	got     []*event.Event // every accepted attempt, in order
}

func (f *fakeBroker) Publish(_ context.Context, ev *event.Event, done Done) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refuse != nil {
		return f.refuse
	}
	f.got = append(f.got, ev)
	f.pending = append(f.pending, done)
	return nil
}

func (f *fakeBroker) setRefuse(err error) {
	f.mu.Lock()
	f.refuse = err
	f.mu.Unlock()
}

// settle acks (or fails) every pending attempt.
func (f *fakeBroker) settle(err error) int {
	f.mu.Lock()
	p := f.pending
	f.pending = nil
	f.mu.Unlock()
	for _, d := range p {
		d(err)
	}
	return len(p)
}

func (f *fakeBroker) seqs() []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var s []int64
	for _, ev := range f.got {
		s = append(s, ev.Seq)
	}
	return s
}

func ev(seq int64) *event.Event {
	return &event.Event{ID: "id", Subject: "events.member.join", Seq: seq, ShardID: 0, Body: bytes.Repeat([]byte("x"), 100), ReceivedAt: time.Now()}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestBufferRetriesFailedEventsInOrderUntilAcked(t *testing.T) {
	fb := &fakeBroker{}
	b := NewBuffer(fb, BufferConfig{MaxEvents: 100, RetryWait: time.Millisecond})
	defer b.Close()
	var acked sync.Map
	for s := int64(1); s <= 5; s++ {
		if err := b.Publish(context.Background(), ev(s), func(err error) {
			if err == nil {
				if _, dup := acked.LoadOrStore(s, true); dup {
					t.Errorf("done called twice for %d", s)
				}
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "5 attempts", func() bool { return len(fb.seqs()) == 5 })
	fb.settle(errors.New("ack timeout")) // all five fail
	waitFor(t, "5 retries", func() bool { return len(fb.seqs()) == 10 })
	if got := fb.seqs()[5:]; !equal(got, []int64{1, 2, 3, 4, 5}) {
		t.Fatalf("retry order %v, want 1..5", got)
	}
	fb.settle(nil)
	if err := b.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	for s := int64(1); s <= 5; s++ {
		if _, ok := acked.Load(s); !ok {
			t.Fatalf("event %d never acked", s)
		}
	}
	if n, _ := b.Len(); n != 0 {
		t.Fatalf("buffer holds %d events after every ack", n)
	}
}

func TestBufferHoldsRefusedEventsAndKeepsOrder(t *testing.T) {
	fb := &fakeBroker{refuse: gobreaker.ErrOpenState}
	b := NewBuffer(fb, BufferConfig{MaxEvents: 100, RetryWait: time.Millisecond})
	defer b.Close()
	for s := int64(1); s <= 20; s++ {
		if err := b.Publish(context.Background(), ev(s), func(error) {}); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := b.Len(); n != 20 {
		t.Fatalf("buffer holds %d, want 20", n)
	}
	fb.setRefuse(nil)
	waitFor(t, "20 attempts", func() bool { return len(fb.seqs()) == 20 })
	var want []int64
	for s := int64(1); s <= 20; s++ {
		want = append(want, s)
	}
	if got := fb.seqs(); !equal(got, want) {
		t.Fatalf("order %v", got)
	}
}

func TestBufferBlocksWhenFullAndCountsBackpressure(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewBufferMetrics(reg)
	fb := &fakeBroker{}
	b := NewBuffer(fb, BufferConfig{MaxEvents: 2, RetryWait: time.Millisecond, Metrics: m})
	defer b.Close()
	for s := int64(1); s <= 2; s++ {
		if err := b.Publish(context.Background(), ev(s), func(error) {}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := b.Publish(ctx, ev(3), func(error) {}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish into a full buffer returned %v, want it to block until ctx ends", err)
	}
	if v := testutil.ToFloat64(m.Backpressure.WithLabelValues("0")); v <= 0 {
		t.Fatalf("backpressure seconds = %v, want > 0", v)
	}
	unblocked := make(chan error, 1)
	go func() { unblocked <- b.Publish(context.Background(), ev(4), func(error) {}) }()
	waitFor(t, "attempts", func() bool { return len(fb.seqs()) == 2 })
	fb.settle(nil)
	if err := <-unblocked; err != nil {
		t.Fatal(err)
	}
	if v := testutil.ToFloat64(m.Events); v != 1 {
		t.Fatalf("buffer gauge %v, want 1", v)
	}
}

func TestBufferCloseFailsWhatWasNeverSent(t *testing.T) {
	fb := &fakeBroker{refuse: gobreaker.ErrOpenState}
	b := NewBuffer(fb, BufferConfig{MaxEvents: 10, RetryWait: time.Millisecond})
	got := make(chan error, 1)
	if err := b.Publish(context.Background(), ev(1), func(err error) { got <- err }); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := <-got; !errors.Is(err, ErrClosed) {
		t.Fatalf("done(%v), want ErrClosed", err)
	}
	if err := b.Publish(context.Background(), ev(2), func(error) {}); !errors.Is(err, ErrClosed) {
		t.Fatalf("publish after close returned %v", err)
	}
}

func TestCircuitBreakerLearnsFromAcksNotFromTheCall(t *testing.T) {
	reg := prometheus.NewRegistry()
	bm := NewBreakerMetrics(reg)
	cb := NewBreaker(BreakerConfig{ConsecutiveFailures: 3, OpenTimeout: 20 * time.Millisecond, Probes: 1}, bm, log.NewNopLogger())
	fb := &fakeBroker{}
	p := CircuitBreaker(cb)(fb)
	for i := 0; i < 3; i++ {
		if err := p.Publish(context.Background(), ev(int64(i)), func(error) {}); err != nil {
			t.Fatal(err)
		}
	}
	if cb.State() != gobreaker.StateClosed {
		t.Fatal("breaker opened before any ack arrived")
	}
	fb.settle(errors.New("ack timeout"))
	if cb.State() != gobreaker.StateOpen {
		t.Fatalf("breaker %v after 3 failed acks, want open", cb.State())
	}
	if err := p.Publish(context.Background(), ev(9), func(error) {}); !errors.Is(err, gobreaker.ErrOpenState) {
		t.Fatalf("publish while open returned %v", err)
	}
	waitFor(t, "half-open", func() bool { return cb.State() == gobreaker.StateHalfOpen })
	if err := p.Publish(context.Background(), ev(10), func(error) {}); err != nil {
		t.Fatalf("probe refused: %v", err)
	}
	if err := p.Publish(context.Background(), ev(11), func(error) {}); !errors.Is(err, gobreaker.ErrTooManyRequests) {
		t.Fatalf("second probe returned %v, want too many requests", err)
	}
	fb.settle(nil)
	if cb.State() != gobreaker.StateClosed {
		t.Fatalf("breaker %v after a good probe, want closed", cb.State())
	}
	if v := testutil.ToFloat64(bm.Transitions.WithLabelValues("open", "half-open")); v != 1 {
		t.Fatalf("open→half-open transitions %v", v)
	}
	if v := testutil.ToFloat64(bm.State.WithLabelValues("jetstream")); v != 0 {
		t.Fatalf("state gauge %v, want 0 (closed)", v)
	}
}

func TestInstrumentingCountsAcksFailuresAndLatency(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewRouteMetrics(reg)
	fb := &fakeBroker{}
	p := Instrumenting(m)(fb)
	p.Publish(context.Background(), ev(1), func(error) {})
	fb.settle(nil)
	p.Publish(context.Background(), ev(2), func(error) {})
	fb.settle(errors.New("nack"))
	if v := testutil.ToFloat64(m.Routed.WithLabelValues("0")); v != 1 {
		t.Fatalf("routed %v", v)
	}
	if v := testutil.ToFloat64(m.Failures.WithLabelValues("0")); v != 1 {
		t.Fatalf("failures %v", v)
	}
	if n := testutil.CollectAndCount(m.Duration); n != 1 {
		t.Fatalf("duration series %d", n)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", err, problems)
	}
}

func TestLoggingWarnsOncePerIntervalAndNeverLogsSuccess(t *testing.T) {
	var buf bytes.Buffer
	logger := log.NewLogfmtLogger(&buf)
	fb := &fakeBroker{}
	p := Logging(logger, time.Hour)(fb)
	for i := 0; i < 10; i++ {
		p.Publish(context.Background(), ev(int64(i)), func(error) {})
	}
	fb.settle(nil)
	if buf.Len() != 0 {
		t.Fatalf("success logged: %s", buf.String())
	}
	for i := 0; i < 10; i++ {
		p.Publish(context.Background(), ev(int64(i)), func(error) {})
	}
	fb.settle(errors.New("boom"))
	if n := strings.Count(buf.String(), "level=warn"); n != 1 {
		t.Fatalf("%d warnings for 10 failures within the interval, want 1:\n%s", n, buf.String())
	}
}

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestOversizeEventsAreCompactedCountedAndLogged(t *testing.T) {
	reg := prometheus.NewRegistry()
	counter := NewOversizeCounter(reg)
	var logs bytes.Buffer
	fb := &fakeBroker{}
	p := Oversize(func() int64 { return 4096 }, counter, log.NewLogfmtLogger(&logs))(fb)

	big := []byte(`{"id":"42","name":"g","members":[` + strings.Repeat(`{"user":{"id":"1"}},`, 500) + `{}]}`)
	ev, _, err := event.Build(0, "s", 1, "GUILD_CREATE", big, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	small, _, _ := event.Build(0, "s", 2, "GUILD_CREATE", []byte(`{"id":"43","name":"h"}`), time.Now())
	if err := p.Publish(context.Background(), ev, func(error) {}); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(context.Background(), small, func(error) {}); err != nil {
		t.Fatal(err)
	}
	if len(fb.got) != 2 {
		t.Fatalf("%d published", len(fb.got))
	}
	if got := fb.got[0]; len(got.Body) >= 4096 || !strings.Contains(string(got.Body), `"data_truncated":true`) || got.ID != ev.ID {
		t.Fatalf("oversize event not compacted: %d bytes", len(got.Body))
	}
	if fb.got[1] != small {
		t.Fatal("a small event was changed")
	}
	if v := testutil.ToFloat64(counter.WithLabelValues("guild.join")); v != 1 {
		t.Fatalf("oversize counter %v", v)
	}
	if !strings.Contains(logs.String(), "guild_id=42") || !strings.Contains(logs.String(), "level=warn") {
		t.Fatalf("no warning naming the guild: %s", logs.String())
	}
}

func TestBufferKeepsNoEventAliveAfterItIsAcked(t *testing.T) {
	fb := &fakeBroker{refuse: gobreaker.ErrOpenState}
	b := NewBuffer(fb, BufferConfig{MaxEvents: 10000, RetryWait: time.Millisecond})
	defer b.Close()
	for s := int64(1); s <= 3000; s++ {
		if err := b.Publish(context.Background(), ev(s), func(error) {}); err != nil {
			t.Fatal(err)
		}
	}
	fb.setRefuse(nil) // the burst drains, compacting the queue on the way
	waitFor(t, "3000 attempts", func() bool { return len(fb.seqs()) == 3000 })
	fb.settle(nil)
	if err := b.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, it := range b.queue[:cap(b.queue)] {
		if it != nil {
			t.Fatalf("queue slot %d still holds event %d after every ack", i, it.ev.Seq)
		}
	}
}

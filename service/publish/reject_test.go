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

// answeringBroker acks every attempt on a goroutine of its own, as JetStream
// does, with what answer says for it.
type answeringBroker struct {
	answer func(ev *event.Event) error

	mu       sync.Mutex
	attempts []*event.Event
	times    []time.Time
}

func (a *answeringBroker) Publish(_ context.Context, ev *event.Event, done Done) error {
	a.mu.Lock()
	a.attempts = append(a.attempts, ev)
	a.times = append(a.times, time.Now())
	a.mu.Unlock()
	go done(a.answer(ev))
	return nil
}

func (a *answeringBroker) tries(seq int64) (whole, compact int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, ev := range a.attempts {
		if ev.Seq != seq {
			continue
		}
		if isCompact(ev) {
			compact++
		} else {
			whole++
		}
	}
	return whole, compact
}

// gap is the time between attempt i-1 and attempt i (0 if there is none).
func (a *answeringBroker) gap(i int) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	if i < 1 || i >= len(a.times) {
		return 0
	}
	return a.times[i].Sub(a.times[i-1])
}

func (a *answeringBroker) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.attempts)
}

func isCompact(ev *event.Event) bool { return bytes.Contains(ev.Body, []byte(`"data_truncated":true`)) }

var errTooLarge = &RejectedError{Reason: ReasonTooLarge, Err: errors.New("message size exceeds maximum allowed (err_code 10054)")}

// guildEvent is a real event (with a data field, so it has a compact form)
// of shard 3.
func guildEvent(t *testing.T, seq int64) *event.Event {
	t.Helper()
	d := []byte(`{"id":"42","name":"g","members":[` + strings.Repeat(`{"user":{"id":"1"}},`, 50) + `{}]}`)
	ev, _, err := event.Build(3, "sess", seq, "GUILD_CREATE", d, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// outcomes records what each event's done got.
type outcomes struct {
	mu  sync.Mutex
	got map[int64][]error
}

func (o *outcomes) done(seq int64) Done {
	return func(err error) {
		o.mu.Lock()
		defer o.mu.Unlock()
		if o.got == nil {
			o.got = map[int64][]error{}
		}
		o.got[seq] = append(o.got[seq], err)
	}
}

// wantAllNil checks that each of seqs got done(nil) exactly once.
func (o *outcomes) wantAllNil(t *testing.T, seqs ...int64) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range seqs {
		if got := o.got[s]; len(got) != 1 || got[0] != nil {
			t.Errorf("event %d: done got %v; want nil once (the resume point may pass it)", s, got)
		}
	}
}

func publishAll(t *testing.T, b *Buffer, o *outcomes, evs ...*event.Event) {
	t.Helper()
	for _, ev := range evs {
		if err := b.Publish(context.Background(), ev, o.done(ev.Seq)); err != nil {
			t.Fatal(err)
		}
	}
}

func flush(t *testing.T, b *Buffer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Flush(ctx); err != nil {
		t.Fatalf("flush did not finish: %v", err)
	}
}

func TestBufferPublishesAnEventRefusedForItsSizeOnceMoreInCompactForm(t *testing.T) {
	fb := &answeringBroker{answer: func(ev *event.Event) error {
		if ev.Seq == 2 && !isCompact(ev) {
			return errTooLarge
		}
		return nil
	}}
	m := NewBufferMetrics(prometheus.NewRegistry())
	b := NewBuffer(fb, BufferConfig{MaxEvents: 10, RetryWait: time.Millisecond, Metrics: m})
	defer b.Close()
	var o outcomes
	publishAll(t, b, &o, guildEvent(t, 1), guildEvent(t, 2), guildEvent(t, 3))
	flush(t, b)

	o.wantAllNil(t, 1, 2, 3)
	if whole, compact := fb.tries(2); whole != 1 || compact != 1 {
		t.Errorf("event 2 tried %d times whole and %d compact; want once each", whole, compact)
	}
	if n := totalDropped(m); n != 0 {
		t.Errorf("%v events dropped; want none: the compact form was stored", n)
	}
}

func TestBufferDropsAnEventRefusedInCompactFormTooAndMovesOn(t *testing.T) {
	fb := &answeringBroker{answer: func(ev *event.Event) error {
		if ev.Seq == 2 {
			return errTooLarge
		}
		return nil
	}}
	var logs lockedLog
	m := NewBufferMetrics(prometheus.NewRegistry())
	b := NewBuffer(fb, BufferConfig{MaxEvents: 10, RetryWait: time.Millisecond, Metrics: m, Logger: log.NewLogfmtLogger(&logs)})
	defer b.Close()
	var o outcomes
	poison := guildEvent(t, 2)
	publishAll(t, b, &o, guildEvent(t, 1), poison, guildEvent(t, 3))
	flush(t, b)

	o.wantAllNil(t, 1, 2, 3)
	if whole, compact := fb.tries(2); whole != 1 || compact != 1 {
		t.Errorf("event 2 tried %d times whole and %d compact; want once each, then dropped", whole, compact)
	}
	if v := testutil.ToFloat64(m.Dropped.WithLabelValues("3", ReasonTooLarge)); v != 1 {
		t.Errorf(`gateway_events_dropped_total{shard_id="3",reason="too_large"} = %v; want 1`, v)
	}
	line := logs.lineWith("event dropped")
	for _, kv := range []string{"level=error", "event_id=" + poison.ID, "event_type=guild.join", "shard_id=3", "seq=2", "reason=too_large"} {
		if !strings.Contains(line, kv) {
			t.Errorf("drop log line lacks %s:\n%s", kv, logs.String())
		}
	}
}

func TestBufferDropsAtOnceWhatIsRefusedInCompactFormAlready(t *testing.T) {
	// Oversize answers so, without sending, for an event too large for
	// max_payload even compact.
	compactRefused := &RejectedError{Reason: ReasonTooLarge, Compact: true, Err: errors.New("over max_payload")}
	fb := &fakeBroker{refuse: compactRefused}
	m := NewBufferMetrics(prometheus.NewRegistry())
	b := NewBuffer(fb, BufferConfig{MaxEvents: 10, RetryWait: time.Millisecond, Metrics: m})
	defer b.Close()
	var o outcomes
	publishAll(t, b, &o, guildEvent(t, 1))
	flush(t, b)
	o.wantAllNil(t, 1)
	if v := testutil.ToFloat64(m.Dropped.WithLabelValues("3", ReasonTooLarge)); v != 1 {
		t.Errorf("dropped = %v; want 1", v)
	}
}

func TestBufferDropsARefusedEventThatHasNoCompactForm(t *testing.T) {
	fb := &answeringBroker{answer: func(*event.Event) error {
		return &RejectedError{Reason: ReasonRefused, Err: errors.New("invalid per-message TTL (err_code 10165)")}
	}}
	m := NewBufferMetrics(prometheus.NewRegistry())
	b := NewBuffer(fb, BufferConfig{MaxEvents: 10, RetryWait: time.Millisecond, Metrics: m})
	defer b.Close()
	var o outcomes
	publishAll(t, b, &o, ev(7)) // a body without a data field
	flush(t, b)
	o.wantAllNil(t, 7)
	if n := fb.count(); n != 1 {
		t.Errorf("%d attempts; want 1", n)
	}
	if v := testutil.ToFloat64(m.Dropped.WithLabelValues("0", ReasonRefused)); v != 1 {
		t.Errorf("dropped = %v; want 1", v)
	}
}

func TestBufferNeverDropsAnEventTheBrokerFailsToStore(t *testing.T) {
	var failing sync.Map
	failing.Store(int64(1), true)
	fb := &answeringBroker{answer: func(ev *event.Event) error {
		if _, ok := failing.Load(ev.Seq); ok {
			return errors.New("insufficient storage resources available (err_code 10047)")
		}
		return nil
	}}
	m := NewBufferMetrics(prometheus.NewRegistry())
	b := NewBuffer(fb, BufferConfig{MaxEvents: 10, RetryWait: time.Millisecond, MaxRetryWait: 5 * time.Millisecond, Metrics: m})
	defer b.Close()
	var o outcomes
	publishAll(t, b, &o, guildEvent(t, 1))
	waitFor(t, "a few attempts", func() bool { whole, _ := fb.tries(1); return whole >= 5 })
	failing.Delete(int64(1))
	flush(t, b)
	o.wantAllNil(t, 1)
	if _, compact := fb.tries(1); compact != 0 {
		t.Errorf("tried %d times in compact form; want the whole event kept", compact)
	}
	if n := totalDropped(m); n != 0 {
		t.Errorf("%v events dropped; want none", n)
	}
}

func TestBufferPausesLongerAndLongerWhileEveryAckFails(t *testing.T) {
	var failing sync.Map // seq → fail its next attempt; 0 → fail all
	failing.Store(int64(0), true)
	fb := &answeringBroker{answer: func(ev *event.Event) error {
		_, all := failing.Load(int64(0))
		if _, once := failing.LoadAndDelete(ev.Seq); all || once {
			return errors.New("insufficient storage resources available (err_code 10047)")
		}
		return nil
	}}
	b := NewBuffer(fb, BufferConfig{MaxEvents: 10, RetryWait: 20 * time.Millisecond, MaxRetryWait: 320 * time.Millisecond})
	defer b.Close()
	var o outcomes
	publishAll(t, b, &o, ev(1))
	time.Sleep(700 * time.Millisecond)

	// Pauses of 20, 40, 80, 160, 320 ms: about 6 attempts in 700 ms.
	// Without them it is hundreds of thousands.
	if n := fb.count(); n < 3 || n > 9 {
		t.Fatalf("%d attempts in 700 ms while every ack fails; want about 6 (pauses doubling from 20 ms to 320 ms)", n)
	}
	for i, want := range []time.Duration{20, 40, 80, 160} {
		if gap := fb.gap(i + 1); gap > 0 && gap < want*time.Millisecond {
			t.Errorf("pause %d lasted %v; want at least %v", i+1, gap, want*time.Millisecond)
		}
	}

	// An ack ends the pauses: the next failure pauses 20 ms again, not
	// 640 ms.
	failing.Delete(int64(0))
	flush(t, b)
	failing.Store(int64(2), true)
	publishAll(t, b, &o, ev(2))
	flush(t, b)
	if gap := fb.gap(fb.count() - 1); gap > 200*time.Millisecond {
		t.Errorf("after an ack, a failure paused %v; want the first pause again (20 ms)", gap)
	}
}

func TestBufferPausesOnceForABurstOfFailures(t *testing.T) {
	// Every event in flight fails at once when the connection drops: one
	// pause of RetryWait, not one per event.
	fb := &fakeBroker{}
	b := NewBuffer(fb, BufferConfig{MaxEvents: 100, RetryWait: 20 * time.Millisecond, MaxRetryWait: time.Second})
	defer b.Close()
	for s := int64(1); s <= 50; s++ {
		if err := b.Publish(context.Background(), ev(s), func(error) {}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "50 attempts", func() bool { return len(fb.seqs()) == 50 })
	start := time.Now()
	fb.settle(errors.New("nats: connection closed"))
	waitFor(t, "50 retries", func() bool { return len(fb.seqs()) == 100 })
	if d := time.Since(start); d < 20*time.Millisecond || d > 200*time.Millisecond {
		t.Errorf("the burst was retried after %v; want one pause of 20 ms", d)
	}
}

// A breaker in front of a broker that refuses one event for its size:
// the refusals neither trip the breaker nor decide a half-open probe.
func TestBreakerIgnoresEventsRefusedForTheMessageItself(t *testing.T) {
	cb := NewBreaker(BreakerConfig{ConsecutiveFailures: 2, OpenTimeout: 10 * time.Millisecond, Probes: 1}, nil, log.NewNopLogger())
	fb := &fakeBroker{}
	p := CircuitBreaker(cb)(fb)
	for i := range 5 {
		if err := p.Publish(context.Background(), ev(int64(i)), func(error) {}); err != nil {
			t.Fatal(err)
		}
		fb.settle(errTooLarge)
	}
	if cb.State() != gobreaker.StateClosed {
		t.Fatalf("breaker %v after 5 events refused for their size; want closed", cb.State())
	}

	// Open it for real, then let a refused event be the first through.
	for i := range 2 {
		p.Publish(context.Background(), ev(int64(10+i)), func(error) {})
	}
	fb.settle(errors.New("nats: timeout"))
	waitFor(t, "half-open", func() bool { return cb.State() == gobreaker.StateHalfOpen })
	if err := p.Publish(context.Background(), ev(20), func(error) {}); err != nil {
		t.Fatal(err)
	}
	fb.settle(errTooLarge)
	if cb.State() != gobreaker.StateHalfOpen {
		t.Fatalf("breaker %v after a refused event in half-open; want still half-open, waiting for a real probe", cb.State())
	}
	if err := p.Publish(context.Background(), ev(21), func(error) {}); err != nil {
		t.Fatalf("the real probe was refused (%v): the refused event kept the probe slot", err)
	}
	fb.settle(nil)
	if cb.State() != gobreaker.StateClosed {
		t.Fatalf("breaker %v after a good probe; want closed", cb.State())
	}
}

// The whole chain as cmd/gateway builds it, the broker refusing one event
// whole and compact: everything else is stored, the breaker stays closed,
// the flush of a drain finishes.
func TestPoisonEventBehindTheBreakerStallsNothing(t *testing.T) {
	fb := &answeringBroker{answer: func(ev *event.Event) error {
		if ev.Seq == 5 {
			return errTooLarge
		}
		return nil
	}}
	cb := NewBreaker(BreakerConfig{ConsecutiveFailures: 1, OpenTimeout: time.Hour}, nil, log.NewNopLogger())
	b := NewBuffer(CircuitBreaker(cb)(fb), BufferConfig{MaxEvents: 4, RetryWait: time.Millisecond})
	defer b.Close()
	var o outcomes
	for s := int64(1); s <= 20; s++ {
		publishAll(t, b, &o, guildEvent(t, s))
	}
	flush(t, b)
	for s := int64(1); s <= 20; s++ {
		o.wantAllNil(t, s)
	}
	if cb.State() != gobreaker.StateClosed {
		t.Errorf("breaker %v; want closed", cb.State())
	}
}

func TestOversizeRefusesAnEventTooLargeEvenCompact(t *testing.T) {
	fb := &fakeBroker{}
	p := Oversize(func() int64 { return 300 }, NewOversizeCounter(prometheus.NewRegistry()), log.NewNopLogger())(fb)
	err := p.Publish(context.Background(), guildEvent(t, 1), func(error) {})
	var rej *RejectedError
	if !errors.As(err, &rej) || rej.Reason != ReasonTooLarge || !rej.Compact {
		t.Fatalf("Publish = %v; want a too_large rejection of the compact form", err)
	}
	if len(fb.got) != 0 {
		t.Errorf("%d events sent; want none", len(fb.got))
	}
}

func TestOversizeMarksARefusalOfTheCompactFormItSent(t *testing.T) {
	fb := &fakeBroker{}
	p := Oversize(func() int64 { return 1000 }, NewOversizeCounter(prometheus.NewRegistry()), log.NewNopLogger())(fb)
	var got error
	if err := p.Publish(context.Background(), guildEvent(t, 1), func(err error) { got = err }); err != nil {
		t.Fatal(err)
	}
	fb.settle(errTooLarge) // a stream's max_msg_size below max_payload
	var rej *RejectedError
	if !errors.As(got, &rej) || !rej.Compact {
		t.Fatalf("done got %v; want a rejection marked compact", got)
	}
}

func totalDropped(m *BufferMetrics) float64 {
	var n float64
	for _, reason := range []string{ReasonTooLarge, ReasonRefused} {
		for _, shard := range []string{"0", "3"} {
			n += testutil.ToFloat64(m.Dropped.WithLabelValues(shard, reason))
		}
	}
	return n
}

// The drop series of a shard exist from its first event, at 0, so that an
// alert on increase() sees the first drop.
func TestBufferExportsTheDropSeriesOfEachShardFromItsFirstEvent(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewBufferMetrics(reg)
	b := NewBuffer(&fakeBroker{}, BufferConfig{MaxEvents: 10, Metrics: m})
	defer b.Close()
	var o outcomes
	publishAll(t, b, &o, guildEvent(t, 1))
	if n := testutil.CollectAndCount(m.Dropped); n != 2 {
		t.Errorf("%d drop series after shard 3's first event; want 2 (too_large, refused)", n)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", err, problems)
	}
}

// lockedLog collects log lines written from several goroutines.
type lockedLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *lockedLog) lineWith(s string) string {
	for _, line := range strings.Split(l.String(), "\n") {
		if strings.Contains(line, s) {
			return line
		}
	}
	return ""
}

func TestLoggingLeavesRefusalsOfTheMessageToTheBuffer(t *testing.T) {
	var logs lockedLog
	fb := &fakeBroker{}
	p := Logging(log.NewLogfmtLogger(&logs), time.Nanosecond)(fb)
	p.Publish(context.Background(), ev(1), func(error) {})
	fb.settle(errTooLarge)
	fb.setRefuse(&RejectedError{Reason: ReasonTooLarge, Compact: true, Err: errors.New("over max_payload")})
	p.Publish(context.Background(), ev(2), func(error) {})
	if strings.Contains(logs.String(), "failing") {
		t.Errorf("refusals of the message logged as publishing failing and retried:\n%s", logs.String())
	}
}

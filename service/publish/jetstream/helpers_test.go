package jetstream

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shardpool/gateway/internal/natstest"
	"github.com/shardpool/gateway/service/event"
)

// withoutJetStream turns JetStream off: a subscriber on the subject then
// swallows publishes, so acks never come.
var withoutJetStream = natstest.WithoutJetStream()

// connect connects through Connect, closed at the end of the test.
func connect(t testing.TB, s *natstest.Server, logger log.Logger) *nats.Conn {
	t.Helper()
	nc, err := Connect(s.ClientURL(), t.Name(), &Monitor{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	waitFor(t, "connected", nc.IsConnected)
	return nc
}

func newJetStream(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func newPublisher(t testing.TB, nc *nats.Conn, opts ...Option) *Publisher {
	t.Helper()
	p, err := NewPublisher(nc, log.NewNopLogger(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// swallow subscribes to every event subject without ever replying, so
// published events stay in flight.
func swallow(t *testing.T, nc *nats.Conn) {
	t.Helper()
	for _, subject := range []string{"events.>", "commands.>"} {
		if _, err := nc.Subscribe(subject, func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

var dispatches = []struct{ t, d string }{
	{"GUILD_MEMBER_ADD", `{"guild_id":"1","user":{"id":"2","username":"u"},"roles":[]}`},
	{"GUILD_MEMBER_REMOVE", `{"guild_id":"1","user":{"id":"2"}}`},
	{"GUILD_CREATE", `{"id":"1","name":"g"}`},
	{"INTERACTION_CREATE", `{"id":"3","guild_id":"1","channel_id":"4","member":{"user":{"id":"2"}}}`},
}

// newEvent builds a real event for dispatch seq of shard 0; the dispatch
// type cycles through dispatches, so both streams get events.
func newEvent(t testing.TB, seq int) *event.Event {
	d := dispatches[seq%len(dispatches)]
	ev, ok, err := event.Build(0, "session", int64(seq), d.t, []byte(d.d), time.Now())
	if err != nil || !ok {
		t.Fatalf("event.Build: %v, %v", ok, err)
	}
	return ev
}

// doneRecorder records the done calls of a batch of events.
type doneRecorder struct {
	mu    sync.Mutex
	calls map[int][]error
	n     int
	all   chan struct{} // closed when want events got their first call
	want  int
}

func newDoneRecorder(want int) *doneRecorder {
	return &doneRecorder{calls: map[int][]error{}, all: make(chan struct{}), want: want}
}

func (r *doneRecorder) done(i int) func(error) {
	return func(err error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.calls[i] = append(r.calls[i], err)
		if len(r.calls[i]) == 1 {
			r.n++
			if r.n == r.want {
				close(r.all)
			}
		}
	}
}

// wait waits until want events got a done call.
func (r *doneRecorder) wait(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-r.all:
	case <-time.After(timeout):
		r.mu.Lock()
		defer r.mu.Unlock()
		t.Fatalf("%d of %d events resolved after %s", r.n, r.want, timeout)
	}
}

// snapshot returns a copy of the calls so far.
func (r *doneRecorder) snapshot() map[int][]error {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := make(map[int][]error, len(r.calls))
	for i, errs := range r.calls {
		c[i] = append([]error(nil), errs...)
	}
	return c
}

// logBuffer is a go-kit logfmt logger whose output a test can read.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() log.Logger { return log.NewLogfmtLogger(b) }

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

package jetstream

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/shardpool/gateway/internal/natstest"
)

func TestRedactURLHidesUserInformation(t *testing.T) {
	tests := []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://user:secret@127.0.0.1:4222", "nats://redacted@127.0.0.1:4222"},
		{"nats://s3cr3tt0ken@nats:4222", "nats://redacted@nats:4222"},
		{"tls://u:p@a:4222,tls://u:p@b:4222", "tls://redacted@a:4222,tls://redacted@b:4222"},
		{"nats://a:4222, nats://u:p@b:4222", "nats://a:4222, nats://redacted@b:4222"},
		{"user:secret@host:4222", "redacted@host:4222"},
		{"nats://u:pa/ss@host:4222", "nats://redacted@host:4222"},
		{"nats://u:p@ss@host:4222", "nats://redacted@host:4222"},
		{"nats://u:%zz@host", "nats://redacted@host"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := RedactURL(tt.in); got != tt.want {
			t.Errorf("RedactURL(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

// stateRecorder records onState calls.
type stateRecorder struct {
	mu     sync.Mutex
	states []bool
}

func (r *stateRecorder) record(connected bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.states = append(r.states, connected)
}

func (r *stateRecorder) last() (connected, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.states) == 0 {
		return false, false
	}
	return r.states[len(r.states)-1], true
}

func withAuth(o *server.Options) { o.Username, o.Password = "gateway", "hunter2secret" }

func TestConnectReportsStateAndReconnects(t *testing.T) {
	s := natstest.Run(t, natstest.WithOptions(withAuth))
	port := s.Port()
	url := "nats://gateway:hunter2secret@127.0.0.1:" + strconv.Itoa(port)

	var logs logBuffer
	var states stateRecorder
	nc, err := Connect(url, "test", &Monitor{Logger: logs.logger(), OnState: states.record})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	waitFor(t, "connected state", func() bool { c, ok := states.last(); return ok && c })

	s.Shutdown()
	waitFor(t, "disconnected state", func() bool { c, _ := states.last(); return !c })

	s.Start() // the same port and store
	waitFor(t, "reconnected state", func() bool { c, _ := states.last(); return c })

	nc.Close()
	// Close reports the disconnect first, then calls the closed handler
	// on another goroutine: wait for the closed handler's own line.
	waitFor(t, "closed log line", func() bool { return strings.Contains(logs.String(), "NATS connection closed") })
	waitFor(t, "closed state", func() bool { c, _ := states.last(); return !c })

	out := logs.String()
	for _, want := range []string{"NATS connected", "NATS disconnected", "NATS reconnected", "NATS connection closed", "redacted@127.0.0.1"} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hunter2secret") {
		t.Errorf("logs hold the password:\n%s", out)
	}
}

func TestConnectKeepsTryingWhenNoServerIsUp(t *testing.T) {
	// Find a free port, then leave it closed.
	s := natstest.Run(t)
	s.Shutdown()

	var states stateRecorder
	nc, err := Connect(s.ClientURL(), "test", &Monitor{Logger: (&logBuffer{}).logger(), OnState: states.record})
	if err != nil {
		t.Fatalf("Connect with no server up = %v; want a connection that retries", err)
	}
	defer nc.Close()
	if nc.IsConnected() {
		t.Fatal("connected to nothing")
	}

	s.Start() // on the same port
	waitFor(t, "connected state", func() bool { c, ok := states.last(); return ok && c })
}

func TestConnectKeepsPasswordsOutOfErrors(t *testing.T) {
	_, err := Connect("nats://user:hunter2secret@host:notaport", "test", &Monitor{Logger: (&logBuffer{}).logger()})
	if err == nil {
		t.Fatal("Connect accepted an invalid URL")
	}
	if strings.Contains(err.Error(), "hunter2secret") {
		t.Errorf("error holds the password: %v", err)
	}
	if errors.Unwrap(err) == nil {
		t.Errorf("error %v does not wrap the client's", err)
	}
}

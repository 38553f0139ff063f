package natstest_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shardpool/gateway/internal/natstest"
)

func connect(t *testing.T, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func newJetStream(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func timeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// accepts reports whether something listens on the server's client port.
func accepts(s *natstest.Server) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port())), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// streamInfo asks for a stream's info until JetStream answers: right after
// a restart, nats-server now and then leaves a reconnected client's first
// API request unanswered (a few restarts in a hundred, with or without
// natstest), and a client retries.
func streamInfo(t *testing.T, js jetstream.JetStream, name string) *jetstream.StreamInfo {
	t.Helper()
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var stream jetstream.Stream
		if stream, err = js.Stream(timeout(t, 2*time.Second), name); err == nil {
			return stream.CachedInfo()
		}
	}
	t.Fatalf("stream %s: %v", name, err)
	return nil
}

// storeOne creates a file-stored stream and stores one message in it.
func storeOne(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx := timeout(t, 10*time.Second)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "s.one", []byte("1")); err != nil {
		t.Fatal(err)
	}
}

func TestRunServesJetStream(t *testing.T) {
	s := natstest.Run(t)
	js := newJetStream(t, connect(t, s.ClientURL()))
	storeOne(t, js)
}

func TestWithoutJetStreamServesPlainNATS(t *testing.T) {
	s := natstest.Run(t, natstest.WithoutJetStream())
	js := newJetStream(t, connect(t, s.ClientURL()))
	if _, err := js.AccountInfo(timeout(t, 10*time.Second)); !errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
		t.Errorf("AccountInfo = %v; want ErrJetStreamNotEnabled", err)
	}
}

func TestRestartKeepsThePortAndTheStoredMessages(t *testing.T) {
	s := natstest.Run(t)
	url := s.ClientURL()
	nc := connect(t, url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	js := newJetStream(t, nc)
	storeOne(t, js)

	s.Restart()
	if s.ClientURL() != url {
		t.Errorf("restarted on %s; want %s", s.ClientURL(), url)
	}
	if n := streamInfo(t, js, "S").State.Msgs; n != 1 {
		t.Errorf("%d messages after the restart; want 1", n)
	}
}

func TestShutdownFreesThePortAndStartTakesItAgain(t *testing.T) {
	s := natstest.Run(t)
	s.Shutdown()
	s.Shutdown() // a second time does nothing
	if s.Running() || accepts(s) {
		t.Fatal("the server still runs after Shutdown")
	}
	s.Start()
	if !s.Running() || !accepts(s) {
		t.Fatal("the server does not run after Start")
	}
}

func TestRunShutsTheServerDownWhenTheTestEnds(t *testing.T) {
	var s *natstest.Server
	t.Run("test", func(t *testing.T) { s = natstest.Run(t) })
	if s.Running() || accepts(s) {
		t.Error("the server outlived its test")
	}
}

func TestWithPortListensOnThatPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	if s := natstest.Run(t, natstest.WithPort(port)); s.Port() != port {
		t.Errorf("listens on %d; want %d", s.Port(), port)
	}
}

func TestWithStoreDirStoresThere(t *testing.T) {
	dir := t.TempDir()
	s := natstest.Run(t, natstest.WithStoreDir(dir))
	storeOne(t, newJetStream(t, connect(t, s.ClientURL())))
	if _, err := os.Stat(filepath.Join(dir, "jetstream", "$G", "streams", "S")); err != nil {
		t.Errorf("stream not stored in %s: %v", dir, err)
	}
}

func TestWithMaxPayloadSetsTheLargestMessage(t *testing.T) {
	s := natstest.Run(t, natstest.WithMaxPayload(8<<20))
	if n := connect(t, s.ClientURL()).MaxPayload(); n != 8<<20 {
		t.Errorf("max payload %d; want %d", n, 8<<20)
	}
}

func TestWithOptionsSetsAnythingElse(t *testing.T) {
	s := natstest.Run(t, natstest.WithOptions(func(o *server.Options) { o.Username, o.Password = "u", "p" }))
	if nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Error("connected without the password")
	}
	connect(t, s.ClientURL(), nats.UserInfo("u", "p"))
}

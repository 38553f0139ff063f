package jetstream

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/shardpool/gateway/internal/natstest"
)

// lines returns the lines of logs holding every one of parts.
func lines(logs string, parts ...string) []string {
	var out []string
next:
	for _, line := range strings.Split(logs, "\n") {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue next
			}
		}
		out = append(out, line)
	}
	return out
}

func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

func TestMonitorLogsAClosedPortOnceWithTheURLAndTheDialError(t *testing.T) {
	port := closedPort(t)
	var logs logBuffer
	mon := &Monitor{Logger: logs.logger()}
	nc, err := Connect("nats://gateway:hunter2secret@127.0.0.1:"+port, "test", mon)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	waitFor(t, "the dial error", func() bool { msg, _ := mon.LastError(); return strings.Contains(msg, "connection refused") })
	time.Sleep(3 * ReconnectWait) // three more attempts

	got := lines(logs.String(), "cannot connect to NATS")
	if len(got) != 1 {
		t.Fatalf("%d lines, want 1:\n%s", len(got), logs.String())
	}
	for _, want := range []string{"level=warn", "url=nats://redacted@127.0.0.1:" + port, `err="dial tcp 127.0.0.1:` + port + `: connect: connection refused"`} {
		if !strings.Contains(got[0], want) {
			t.Errorf("line lacks %s: %s", want, got[0])
		}
	}
	msg, at := mon.LastError()
	if msg != "dial tcp 127.0.0.1:"+port+": connect: connection refused" || time.Since(at) > 5*time.Second {
		t.Errorf("LastError = %q at %v", msg, at)
	}
	if strings.Contains(logs.String(), "hunter2secret") {
		t.Error("the log holds the password")
	}
}

func TestMonitorLogsEachStateChangeOnceWithItsReason(t *testing.T) {
	s := natstest.Run(t, natstest.WithOptions(withAuth))
	url := "nats://gateway:hunter2secret@127.0.0.1:" + strconv.Itoa(s.Port())
	var logs logBuffer
	nc, err := Connect(url, "test", &Monitor{Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "connected", nc.IsConnected)
	s.Shutdown()
	waitFor(t, "disconnected", func() bool { return !nc.IsConnected() })
	// At least one reconnect attempt must fail before the server is back.
	waitFor(t, "a failed attempt", func() bool { return len(lines(logs.String(), "cannot connect to NATS")) > 0 })
	s.Start()
	waitFor(t, "reconnected", nc.IsConnected)
	nc.Close()
	waitFor(t, "closed line", func() bool { return len(lines(logs.String(), "NATS connection closed")) > 0 })

	redacted := "url=nats://redacted@127.0.0.1:" + strconv.Itoa(s.Port())
	// The client may reconnect through the server's advertised URL, which
	// has no user information: after the reconnect only the address counts.
	server := "127.0.0.1:" + strconv.Itoa(s.Port())
	for _, want := range [][]string{
		{"level=info", `msg="NATS connected"`, redacted},
		{"level=warn", `msg="NATS disconnected; reconnecting"`, redacted, "err=EOF"},
		{"level=warn", "cannot connect to NATS", server, "connection refused"},
		{"level=info", `msg="NATS reconnected"`, server, "down_for=", "failed_attempts="},
		{"level=info", `msg="NATS connection closed"`, server},
	} {
		if n := len(lines(logs.String(), want...)); n != 1 {
			t.Errorf("%d lines with %q, want 1:\n%s", n, want, logs.String())
		}
	}
	if n := len(strings.Split(strings.TrimSpace(logs.String()), "\n")); n != 5 {
		t.Errorf("%d lines, want 5:\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "hunter2secret") {
		t.Error("the log holds the password")
	}
}

// fakeClock is a Monitor clock the test moves.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestMonitorSumsUpAConnectionThatKeepsFailing(t *testing.T) {
	var logs logBuffer
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	mon := &Monitor{Logger: logs.logger(), now: clock.now}
	mon.watch("nats://u:hunter2secret@10.0.0.1:4222")
	mon.startOutage()
	refused := errors.New("dial tcp 10.0.0.1:4222: connect: connection refused")
	mon.attemptFailed(nil, nats.ErrNoServers) // the client's first, vague word
	for i := 0; i < 65; i++ {
		clock.advance(time.Second)
		mon.attemptFailed(nil, refused)
	}
	want := []string{
		`level=warn msg="cannot connect to NATS; retrying every 1s" url=nats://redacted@10.0.0.1:4222 err="dial tcp 10.0.0.1:4222: connect: connection refused"`,
		`level=warn msg="still cannot connect to NATS; retrying" url=nats://redacted@10.0.0.1:4222 err="dial tcp 10.0.0.1:4222: connect: connection refused" down_for=31s failed_attempts=32`,
		`level=warn msg="still cannot connect to NATS; retrying" url=nats://redacted@10.0.0.1:4222 err="dial tcp 10.0.0.1:4222: connect: connection refused" down_for=1m1s failed_attempts=62`,
	}
	if got := strings.TrimSpace(logs.String()); got != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", got, strings.Join(want, "\n"))
	}
}

func TestMonitorRateLimitsARepeatedAsyncError(t *testing.T) {
	var logs logBuffer
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	mon := &Monitor{Logger: logs.logger(), now: clock.now, SummaryEvery: 10 * time.Second}
	denied := errors.New(`nats: permissions violation for publish to "events.guild.create"`)
	for i := 0; i < 5; i++ {
		mon.asyncError(nil, nil, denied)
		clock.advance(time.Second)
	}
	mon.asyncError(nil, nil, nats.ErrSlowConsumer) // another kind: at once
	clock.advance(10 * time.Second)
	mon.asyncError(nil, nil, denied)
	want := []string{
		`level=error msg="NATS error" err="nats: permissions violation for publish to \"events.guild.create\""`,
		`level=error msg="NATS error" err="nats: slow consumer, messages dropped"`,
		`level=error msg="NATS error" err="nats: permissions violation for publish to \"events.guild.create\""`,
	}
	if got := strings.TrimSpace(logs.String()); got != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", got, strings.Join(want, "\n"))
	}
}

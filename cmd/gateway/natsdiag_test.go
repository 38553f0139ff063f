package main

import (
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shardpool/gateway/internal/discordsim"
	"github.com/shardpool/gateway/internal/natstest"
)

// These tests read /ready and /status as JSON objects, as an operator's
// tools do, so they state the field names the README documents.

func (e *testEnv) jsonObject(path string) (int, map[string]any) {
	e.t.Helper()
	code, b := e.get(path)
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		e.t.Fatalf("%s body %q: %v", path, b, err)
	}
	return code, v
}

// logLines returns the log lines holding every one of parts.
func (e *testEnv) logLines(parts ...string) []string {
	var out []string
next:
	for _, line := range strings.Split(e.logs.String(), "\n") {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue next
			}
		}
		out = append(out, line)
	}
	return out
}

func TestNATSWithoutJetStreamIsNotReadyAndSaysHowToEnableIt(t *testing.T) {
	plain := natstest.Run(t, natstest.WithoutJetStream())
	e := startEnv(t, envOptions{noNATS: true, sim: discordsim.Config{Shards: 1, GuildsPerShard: 2},
		config: func(c *Config) { c.NATSURL = plain.ClientURL() }})
	e.waitShardsReady(1)
	e.eventually("the log says JetStream is off", 10*time.Second, func() bool {
		return len(e.logLines("JetStream is not enabled on the NATS server")) > 0
	})

	code, r := e.jsonObject("/ready")
	if code != 503 || r["ready"] != false || r["nats_connected"] != true || r["jetstream"] != "not enabled" {
		t.Fatalf("/ready %d %v, want 503 with nats_connected true and jetstream \"not enabled\"", code, r)
	}
	_, st := e.jsonObject("/status")
	lastErr, _ := st["nats_last_error"].(string)
	for _, want := range []string{"JetStream is not enabled on the NATS server " + plain.ClientURL(), "nats-server -js", "jetstream {}"} {
		if !strings.Contains(lastErr, want) {
			t.Errorf("/status nats_last_error %q lacks %q", lastErr, want)
		}
	}
	if st["jetstream"] != "not enabled" || st["ready"] != false {
		t.Errorf("/status jetstream %v ready %v", st["jetstream"], st["ready"])
	}
	line := e.logLines("JetStream is not enabled on the NATS server")[0]
	for _, want := range []string{"level=error", "nats-server -js", "jetstream {}"} {
		if !strings.Contains(line, want) {
			t.Errorf("log line lacks %q: %s", want, line)
		}
	}
	if strings.Contains(e.logs.String(), "no responders") {
		t.Error("the log still says only no responders")
	}

	// The retries (0.5 s, 1 s, 2 s, ...) are not logged one by one.
	time.Sleep(4 * time.Second)
	if n := len(e.logLines("JetStream is not enabled")); n != 1 {
		t.Errorf("%d lines say JetStream is not enabled; want 1 while it stays so", n)
	}

	// The operator restarts the server with -js: the gateway becomes ready
	// and publishes what it held.
	port := plain.Port()
	plain.Shutdown()
	withJS := natstest.Run(t, natstest.WithPort(port))
	e.eventually("ready once JetStream is on", 30*time.Second, func() bool {
		code, r := e.jsonObject("/ready")
		return code == 200 && r["jetstream"] == "enabled"
	})
	nc, err := nats.Connect(withJS.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	e.js, _ = jetstream.New(nc)
	e.eventually("the held guild creates published", 15*time.Second, func() bool { return e.streamCount("EVENTS") == 2 })
}

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

func TestUnreachableNATSIsLoggedOnceWithTheURLAndTheDialError(t *testing.T) {
	port := strconv.Itoa(closedPort(t))
	e := startEnv(t, envOptions{noNATS: true, sim: discordsim.Config{Shards: 1, GuildsPerShard: 3},
		config: func(c *Config) { c.NATSURL = "nats://gateway:hunter2secret@127.0.0.1:" + port }})
	e.waitShardsReady(1)
	// The breaker opens after five refused publishes, then probes every 2 s.
	e.eventually("the breaker opens", 10*time.Second, func() bool {
		return len(e.logLines("circuit breaker", "to=open")) > 0
	})
	time.Sleep(7 * time.Second) // three probe rounds, seven reconnect attempts

	lines := e.logLines("connection refused")
	if len(lines) != 1 {
		t.Fatalf("%d log lines name the dial error, want 1:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	for _, want := range []string{"level=warn", "url=nats://redacted@127.0.0.1:" + port, "dial tcp 127.0.0.1:" + port} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("the line lacks %q: %s", want, lines[0])
		}
	}
	if strings.Contains(e.logs.String(), "hunter2secret") {
		t.Fatal("the log holds the NATS password")
	}
	if n := len(e.logLines("circuit breaker")); n > 3 {
		t.Errorf("%d breaker lines in 7 s; want the first closed->open->half-open->open only:\n%s", n, strings.Join(e.logLines("circuit breaker"), "\n"))
	}

	_, st := e.jsonObject("/status")
	lastErr, _ := st["nats_last_error"].(string)
	if !strings.Contains(lastErr, "dial tcp 127.0.0.1:"+port) || !strings.Contains(lastErr, "connection refused") {
		t.Errorf("/status nats_last_error %q", lastErr)
	}
	if at, _ := st["nats_last_error_at"].(string); at == "" {
		t.Errorf("/status has no nats_last_error_at: %v", st)
	}
	if st["nats_connected"] != false || st["jetstream"] != "unknown" {
		t.Errorf("/status nats_connected %v jetstream %v", st["nats_connected"], st["jetstream"])
	}
	_, b := e.get("/status")
	if strings.Contains(string(b), "hunter2secret") {
		t.Fatal("/status holds the NATS password")
	}
}

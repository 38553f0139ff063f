package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shardpool/gateway/internal/discordsim"
	"github.com/shardpool/gateway/internal/natstest"
	"github.com/shardpool/gateway/service"
	"github.com/shardpool/gateway/service/event"
)

// testEnv is the whole program in-process against the Discord simulator and
// a real embedded NATS JetStream server.
type testEnv struct {
	t       *testing.T
	sim     *discordsim.Server
	ns      *natstest.Server
	cluster *natstest.Cluster // instead of ns, with envOptions.cluster
	nc      *nats.Conn
	js      jetstream.JetStream
	m       *Main
	runErr  chan error
	logs    *lockedBuffer
	base    string
	stopped bool
}

type envOptions struct {
	sim     discordsim.Config
	noNATS  bool
	storage string // memory (default) or file
	cluster int    // NATS servers in a JetStream cluster; 0: one server
	config  func(*Config)
}

// lockedBuffer collects log lines from many goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startEnv(t *testing.T, o envOptions) *testEnv {
	t.Helper()
	if o.sim.IdentifyWindow == 0 {
		o.sim.IdentifyWindow = 200 * time.Millisecond
	}
	if o.sim.Shards == 0 {
		o.sim.Shards = 2
	}
	if o.sim.MaxConcurrency == 0 {
		o.sim.MaxConcurrency = o.sim.Shards
	}
	sim := discordsim.New(o.sim)
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	e := &testEnv{t: t, sim: sim, logs: &lockedBuffer{}, runErr: make(chan error, 1)}
	t.Cleanup(sim.Close)

	cfg, err := ParseConfig(nil, func(string) string { return "" }, io.Discard)
	if err == nil {
		t.Fatal("config without DISCORD_TOKEN must fail")
	}
	cfg, err = ParseConfig(nil, func(k string) string {
		return map[string]string{"DISCORD_TOKEN": discordsim.DefaultToken, "DISCORD_API_URL": sim.APIURL(),
			"HTTP_HOST": "127.0.0.1", "HTTP_PORT": "0", "LOG_LEVEL": "debug", "DRAIN_TIMEOUT": "15s"}[k]
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.IdentifyWindow = o.sim.IdentifyWindow
	cfg.BackoffBase, cfg.BackoffMax = 20*time.Millisecond, 500*time.Millisecond
	if !o.noNATS {
		if o.cluster > 0 {
			e.cluster = natstest.RunCluster(t, o.cluster)
			cfg.NATSURL = e.cluster.ClientURL()
		} else {
			e.ns = natstest.Run(t)
			cfg.NATSURL = e.ns.ClientURL()
		}
		if o.storage != "" {
			cfg.StreamStorage = o.storage
		}
		nc, err := nats.Connect(cfg.NATSURL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		e.nc = nc
		e.js, _ = jetstream.New(nc)
		t.Cleanup(func() {
			nc.Close()
			if e.ns != nil {
				e.ns.Shutdown()
			}
		})
	}
	if o.config != nil {
		o.config(&cfg)
	}
	e.m = NewMain()
	e.m.Config = cfg
	e.m.LogOutput = e.logs
	go func() { e.runErr <- e.m.Run(context.Background()) }()
	select {
	case <-e.m.started:
	case err := <-e.runErr:
		t.Fatalf("gateway did not start: %v\n%s", err, e.logs.String())
	case <-time.After(30 * time.Second):
		t.Fatal("gateway did not start")
	}
	e.base = "http://" + e.m.HTTPAddr()
	t.Cleanup(func() {
		e.stop()
		if t.Failed() {
			t.Logf("gateway log:\n%s", tail(e.logs.String(), 200))
		}
	})
	return e
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stop drains and stops the gateway (as SIGTERM does) and returns Run's error.
func (e *testEnv) stop() error {
	if e.stopped {
		return nil
	}
	e.stopped = true
	e.m.Close()
	select {
	case err := <-e.runErr:
		return err
	case <-time.After(30 * time.Second):
		e.t.Error("gateway did not stop")
		return nil
	}
}

func (e *testEnv) get(path string) (int, []byte) {
	e.t.Helper()
	return e.do("GET", path, "")
}

func (e *testEnv) do(method, path, auth string) (int, []byte) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.base+path, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (e *testEnv) readiness() (int, service.Readiness) {
	e.t.Helper()
	code, b := e.get("/ready")
	var r service.Readiness
	if err := json.Unmarshal(b, &r); err != nil {
		e.t.Fatalf("/ready body %q: %v", b, err)
	}
	return code, r
}

func (e *testEnv) status() service.Status {
	e.t.Helper()
	code, b := e.get("/status")
	if code != 200 {
		e.t.Fatalf("/status: %d %s", code, b)
	}
	var st service.Status
	if err := json.Unmarshal(b, &st); err != nil {
		e.t.Fatal(err)
	}
	return st
}

// eventually polls cond until it holds or the deadline passes.
func (e *testEnv) eventually(what string, timeout time.Duration, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *testEnv) waitShardsReady(n int) {
	e.t.Helper()
	e.eventually("shards ready", 30*time.Second, func() bool {
		_, r := e.readiness()
		return r.ShardsReady == n
	})
}

// streamMsgs returns every message of a stream, in order.
func (e *testEnv) streamMsgs(name string) []*jetstream.RawStreamMsg {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, name)
	if err != nil {
		e.t.Fatalf("stream %s: %v", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted
		}
		out = append(out, m)
	}
	return out
}

func (e *testEnv) streamCount(name string) int {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, name)
	if err != nil {
		return -1
	}
	info, err := s.Info(ctx)
	if err != nil {
		return -1
	}
	return int(info.State.Msgs)
}

// publishedTypes are the dispatch types that become events.
var publishedTypes = map[string]bool{
	"GUILD_CREATE": true, "GUILD_DELETE": true, "GUILD_MEMBER_ADD": true,
	"GUILD_MEMBER_REMOVE": true, "GUILD_MEMBER_UPDATE": true, "INTERACTION_CREATE": true,
}

// expectedIDs returns the event ids of every dispatch in the simulator's
// ledger that the gateway must publish (those written to a socket, when
// written is true).
func expectedIDs(t *testing.T, sim *discordsim.Server, written bool) map[string]discordsim.SentDispatch {
	want := map[string]discordsim.SentDispatch{}
	for _, d := range sim.Dispatches() {
		if !publishedTypes[d.Type] || (written && !d.Written) {
			continue
		}
		if d.Type == "GUILD_DELETE" {
			f, err := event.ParseFields(d.Type, d.Data)
			if err != nil {
				t.Fatal(err)
			}
			if f.Unavailable {
				continue
			}
		}
		want[event.ID(d.Shard, d.SessionID, d.Seq)] = d
	}
	return want
}

// assertExactlyOnce checks that the streams hold every expected event once
// and nothing else.
func (e *testEnv) assertExactlyOnce(want map[string]discordsim.SentDispatch) {
	e.t.Helper()
	seen := map[string]int{}
	bodies := map[string]string{} // for the failure message
	for _, stream := range []string{"EVENTS", "COMMANDS"} {
		for _, m := range e.streamMsgs(stream) {
			id := m.Header.Get(jetstream.MsgIDHeader)
			seen[id]++
			bodies[id] = m.Subject + " " + string(m.Data[:min(len(m.Data), 300)])
		}
	}
	missing, dup, extra := 0, 0, 0
	for id := range want {
		switch seen[id] {
		case 0:
			missing++
		case 1:
		default:
			dup++
		}
	}
	for id := range seen {
		if _, ok := want[id]; !ok {
			extra++
			e.t.Errorf("unexpected message %s: %s", id, bodies[id])
		}
	}
	if missing+dup+extra > 0 {
		e.t.Fatalf("stream vs simulator ledger: %d expected, %d missing, %d duplicated, %d unexpected", len(want), missing, dup, extra)
	}
}

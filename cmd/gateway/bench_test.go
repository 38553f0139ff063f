package main

// The pipeline benchmark (make bench): the Discord simulator, an embedded
// JetStream server (memory storage) and the real gateway (Main) in one
// process and one run, each number next to a baseline measured in the same
// run, because the machine is shared and noisy. It is skipped unless
// PIPELINE_BENCH=1.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diamondburned/arikawa/v3/gateway"
	"github.com/diamondburned/arikawa/v3/utils/json/option"
	"github.com/google/pprof/profile"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shardpool/gateway/internal/discordsim"
	"github.com/shardpool/gateway/internal/natstest"
	"github.com/shardpool/gateway/service/event"
	"github.com/shardpool/gateway/service/publish"
	jspub "github.com/shardpool/gateway/service/publish/jetstream"
)

const benchShards = 4

// benchDispatch is one pre-generated dispatch of the workload.
type benchDispatch struct {
	t string
	d []byte
}

// workload builds n realistic dispatches per shard: ~600-byte member
// events, interactions, and a large GUILD_CREATE every 200.
func workload(sim *discordsim.Server, shard, n int) []benchDispatch {
	out := make([]benchDispatch, 0, n)
	for i := 0; i < n; i++ {
		g := sim.GuildIDForShard(shard, benchShards, i%50)
		u := strconv.Itoa(100000000000000000 + shard*1000000 + i)
		switch {
		case i%200 == 199:
			out = append(out, benchDispatch{"GUILD_CREATE", sim.GuildCreateBody(shard, sim.GuildIDForShard(shard, benchShards, 1000+i), 100)})
		case i%8 == 0:
			out = append(out, benchDispatch{"INTERACTION_CREATE", sim.InteractionCreateBody(g, "41771983423143937", u)})
		case i%3 == 0:
			out = append(out, benchDispatch{"GUILD_MEMBER_ADD", sim.MemberAddBody(g, u)})
		case i%3 == 1:
			out = append(out, benchDispatch{"GUILD_MEMBER_UPDATE", sim.MemberUpdateBody(g, u)})
		default:
			out = append(out, benchDispatch{"GUILD_MEMBER_REMOVE", sim.MemberRemoveBody(g, u)})
		}
	}
	return out
}

type benchWorld struct {
	t   *testing.T
	sim *discordsim.Server
	ns  *natstest.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	tap publish.Middleware // Main.routeTap of the gateway startGateway starts
}

func newBenchWorld(t *testing.T, simCfg discordsim.Config, withNATS bool) *benchWorld {
	if simCfg.LedgerLimit == 0 {
		simCfg.LedgerLimit = -1 // the ledger would weigh on every phase but latency
	}
	if simCfg.ReplayLimit == 0 {
		simCfg.ReplayLimit = 1 << 18
	}
	sim := discordsim.New(simCfg)
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	w := &benchWorld{t: t, sim: sim}
	if withNATS {
		w.ns = natstest.Run(t, natstest.WithMaxPayload(8<<20))
		nc, err := nats.Connect(w.ns.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		w.nc = nc
		w.js, _ = jetstream.New(nc)
		ctx := context.Background()
		for _, sc := range jspub.Streams(jspub.StreamConfig{Storage: jetstream.MemoryStorage, Replicas: 1}) {
			if _, err := w.js.CreateOrUpdateStream(ctx, sc); err != nil {
				t.Fatal(err)
			}
		}
	}
	return w
}

func (w *benchWorld) close() {
	if w.nc != nil {
		w.nc.Close()
	}
	if w.ns != nil {
		w.ns.Shutdown()
	}
	w.sim.Close()
}

func (w *benchWorld) stored() int {
	ctx := context.Background()
	n := 0
	for _, name := range []string{"EVENTS", "COMMANDS"} {
		s, err := w.js.Stream(ctx, name)
		if err != nil {
			continue
		}
		info, err := s.Info(ctx)
		if err == nil {
			n += int(info.State.Msgs)
		}
	}
	return n
}

func (w *benchWorld) waitStored(n int, timeout time.Duration) time.Time {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if w.stored() >= n {
			return time.Now()
		}
		time.Sleep(2 * time.Millisecond)
	}
	w.t.Fatalf("only %d of %d events stored after %v", w.stored(), n, timeout)
	return time.Time{}
}

// startGateway runs Main inside a pprof label, so the CPU profile can tell
// the gateway's goroutines from the simulator's and the NATS server's.
func (w *benchWorld) startGateway(cfg func(*Config)) (*Main, func()) {
	c, err := ParseConfig(nil, func(k string) string {
		return map[string]string{"DISCORD_TOKEN": discordsim.DefaultToken, "DISCORD_API_URL": w.sim.APIURL(),
			"HTTP_HOST": "127.0.0.1", "HTTP_PORT": "0", "LOG_LEVEL": "warn"}[k]
	}, io.Discard)
	if err != nil {
		w.t.Fatal(err)
	}
	if w.ns != nil {
		c.NATSURL = w.ns.ClientURL()
	}
	c.IdentifyWindow = 100 * time.Millisecond
	if cfg != nil {
		cfg(&c)
	}
	m := NewMain()
	m.Config = c
	m.LogOutput = io.Discard
	m.routeTap = w.tap
	done := make(chan struct{})
	pprof.Do(context.Background(), pprof.Labels("component", "gateway"), func(ctx context.Context) {
		go func() {
			defer close(done)
			if err := m.Run(ctx); err != nil {
				w.t.Errorf("gateway: %v", err)
			}
		}()
	})
	<-m.started
	return m, func() { m.Close(); <-done }
}

func waitReadyShards(t *testing.T, m *Main, n int) {
	deadline := time.Now().Add(60 * time.Second)
	for m.Pool().ShardsReady() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d shards ready", m.Pool().ShardsReady(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// cpuMeter measures process CPU time (user+system from /proc) and, from a
// CPU profile, the share of it spent in goroutines labelled component=gateway.
type cpuMeter struct {
	start time.Duration
	prof  bytes.Buffer
}

func procCPU() time.Duration {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond // USER_HZ = 100
}

func startCPU(t *testing.T) *cpuMeter {
	m := &cpuMeter{}
	if err := pprof.StartCPUProfile(&m.prof); err != nil {
		t.Fatal(err)
	}
	m.start = procCPU()
	return m
}

// stop returns the process CPU time and the gateway's part of it.
func (m *cpuMeter) stop(t *testing.T, saveAs string) (total, gw time.Duration) {
	total = procCPU() - m.start
	pprof.StopCPUProfile()
	if saveAs != "" {
		os.WriteFile(saveAs, m.prof.Bytes(), 0o644)
	}
	p, err := profile.Parse(bytes.NewReader(m.prof.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var all, mine int64
	for _, s := range p.Sample {
		v := s.Value[len(s.Value)-1]
		all += v
		if len(s.Label["component"]) > 0 && s.Label["component"][0] == "gateway" {
			mine += v
		}
	}
	if all == 0 {
		return total, 0
	}
	return total, time.Duration(float64(total) * float64(mine) / float64(all))
}

// emit queues every shard's workload on the simulator as fast as it takes it.
func emit(t *testing.T, sim *discordsim.Server, load [][]benchDispatch) {
	var wg sync.WaitGroup
	for sh := range load {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, d := range load[sh] {
				if _, err := sim.Dispatch(sh, d.t, d.d); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

type throughput struct {
	events  int
	elapsed time.Duration
	cpu     time.Duration // gateway
	total   time.Duration // process
	wire    float64       // bytes received by the gateway
}

func (r throughput) rate() float64 { return float64(r.events) / r.elapsed.Seconds() }

// runGateway measures our pipeline on the workload.
func runGateway(t *testing.T, perShard int, compression, profileOut string) throughput {
	w := newBenchWorld(t, discordsim.Config{Shards: benchShards, MaxConcurrency: benchShards, SendQueue: perShard + 1024}, true)
	defer w.close()
	load := make([][]benchDispatch, benchShards)
	for sh := range load {
		load[sh] = workload(w.sim, sh, perShard)
	}
	m, stop := w.startGateway(func(c *Config) { c.Compression = compression })
	defer stop()
	waitReadyShards(t, m, benchShards)
	n := benchShards * perShard
	cpu := startCPU(t)
	start := time.Now()
	emit(t, w.sim, load)
	emitted := time.Since(start)
	end := w.waitStored(n, 5*time.Minute)
	total, gw := cpu.stop(t, profileOut)
	if os.Getenv("PIPELINE_BENCH_DEBUG") != "" {
		fmt.Printf("   [debug] %s: emit %v, stored after %v, process CPU %v, gateway CPU %v\n", compression, emitted, end.Sub(start), total, gw)
	}
	return throughput{events: n, elapsed: end.Sub(start), cpu: gw, total: total, wire: scrape(t, m, "gateway_ws_received_bytes_total")}
}

// scrape sums a metric over its series from /metrics.
func scrape(t *testing.T, m *Main, name string) float64 {
	resp, err := http.Get("http://" + m.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	sum := 0.0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

// runRawPublish is the NATS ceiling: a plain async JetStream publish of the
// same message bodies, with Nats-Msg-Id, as fast as acks come back.
func runRawPublish(t *testing.T, perShard int) throughput {
	w := newBenchWorld(t, discordsim.Config{Shards: benchShards}, true)
	defer w.close()
	var msgs []*nats.Msg
	for sh := 0; sh < benchShards; sh++ {
		for i, d := range workload(w.sim, sh, perShard) {
			ev, ok, err := event.Build(sh, "bench-session", int64(i+2), d.t, d.d, time.Now())
			if err != nil || !ok {
				t.Fatalf("workload event %s: %v", d.t, err)
			}
			msgs = append(msgs, &nats.Msg{Subject: ev.Subject, Data: ev.Body, Header: nats.Header{jetstream.MsgIDHeader: []string{ev.ID}}})
		}
	}
	js, err := jetstream.New(w.nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		t.Fatal(err)
	}
	cpu := startCPU(t)
	start := time.Now()
	for _, m := range msgs {
		if _, err := js.PublishMsgAsync(m); err != nil {
			t.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	end := w.waitStored(len(msgs), time.Minute)
	total, _ := cpu.stop(t, "")
	return throughput{events: len(msgs), elapsed: end.Sub(start), total: total}
}

// runSimEmission is the simulator's ceiling: its emission rate to readers
// that discard every frame.
func runSimEmission(t *testing.T, perShard int, compression string) throughput {
	w := newBenchWorld(t, discordsim.Config{Shards: benchShards, MaxConcurrency: benchShards, SendQueue: perShard + 1024}, false)
	defer w.close()
	load := make([][]benchDispatch, benchShards)
	for sh := range load {
		load[sh] = workload(w.sim, sh, perShard)
	}
	var got atomic.Int64
	var wg sync.WaitGroup
	conns := make([]*websocket.Conn, benchShards)
	for sh := 0; sh < benchShards; sh++ {
		c, _, err := websocket.DefaultDialer.Dial(strings.Replace(w.sim.URL(), "http", "ws", 1)+"/gateway?v=10&encoding=json&compress="+compression, nil)
		if err != nil {
			t.Fatal(err)
		}
		conns[sh] = c
		c.ReadMessage() // HELLO
		id, _ := json.Marshal(map[string]any{"op": 2, "d": map[string]any{"token": discordsim.DefaultToken, "intents": 3,
			"properties": map[string]string{"os": "linux", "browser": "bench", "device": "bench"}, "shard": []int{sh, benchShards}}})
		c.WriteMessage(websocket.TextMessage, id)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := w.sim.WaitReady(ctx, sh); err != nil {
			t.Fatal(err)
		}
		cancel()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, r, err := c.NextReader(); err != nil {
					return
				} else if _, err := io.Copy(io.Discard, r); err != nil {
					return
				}
				got.Add(1)
			}
		}()
	}
	time.Sleep(50 * time.Millisecond) // READY and the rest of the handshake
	base := got.Load()
	n := benchShards * perShard
	start := time.Now()
	emit(t, w.sim, load)
	for got.Load()-base < int64(n) {
		time.Sleep(time.Millisecond)
	}
	end := time.Now()
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
	return throughput{events: n, elapsed: end.Sub(start)}
}

// runNaive is the baseline a straightforward implementation gets: arikawa's
// gateway with its defaults (typed decode into its event structs), each
// event re-marshalled and published synchronously.
func runNaive(t *testing.T, perShard int) throughput {
	w := newBenchWorld(t, discordsim.Config{Shards: benchShards, MaxConcurrency: benchShards, SendQueue: perShard + 1024}, true)
	defer w.close()
	load := make([][]benchDispatch, benchShards)
	for sh := range load {
		load[sh] = workload(w.sim, sh, perShard)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var cpuNaive *cpuMeter
	ready := make(chan struct{}, benchShards)
	pprof.Do(ctx, pprof.Labels("component", "gateway"), func(ctx context.Context) {
		for sh := 0; sh < benchShards; sh++ {
			cmd := gateway.DefaultIdentifyCommand(discordsim.DefaultToken)
			cmd.Shard = &gateway.Shard{sh, benchShards}
			cmd.Intents = option.NewUint(3)
			g := gateway.NewCustomWithIdentifier(strings.Replace(w.sim.URL(), "http", "ws", 1)+"/gateway?v=10&encoding=json", gateway.NewIdentifier(cmd), nil)
			ch := g.Connect(ctx)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for op := range ch {
					var typ, subject string
					switch op.Data.(type) {
					case *gateway.ReadyEvent:
						ready <- struct{}{}
						continue
					case *gateway.GuildCreateEvent:
						typ, subject = "guild.join", "events.guild.join"
					case *gateway.GuildMemberAddEvent:
						typ, subject = "member.join", "events.member.join"
					case *gateway.GuildMemberUpdateEvent:
						typ, subject = "member.update", "events.member.update"
					case *gateway.GuildMemberRemoveEvent:
						typ, subject = "member.leave", "events.member.leave"
					case *gateway.InteractionCreateEvent:
						typ, subject = "interaction.create", "commands.interaction"
					default:
						continue
					}
					body, err := json.Marshal(map[string]any{"event_id": event.ID(sh, "naive", op.Sequence), "event_type": typ, "shard_id": sh, "data": op.Data})
					if err != nil {
						t.Error(err)
						continue
					}
					if _, err := w.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: body, Header: nats.Header{jetstream.MsgIDHeader: []string{event.ID(sh, "naive", op.Sequence)}}}); err != nil && ctx.Err() == nil {
						t.Error(err)
					}
				}
			}()
		}
	})
	for i := 0; i < benchShards; i++ {
		select {
		case <-ready:
		case <-time.After(30 * time.Second):
			t.Fatal("naive gateway not ready")
		}
	}
	n := benchShards * perShard
	cpuNaive = startCPU(t)
	start := time.Now()
	emit(t, w.sim, load)
	end := w.waitStored(n, 10*time.Minute)
	total, gw := cpuNaive.stop(t, "")
	cancel()
	wg.Wait()
	return throughput{events: n, elapsed: end.Sub(start), cpu: gw, total: total}
}

// runMemory: 25 shards receive 1000 realistic GUILD_CREATEs each; the Go
// heap the gateway retains per 1000 guilds. The simulator shares the
// process, so live heap is attributed by allocation site: a heap profile
// (sampling every 4 KiB) after a GC, each sample charged to the first frame
// of its stack that belongs to the gateway, the simulator or NATS.
func runMemory(t *testing.T) (heapMB, rssMB float64, guilds int) {
	const shards, perShard = 25, 1000
	old := runtime.MemProfileRate
	runtime.MemProfileRate = 4096
	defer func() { runtime.MemProfileRate = old }()
	w := newBenchWorld(t, discordsim.Config{Shards: shards, MaxConcurrency: shards, GuildsPerShard: perShard, MembersPerGuild: 10, ReplayLimit: 16}, false)
	defer w.close()
	rssBefore := rss()
	m, stop := w.startGateway(nil) // local mode: no broker state in the heap
	defer stop()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		r := m.Pool().Readiness(context.Background())
		if r.GuildsTotal == shards*perShard && scrape(t, m, "gateway_events_routed_total") >= shards*perShard {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("guilds %d of %d", r.GuildsTotal, shards*perShard)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second) // let in-flight frames and the last acks settle
	runtime.GC()
	runtime.GC()
	rssAdded := rss() - rssBefore
	owners := liveHeapByOwner(t)
	if os.Getenv("PIPELINE_BENCH_DEBUG") != "" {
		fmt.Printf("   [debug] live heap by owner (MB): %v\n", owners)
	}
	k := float64(shards*perShard) / 1000
	return owners["gateway"] / k, float64(rssAdded) / (1 << 20) / k, shards * perShard
}

// liveHeapByOwner returns live heap MB per owner: gateway, simulator, nats,
// other.
func liveHeapByOwner(t *testing.T) map[string]float64 {
	var buf bytes.Buffer
	if err := pprof.Lookup("heap").WriteTo(&buf, 0); err != nil {
		t.Fatal(err)
	}
	p, err := profile.Parse(&buf)
	if err != nil {
		t.Fatal(err)
	}
	idx := -1
	for i, st := range p.SampleType {
		if st.Type == "inuse_space" {
			idx = i
		}
	}
	out := map[string]float64{}
	sites := map[string]float64{}
	defer func() {
		if os.Getenv("PIPELINE_BENCH_DEBUG") == "" {
			return
		}
		type kv struct {
			k string
			v float64
		}
		var l []kv
		for k, v := range sites {
			l = append(l, kv{k, v})
		}
		sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v })
		for i := 0; i < len(l) && i < 8; i++ {
			fmt.Printf("   [debug] gateway live heap %7.2f MB at %s\n", l[i].v, l[i].k)
		}
	}()
	for _, s := range p.Sample {
		owner := "other"
		site := ""
	stack:
		for _, loc := range s.Location {
			for _, line := range loc.Line {
				fn := line.Function.Name
				switch {
				case strings.HasPrefix(fn, "github.com/shardpool/gateway/internal/discordsim"):
					owner = "simulator"
				case strings.HasPrefix(fn, "github.com/nats-io/nats-server"):
					owner = "nats"
				case strings.HasPrefix(fn, "github.com/shardpool/gateway/") && !strings.Contains(line.Function.Filename, "_test.go"):
					owner, site = "gateway", fn
				default:
					continue
				}
				break stack
			}
		}
		out[owner] += float64(s.Value[idx]) / (1 << 20)
		if owner == "gateway" {
			sites[site] += float64(s.Value[idx]) / (1 << 20)
		}
	}
	return out
}

func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// runStartup: time until 25 shards are READY with max_concurrency 1 and a
// 100 ms identify window, against the bound ⌈N/max_concurrency⌉ × window.
func runStartup(t *testing.T) (elapsed, bound time.Duration) {
	const shards = 25
	window := 100 * time.Millisecond
	// The simulator reads the IDENTIFYs on the same two busy cores: a stall
	// of tens of ms between the gateway's write and the simulator's read
	// shortens the gap it sees, which at a 100 ms window (margin 2 ms) is a
	// false violation (one run in three saw a 67 ms stall). At Discord's
	// 5 s window the limiter's margin is 100 ms; the end-to-end tests check
	// the rule itself.
	w := newBenchWorld(t, discordsim.Config{Shards: shards, MaxConcurrency: 1, IdentifyWindow: window, IdentifyTolerance: 50 * time.Millisecond}, false)
	defer w.close()
	start := time.Now()
	m, stop := w.startGateway(func(c *Config) { c.IdentifyWindow = window })
	defer stop()
	waitReadyShards(t, m, shards)
	elapsed = time.Since(start)
	if os.Getenv("PIPELINE_BENCH_DEBUG") != "" {
		for _, id := range w.sim.Record().Identifies {
			fmt.Printf("   [debug] identify shard %2d at +%v outcome %s\n", id.Shard, id.At.Sub(start).Round(time.Millisecond), id.Outcome)
		}
	}
	if v := w.sim.Record().ViolationsOf(discordsim.ViolationIdentifyBucket); len(v) > 0 {
		t.Errorf("identify violations during startup: %d", len(v))
	}
	return elapsed, shards * window
}

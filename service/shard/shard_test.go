package shard

import (
	"context"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardpool/gateway/internal/discordsim"
	"github.com/shardpool/gateway/service/event"
	"github.com/shardpool/gateway/service/publish"
)

// The driver against the simulator: what only shows with a real socket.

type driverRun struct {
	shard  *Shard
	cancel context.CancelFunc
	done   chan error
}

func startShard(t *testing.T, cfg Config) *driverRun {
	t.Helper()
	if cfg.Token == "" {
		cfg.Token = discordsim.DefaultToken
	}
	if cfg.Total == 0 {
		cfg.Total = 1
	}
	if cfg.Compression == "" {
		cfg.Compression = CompressionNone
	}
	cfg.Backoff = Backoff{Base: 10 * time.Millisecond, Max: 100 * time.Millisecond}
	if cfg.Identify == nil {
		cfg.Identify = NewBucketLimiter(1, 50*time.Millisecond)
	}
	if cfg.Publisher == nil {
		cfg.Publisher = publish.PublisherFunc(func(_ context.Context, _ *event.Event, done publish.Done) error { done(nil); return nil })
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	cfg.Logger = log.NewNopLogger()
	// Registered after the simulator's cleanup, so it runs first: the shard
	// stops before the simulator goes away.
	r := &driverRun{shard: New(cfg), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- r.shard.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

func (r *driverRun) stop() {
	r.cancel()
	<-r.done
	r.done <- nil // later stops return at once
}

func startSim(t *testing.T, cfg discordsim.Config) *discordsim.Server {
	t.Helper()
	sim := discordsim.New(cfg)
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	return sim
}

func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// shardGoroutines lists the goroutines running this package's code.
func shardGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "gateway/service/shard.") && !strings.Contains(g, "shard.Test") && !strings.Contains(g, "shard.startShard") {
			out = append(out, g)
		}
	}
	return out
}

// Fault 3: a shard stopped while its publisher applies backpressure must
// leave no goroutine behind (today the read goroutine stays blocked,
// holding its read buffer, inflater and built events).
func TestStoppingUnderBackpressureLeavesNoGoroutine(t *testing.T) {
	sim := startSim(t, discordsim.Config{})
	blocked := make(chan struct{})
	var once sync.Once
	r := startShard(t, Config{
		GatewayURL: sim.GatewayURL(),
		Publisher: publish.PublisherFunc(func(ctx context.Context, _ *event.Event, _ publish.Done) error {
			once.Do(func() { close(blocked) })
			<-ctx.Done() // a full buffer: blocks until the shard stops
			return ctx.Err()
		}),
	})
	if err := sim.WaitReady(waitCtx(t), 0); err != nil {
		t.Fatal(err)
	}
	guild := sim.GuildIDForShard(0, 1, 0)
	for i := 0; i < 200; i++ { // far more than any channel between goroutines holds
		if _, err := sim.Dispatch(0, "GUILD_MEMBER_ADD", sim.MemberAddBody(guild, strconv.Itoa(1000+i))); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-blocked:
	case <-time.After(20 * time.Second):
		t.Fatal("nothing was published")
	}
	r.stop()
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := shardGoroutines()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left after the shard stopped:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Fault 5: when the resume_gateway_url cannot be dialed, the session is
// resumed on the main gateway URL (the same session: no IDENTIFY).
func TestDeadResumeURLIsResumedOnTheMainGatewayURL(t *testing.T) {
	sim := startSim(t, discordsim.Config{})
	first := startShard(t, Config{GatewayURL: sim.GatewayURL()})
	waitShard(t, "READY", first.shard.Ready)
	first.stop()
	h := first.shard.Handoff()
	if h == nil {
		t.Fatal("no hand-off record after a drain")
	}
	h.ResumeGatewayURL = "ws://" + deadAddr(t) + "/resume"
	startShard(t, Config{GatewayURL: sim.GatewayURL(), Resume: h})
	if err := sim.WaitResumes(waitCtx(t), 1); err != nil {
		t.Fatalf("never resumed: %v", err)
	}
	rec := sim.Record()
	if n := len(rec.Identifies); n != 1 {
		t.Fatalf("%d IDENTIFYs: the session was not resumed", n)
	}
	if r := rec.Resumes[0]; r.SessionID != h.SessionID || r.Path != "/gateway" {
		t.Fatalf("resume %+v, want session %s on /gateway", r, h.SessionID)
	}
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// connectedLimiter records, for each Acquire, whether the simulator already
// had the shard's connection open: the permit must be asked for after the
// dial and HELLO, never held across them.
type connectedLimiter struct {
	IdentifyLimiter
	sim *discordsim.Server

	mu        sync.Mutex
	acquires  int
	beforeAll bool
}

func (l *connectedLimiter) Acquire(ctx context.Context, shardID int) (Permit, error) {
	l.mu.Lock()
	l.acquires++
	if l.sim.Stats().LiveConnections == 0 {
		l.beforeAll = true
	}
	l.mu.Unlock()
	return l.IdentifyLimiter.Acquire(ctx, shardID)
}

// Fault 6: the identify permit is taken after HELLO, right before IDENTIFY,
// so a slow dial or a late HELLO never holds the bucket (with Consul, the
// whole fleet's bucket).
func TestIdentifyPermitIsTakenAfterTheConnectionIsOpen(t *testing.T) {
	sim := startSim(t, discordsim.Config{})
	lim := &connectedLimiter{IdentifyLimiter: NewBucketLimiter(1, 50*time.Millisecond), sim: sim}
	startShard(t, Config{GatewayURL: sim.GatewayURL(), Identify: lim})
	if err := sim.WaitReady(waitCtx(t), 0); err != nil {
		t.Fatal(err)
	}
	lim.mu.Lock()
	defer lim.mu.Unlock()
	if lim.acquires != 1 || lim.beforeAll {
		t.Fatalf("%d acquires, one before the connection was open: %v", lim.acquires, lim.beforeAll)
	}
}

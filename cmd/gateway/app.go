package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/shardpool/gateway/discovery"
	"github.com/shardpool/gateway/endpoint"
	"github.com/shardpool/gateway/service"
	"github.com/shardpool/gateway/service/publish"
	"github.com/shardpool/gateway/service/shard"
	"github.com/shardpool/gateway/transport"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

// Main is the whole program, startable in-process: tests build a Main, set
// its Config and call Run; Close (or cancelling Run's context, as SIGTERM
// does) drains the pool and makes Run return.
type Main struct {
	Config Config
	// LogOutput receives the logs (default os.Stderr).
	LogOutput io.Writer

	mu       sync.Mutex
	started  chan struct{} // closed once the HTTP listener is up
	httpAddr string
	pool     *service.Pool     // without Consul
	member   *discovery.Member // with Consul
	stop     context.CancelFunc
	done     chan struct{}
	// crashing makes the next stop abrupt, as a crash: no drain, no
	// hand-off, the Consul session left to expire (tests).
	crashing atomic.Bool
	// checkpoints: the static pool's, in SESSION_STATE_FILE (checkpoint.go).
	checkpoints checkpoints
	// drainedClean is set by shutdown when the drain acked every event.
	drainedClean bool

	// What Run's phases open, each for the phases after it; release frees
	// them in reverse order.
	logger       log.Logger
	plan         shardPlan            // planShards
	reg          *prometheus.Registry // openMetrics
	shardMetrics *shard.Metrics
	starts       *shard.SessionStarts
	nats         *natsBroker            // openPublishPath; nil in local mode
	breaker      *publish.Breaker       // nil in local mode
	buffer       *publish.Buffer        // what the shards publish into
	commands     *commandPath           // openCommandPath
	listener     net.Listener           // openListener
	consul       *discovery.Consul      // openFleet; the generation the member runs
	memberConfig discovery.MemberConfig // openFleet: each generation's member is built from it
	gens         *fleetGens             // openFleet: the member of one generation at a time (reshard.go)
	poolDrain    time.Duration          // openFleet or openStaticPool
	server       *http.Server           // openHTTPServer

	// routeTap, if set (the pipeline benchmark), wraps the publisher where
	// the route latency metric is taken, to see each event's receipt → ack.
	routeTap publish.Middleware
}

// NewMain returns a Main with the default configuration.
func NewMain() *Main {
	return &Main{LogOutput: os.Stderr, started: make(chan struct{}), done: make(chan struct{})}
}

// ParseFlags reads the configuration from args and the environment.
func (m *Main) ParseFlags(args []string, getenv func(string) string) error {
	c, err := ParseConfig(args, getenv, m.LogOutput)
	if err != nil {
		return err
	}
	m.Config = c
	return nil
}

// HTTPAddr returns the HTTP server's address once Run has started it.
func (m *Main) HTTPAddr() string {
	<-m.started
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.httpAddr
}

// Pool returns the shard pool once Run has started it; with Consul, the pool
// the instance runs at the moment (nil while it has none).
func (m *Main) Pool() *service.Pool {
	<-m.started
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.currentPool()
}

func (m *Main) currentPool() *service.Pool {
	if m.member != nil {
		return m.member.Pool()
	}
	return m.pool
}

// Close drains the pool and waits for Run to return, by which time Run has
// released everything it opened.
func (m *Main) Close() error {
	m.mu.Lock()
	stop := m.stop
	m.mu.Unlock()
	if stop != nil {
		stop()
		<-m.done
	}
	return nil
}

// Run runs the gateway until ctx ends or Close is called, then drains the
// pool (within DRAIN_TIMEOUT) and returns. A nil error means a clean exit.
//
// Each phase opens one thing and sets a field for the next; a phase that
// fails just returns, and release frees what the earlier ones opened.
func (m *Main) Run(ctx context.Context) (err error) {
	defer close(m.done)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	m.mu.Lock()
	m.stop = cancel
	m.mu.Unlock()
	defer m.release()

	m.logger = m.newLogger()
	setMemoryLimit(m.logger, os.Getenv, rootFS())
	if err := m.planShards(ctx); err != nil {
		return err
	}
	m.logStarting()
	m.openMetrics(ctx)
	if err := m.openPublishPath(); err != nil {
		return err
	}
	if err := m.openCommandPath(); err != nil {
		return err
	}
	if err := m.openListener(); err != nil {
		return err
	}
	if m.plan.useConsul {
		if err := m.openFleet(); err != nil {
			return err
		}
	} else {
		m.openStaticPool()
	}
	m.openHTTPServer()

	err = m.serve(ctx)
	m.release()
	level.Info(m.logger).Log("msg", "exit", "err", err)
	return err
}

// release frees what Run opened, in reverse order. Each field is checked
// and cleared, so it is safe after any failed phase and safe twice. The pool
// and the member need nothing: they stop with the run group; the HTTP
// server has shut down in it too.
func (m *Main) release() {
	m.stopStateCheckpoints()
	if m.commands != nil {
		m.commands.close()
		m.commands = nil
	}
	if m.listener != nil {
		m.listener.Close() // already closed by the server's Shutdown once served
		m.listener = nil
	}
	if m.buffer != nil {
		m.buffer.Close()
		m.buffer = nil
	}
	if m.nats != nil {
		m.nats.close()
		m.nats = nil
	}
}

func (m *Main) newLogger() log.Logger {
	out := m.LogOutput
	if out == nil {
		out = os.Stderr
	}
	logger := log.NewLogfmtLogger(log.NewSyncWriter(out))
	logger = oneLineValues(logger)
	var opt level.Option
	switch m.Config.LogLevel {
	case "debug":
		opt = level.AllowDebug()
	case "warn":
		opt = level.AllowWarn()
	case "error":
		opt = level.AllowError()
	default:
		opt = level.AllowInfo()
	}
	// The timestamp and caller go on top of the filter: bound below it,
	// caller would name the filter's frame instead of the logging line.
	logger = level.NewFilter(logger, opt)
	return log.With(logger, "ts", log.DefaultTimestampUTC, "caller", log.DefaultCaller)
}

// openMetrics creates the registry and the shard metrics, and keeps the
// session start gauge fresh until ctx ends.
func (m *Main) openMetrics(ctx context.Context) {
	m.reg = prometheus.NewRegistry()
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.shardMetrics = shard.NewMetrics(m.reg)
	m.openSessionStarts(ctx)
}

// openListener listens on HTTP_HOST:HTTP_PORT before the fleet opens: Consul
// registers the port it got.
func (m *Main) openListener() error {
	ln, err := net.Listen("tcp", net.JoinHostPort(m.Config.HTTPHost, strconv.Itoa(m.Config.HTTPPort)))
	if err != nil {
		return fmt.Errorf("invalid HTTP_PORT: cannot listen: %w", err)
	}
	m.listener = ln
	m.mu.Lock()
	m.httpAddr = ln.Addr().String()
	m.mu.Unlock()
	return nil
}

// core is what the HTTP service wraps and what the shutdown drains: the
// fleet member with Consul, else the static pool.
func (m *Main) core() service.Service {
	if m.gens != nil {
		return m.gens
	}
	return m.pool
}

// openHTTPServer registers the gauges that read the pool and NATS, and
// builds the HTTP server over the service and its middlewares.
func (m *Main) openHTTPServer() {
	broker := m.broker()
	m.reg.MustRegister(
		poolGauge{desc: prometheus.NewDesc("gateway_shards_ready", "Shards of the pool whose session is READY.", []string{"pool_id"}, nil), pool: m.currentPool},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gateway_nats_connected", Help: "1 when connected to NATS, else 0 (always 0 in local mode).",
		}, func() float64 {
			if broker != nil && broker.Connected() {
				return 1
			}
			return 0
		}),
	)

	svc := m.core()
	svc = service.LoggingMiddleware(m.logger)(svc)
	svc = service.InstrumentingMiddleware(service.NewServiceMetrics(m.reg))(svc)
	endpoints := endpoint.New(svc)
	endpoints.SendEndpoint, endpoints.PlanEndpoint = m.commands.endpoints.SendEndpoint, m.commands.endpoints.PlanEndpoint
	endpoints.ReshardEndpoint = endpoint.MakeReshardEndpoint(m.reshardRequest)
	handler := transport.NewHTTPHandler(endpoints, transport.Options{DrainToken: m.Config.DrainToken, Gatherer: m.reg, Logger: m.logger})
	m.server = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      m.Config.DrainTimeout + 10*time.Second, // a POST /drain answers after the drain
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
}

// serve runs the HTTP server, the pool (or the fleet member) and the
// shutdown as a run group until ctx ends or an actor fails.
func (m *Main) serve(ctx context.Context) error {
	close(m.started)
	level.Info(m.logger).Log("msg", "http listening", "addr", m.listener.Addr().String())

	var g run.Group
	{
		g.Add(func() error {
			if err := m.server.Serve(m.listener); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}, func(error) {
			sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
			defer c()
			m.server.Shutdown(sctx)
		})
	}
	if m.member != nil {
		memberCtx, stopMember := context.WithCancel(context.Background())
		g.Add(func() error { return m.runFleet(memberCtx) }, func(error) { stopMember() })
	} else {
		poolCtx, stopPool := context.WithCancel(context.Background())
		g.Add(func() error { return m.pool.Run(poolCtx) }, func(error) { stopPool() })
	}
	{
		// The shutdown actor: a signal (ctx) drains the pool while the HTTP
		// server and NATS are still up, then ends the group.
		quit := make(chan struct{})
		g.Add(func() error {
			select {
			case <-ctx.Done():
				m.shutdown()
				return nil
			case <-quit:
				return nil
			}
		}, func(error) { close(quit) })
	}
	return g.Run()
}

// shutdown drains the pool, or, when crashing, leaves it as a crash would.
func (m *Main) shutdown() {
	if m.member != nil && m.crashing.Load() {
		level.Warn(m.logger).Log("msg", "stopping abruptly: no drain, no hand-off, consul session left to expire")
		m.gens.current().Abandon()
		return
	}
	level.Info(m.logger).Log("msg", "shutting down: draining the pool")
	m.stopStateCheckpoints()
	res, err := m.core().Drain(context.Background())
	m.saveFinalState(res, err)
	if err != nil && !errors.Is(err, service.ErrNotRunning) {
		level.Error(m.logger).Log("msg", "drain failed", "err", err)
	}
	m.drainedClean = err == nil && res.Flushed
}

// poolGauge is gateway_shards_ready, labelled with the id of the pool the
// instance runs at the moment (none while it is a spare).
type poolGauge struct {
	desc *prometheus.Desc
	pool func() *service.Pool
}

func (g poolGauge) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

func (g poolGauge) Collect(ch chan<- prometheus.Metric) {
	if p := g.pool(); p != nil {
		r := p.Readiness(context.Background())
		ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, float64(r.ShardsReady), strconv.Itoa(r.PoolID))
	}
}

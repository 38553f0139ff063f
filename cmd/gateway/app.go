package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/shardpool/gateway/discovery"
	"github.com/shardpool/gateway/endpoint"
	"github.com/shardpool/gateway/service"
	"github.com/shardpool/gateway/service/publish"
	jspub "github.com/shardpool/gateway/service/publish/jetstream"
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
	pool     *service.Pool
	member   *discovery.Member // with Consul
	stop     context.CancelFunc
	done     chan struct{}
	// crashing makes the next stop abrupt, as a crash: no drain, no
	// hand-off, the Consul session left to expire (tests).
	crashing atomic.Bool
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
	if m.member != nil {
		return m.member.Pool()
	}
	return m.pool
}

// Close drains the pool and waits for Run to return.
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

func (m *Main) newLogger() log.Logger {
	out := m.LogOutput
	if out == nil {
		out = os.Stderr
	}
	logger := log.NewLogfmtLogger(log.NewSyncWriter(out))
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

// Run runs the gateway until ctx ends or Close is called, then drains the
// pool (within DRAIN_TIMEOUT) and returns. A nil error means a clean exit.
func (m *Main) Run(ctx context.Context) (err error) {
	defer close(m.done)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	m.mu.Lock()
	m.stop = cancel
	m.mu.Unlock()

	cfg := m.Config
	logger := m.newLogger()
	if cfg.DiscordToken == "" {
		return errors.New("invalid DISCORD_TOKEN: is required")
	}

	// Discord first: the shard count and the identify budget decide
	// everything else.
	bot, err := shard.FetchGatewayBot(ctx, cfg.DiscordAPIURL, cfg.DiscordToken)
	if err != nil {
		return err
	}
	total := cfg.TotalShards
	if total == 0 {
		total = bot.Shards
		if total < 1 {
			total = 1
		}
	}
	// With Consul and no POOL_ID the pool is claimed later; pool 0 is the
	// largest, so its size is what the identify budget must cover.
	useConsul := cfg.ConsulHTTPAddr != ""
	claim := useConsul && !cfg.PoolIDSet
	pools := (total + cfg.ShardsPerPool - 1) / cfg.ShardsPerPool
	poolID := cfg.PoolID
	if claim {
		poolID = 0
	}
	first := poolID * cfg.ShardsPerPool
	if first >= total {
		return fmt.Errorf("invalid POOL_ID: pool %d has no shards (TOTAL_SHARDS=%d, SHARDS_PER_POOL=%d: pools 0..%d)",
			cfg.PoolID, total, cfg.ShardsPerPool, (total-1)/cfg.ShardsPerPool)
	}
	count := min(cfg.ShardsPerPool, total-first)
	limit := bot.StartLimit
	if limit.Remaining < count {
		return fmt.Errorf("session start limit too low: %d identifies remaining (of %d, resets in %s) but this pool must identify %d shards; running out resets the bot token, so refusing to start",
			limit.Remaining, limit.Total, limit.ResetAfter.Duration().Round(time.Second), count)
	}
	maxConcurrency := max(limit.MaxConcurrency, 1)
	instanceID := newInstanceID(cfg.ServiceName)
	if claim {
		level.Info(logger).Log("msg", "starting", "version", version, "pool_id", "claimed from consul", "pools", pools, "shards_per_pool", cfg.ShardsPerPool,
			"total_shards", total, "max_concurrency", maxConcurrency, "session_starts_remaining", limit.Remaining,
			"nats", cfg.NATSURL != "", "compression", cfg.Compression, "consul", true, "instance_id", instanceID)
	} else {
		level.Info(logger).Log("msg", "starting", "version", version, "pool_id", cfg.PoolID, "first_shard", first, "shards", count,
			"total_shards", total, "max_concurrency", maxConcurrency, "session_starts_remaining", limit.Remaining,
			"nats", cfg.NATSURL != "", "compression", cfg.Compression, "consul", useConsul)
	}
	if cfg.DrainToken == "" && !transport.IsLoopback(cfg.HTTPHost) {
		level.Warn(logger).Log("msg", "DRAIN_TOKEN is unset and the HTTP server is not bound to loopback: anyone who reaches it can drain the pool")
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	shardMetrics := shard.NewMetrics(reg)
	shardMetrics.SessionStarts.Set(float64(limit.Remaining))
	go refreshSessionStarts(ctx, cfg, shardMetrics.SessionStarts, logger)
	routeMetrics := publish.NewRouteMetrics(reg)

	// The publish path, innermost first.
	var (
		pub     publish.Publisher
		broker  service.Broker
		breaker *publish.Breaker
		closers []func()
	)
	if cfg.NATSURL == "" {
		level.Info(logger).Log("msg", "NATS_URL unset: local mode, events are logged at debug level and counted, not published")
		pub = publish.Local(logger)
		pub = publish.Instrumenting(routeMetrics)(pub)
	} else {
		natsName := "discord-gateway-pool-" + strconv.Itoa(cfg.PoolID)
		if claim {
			natsName = instanceID
		}
		nb, err := m.connectNATS(ctx, cfg, natsName, logger, reg)
		if err != nil {
			return err
		}
		closers = append(closers, nb.close)
		broker = nb
		breaker = publish.NewBreaker(publish.BreakerConfig{}, publish.NewBreakerMetrics(reg), logger)
		pub = nb.publisher
		pub = publish.Oversize(nb.publisher.MaxPayload, publish.NewOversizeCounter(reg), logger)(pub)
		pub = publish.Instrumenting(routeMetrics)(pub)
		pub = publish.CircuitBreaker(breaker)(pub)
		pub = publish.Logging(logger, 5*time.Second)(pub)
	}
	buffer := publish.NewBuffer(pub, publish.BufferConfig{
		MaxEvents: cfg.BufferMaxEvents,
		MaxBytes:  cfg.BufferMaxBytes,
		Metrics:   publish.NewBufferMetrics(reg),
	})

	var breakerState func() service.BreakerState
	if breaker != nil {
		breakerState = func() service.BreakerState { return breaker.State() }
	}
	cleanup := func() {
		buffer.Close()
		for _, c := range closers {
			c()
		}
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(cfg.HTTPHost, strconv.Itoa(cfg.HTTPPort)))
	if err != nil {
		cleanup()
		return fmt.Errorf("invalid HTTP_PORT: cannot listen: %w", err)
	}

	// With Consul, part of the drain budget goes to the hand-off, the
	// session and the deregistration.
	poolDrain := drainBudget(cfg.DrainTimeout)
	var (
		consul        *discovery.Consul
		consulTimeout time.Duration
	)
	discoveryMetrics := discovery.NewMetrics(nil)
	if useConsul {
		consulTimeout = min(max(poolDrain/12, 250*time.Millisecond), 2*time.Second)
		poolDrain = max(poolDrain-3*consulTimeout, poolDrain/2)
		discoveryMetrics = discovery.NewMetrics(reg)
		consul, err = discovery.NewConsul(discovery.ConsulConfig{
			Address: cfg.ConsulHTTPAddr, Token: cfg.ConsulHTTPToken,
			ServiceName: cfg.ServiceName, InstanceID: instanceID,
			ServiceAddress: advertiseAddress(cfg), ServicePort: ln.Addr().(*net.TCPAddr).Port,
			Version: version, KVPrefix: cfg.KVPrefix,
			SessionTTL: cfg.SessionTTL, LockDelay: cfg.LockDelay,
			CheckInterval: cfg.CheckInterval, DeregisterAfter: cfg.DeregisterAfter,
			Metrics: discoveryMetrics, Logger: logger,
		})
		if err != nil {
			ln.Close()
			cleanup()
			return fmt.Errorf("invalid CONSUL_HTTP_ADDR: %w", err)
		}
	}

	// newPool builds pool id; a shard with a hand-off record RESUMEs it.
	// Each pool gets its own identify limiter: its shards are the ones the
	// limiter expects, in order.
	var member *discovery.Member
	newPool := func(id int, resume map[int]*shard.Handoff) *service.Pool {
		first := id * cfg.ShardsPerPool
		count := min(cfg.ShardsPerPool, total-first)
		var identify interface {
			shard.IdentifyLimiter
			Expect(shardIDs ...int)
		}
		if consul != nil {
			identify = consul.NewIdentifyLimiter(member, maxConcurrency, cfg.IdentifyWindow)
		} else {
			identify = shard.NewBucketLimiter(maxConcurrency, cfg.IdentifyWindow)
		}
		for sid := first; sid < first+count; sid++ {
			if resume[sid] == nil { // a resuming shard never asks to identify
				identify.Expect(sid)
			}
		}
		return service.NewPool(service.PoolConfig{
			PoolID: id, FirstShard: first, Count: count, TotalShards: total,
			NewShard: func(sid int) *shard.Shard {
				return shard.New(shard.Config{
					ID: sid, Total: total, Token: cfg.DiscordToken, GatewayURL: bot.URL,
					Compression: cfg.Compression,
					Backoff:     shard.Backoff{Base: cfg.BackoffBase, Max: cfg.BackoffMax},
					Identify:    identify,
					Publisher:   buffer,
					Metrics:     shardMetrics,
					Logger:      logger,
					Resume:      resume[sid],
				})
			},
			Publish:      buffer,
			Broker:       broker,
			Breaker:      breakerState,
			Logger:       logger,
			DrainTimeout: poolDrain,
		})
	}
	var (
		pool    *service.Pool
		drainer interface {
			Drain(context.Context) (service.DrainResult, error)
		}
		svc     service.Service
		current func() *service.Pool
	)
	if consul != nil {
		fixed := -1
		if !claim {
			fixed = cfg.PoolID
		}
		member = discovery.NewMember(discovery.MemberConfig{
			InstanceID: instanceID, FixedPool: fixed, Pools: pools, ShardsPerPool: cfg.ShardsPerPool, TotalShards: total,
			NewPool: newPool, Registry: consul, Coordinator: consul,
			HandoffMaxAge: cfg.HandoffMaxAge, ConsulTimeout: consulTimeout,
			Publish: buffer, Broker: broker, Breaker: breakerState,
			Metrics: discoveryMetrics, Logger: logger,
		})
		svc, drainer, current = member, member, member.Pool
	} else {
		pool = newPool(cfg.PoolID, nil)
		svc, drainer, current = pool, pool, func() *service.Pool { return pool }
	}
	reg.MustRegister(
		poolGauge{desc: prometheus.NewDesc("gateway_shards_ready", "Shards of the pool whose session is READY.", []string{"pool_id"}, nil), pool: current},
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gateway_nats_connected", Help: "1 when connected to NATS, else 0 (always 0 in local mode).",
		}, func() float64 {
			if broker != nil && broker.Connected() {
				return 1
			}
			return 0
		}),
	)

	svc = service.LoggingMiddleware(logger)(svc)
	svc = service.InstrumentingMiddleware(service.NewServiceMetrics(reg))(svc)
	endpoints := endpoint.New(svc)
	handler := transport.NewHTTPHandler(endpoints, transport.Options{DrainToken: cfg.DrainToken, Gatherer: reg, Logger: logger})
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      cfg.DrainTimeout + 10*time.Second, // a POST /drain answers after the drain
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	m.mu.Lock()
	m.httpAddr = ln.Addr().String()
	m.pool = pool
	m.member = member
	m.mu.Unlock()
	close(m.started)
	level.Info(logger).Log("msg", "http listening", "addr", ln.Addr().String())

	var g run.Group
	{
		g.Add(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}, func(error) {
			sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
			defer c()
			srv.Shutdown(sctx)
		})
	}
	if member != nil {
		memberCtx, stopMember := context.WithCancel(context.Background())
		g.Add(func() error { return member.Run(memberCtx) }, func(error) { stopMember() })
	} else {
		poolCtx, stopPool := context.WithCancel(context.Background())
		g.Add(func() error { return pool.Run(poolCtx) }, func(error) { stopPool() })
	}
	{
		// The shutdown actor: a signal (ctx) drains the pool while the HTTP
		// server and NATS are still up, then ends the group.
		quit := make(chan struct{})
		g.Add(func() error {
			select {
			case <-ctx.Done():
				if member != nil && m.crashing.Load() {
					level.Warn(logger).Log("msg", "stopping abruptly: no drain, no hand-off, consul session left to expire")
					member.Abandon()
					return nil
				}
				level.Info(logger).Log("msg", "shutting down: draining the pool")
				if _, err := drainer.Drain(context.Background()); err != nil && !errors.Is(err, service.ErrNotRunning) {
					level.Error(logger).Log("msg", "drain failed", "err", err)
				}
				return nil
			case <-quit:
				return nil
			}
		}, func(error) { close(quit) })
	}
	err = g.Run()
	cleanup()
	level.Info(logger).Log("msg", "exit", "err", err)
	return err
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

// newInstanceID names this process in Consul: unique, readable.
func newInstanceID(service string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "host"
	}
	var b [4]byte
	rand.Read(b[:])
	return service + "-" + host + "-" + hex.EncodeToString(b[:])
}

// advertiseAddress is SERVICE_ADDRESS, else what discovery.AdvertiseAddress
// finds for HTTP_HOST.
func advertiseAddress(cfg Config) string {
	if cfg.ServiceAddress != "" {
		return cfg.ServiceAddress
	}
	return discovery.AdvertiseAddress(cfg.HTTPHost, cfg.ConsulHTTPAddr)
}

// refreshSessionStarts re-reads session_start_limit now and then: other
// pools of the bot spend the same budget.
func refreshSessionStarts(ctx context.Context, cfg Config, g prometheus.Gauge, logger log.Logger) {
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		bot, err := shard.FetchGatewayBot(ctx, cfg.DiscordAPIURL, cfg.DiscordToken)
		if err != nil {
			level.Warn(logger).Log("msg", "cannot refresh the session start limit", "err", err)
			continue
		}
		g.Set(float64(bot.StartLimit.Remaining))
	}
}

// drainBudget leaves part of DRAIN_TIMEOUT for closing HTTP and NATS, so the
// process exits within DRAIN_TIMEOUT.
func drainBudget(d time.Duration) time.Duration {
	margin := min(d/10, 3*time.Second)
	return d - margin
}

// natsBroker owns the NATS connection and the JetStream publisher.
type natsBroker struct {
	nc        *nats.Conn
	publisher *jspub.Publisher
	stop      context.CancelFunc
}

func (b *natsBroker) Connected() bool { return b.nc.IsConnected() }

func (b *natsBroker) close() {
	b.stop()
	b.publisher.Close()
	b.nc.Close()
}

// connectNATS connects (retrying in the background if NATS is down at
// startup) and ensures the streams, again after every reconnect: a lone
// server with memory storage comes back without them.
func (m *Main) connectNATS(ctx context.Context, cfg Config, name string, logger log.Logger, reg prometheus.Registerer) (*natsBroker, error) {
	ensure := make(chan struct{}, 1)
	kick := func(connected bool) {
		if connected {
			select {
			case ensure <- struct{}{}:
			default:
			}
		}
	}
	auth, err := cfg.NATSAuth.Options()
	if err != nil {
		return nil, fmt.Errorf("invalid %w", err)
	}
	nc, err := jspub.Connect(cfg.NATSURL, name, logger, kick, auth...)
	if err != nil {
		return nil, fmt.Errorf("invalid NATS_URL: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	storage := jetstream.MemoryStorage
	if cfg.StreamStorage == "file" {
		storage = jetstream.FileStorage
	}
	streams := jspub.StreamConfig{Storage: storage, Replicas: cfg.StreamReplicas}
	ectx, stop := context.WithCancel(context.Background())
	kick(nc.IsConnected())
	go func() {
		for {
			select {
			case <-ectx.Done():
				return
			case <-ensure:
			}
			for delay := 500 * time.Millisecond; ; delay = min(delay*2, 30*time.Second) {
				cctx, c := context.WithTimeout(ectx, 10*time.Second)
				err := jspub.EnsureStreams(cctx, js, streams, logger)
				c()
				if err == nil || ectx.Err() != nil {
					break
				}
				level.Warn(logger).Log("msg", "cannot ensure JetStream streams yet; retrying", "err", err, "in", delay)
				select {
				case <-ectx.Done():
					return
				case <-time.After(delay):
				}
			}
		}
	}()
	pub, err := jspub.NewPublisher(nc, logger)
	if err != nil {
		stop()
		nc.Close()
		return nil, err
	}
	return &natsBroker{nc: nc, publisher: pub, stop: stop}, nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shardpool/gateway/service"
	"github.com/shardpool/gateway/service/publish"
	jspub "github.com/shardpool/gateway/service/publish/jetstream"
)

// openPublishPath builds what every event goes through, innermost first:
// the JetStream publisher (without NATS_URL, the local one that only logs
// and counts), its middlewares, and the buffer the shards publish into.
func (m *Main) openPublishPath() error {
	routeMetrics := publish.NewRouteMetrics(m.reg)
	var pub publish.Publisher
	if m.Config.NATSURL == "" {
		level.Info(m.logger).Log("msg", "NATS_URL unset: local mode, events are logged at debug level and counted, not published")
		pub = publish.Local(m.logger)
		pub = publish.Instrumenting(routeMetrics)(pub)
	} else {
		nb, err := m.connectNATS(m.natsName())
		if err != nil {
			return err
		}
		m.nats = nb
		m.breaker = publish.NewBreaker(publish.BreakerConfig{}, publish.NewBreakerMetrics(m.reg), m.logger)
		pub = nb.publisher
		pub = publish.Oversize(nb.publisher.MaxPayload, publish.NewOversizeCounter(m.reg), m.logger)(pub)
		pub = publish.Instrumenting(routeMetrics)(pub)
		if m.routeTap != nil {
			pub = m.routeTap(pub)
		}
		pub = publish.CircuitBreaker(m.breaker)(pub)
		pub = publish.Logging(m.logger, jspub.DefaultSummaryEvery)(pub)
	}
	m.buffer = publish.NewBuffer(pub, publish.BufferConfig{
		MaxEvents: m.Config.BufferMaxEvents,
		MaxBytes:  m.Config.BufferMaxBytes,
		Metrics:   publish.NewBufferMetrics(m.reg),
		Logger:    m.logger,
	})
	return nil
}

// natsName names the NATS connection: after the pool, or after the
// instance when the pool is claimed later.
func (m *Main) natsName() string {
	if m.plan.claim {
		return m.plan.instanceID
	}
	return "discord-gateway-pool-" + strconv.Itoa(m.Config.PoolID)
}

// broker is the NATS connection as the pool sees it: nil in local mode (a
// nil interface, not a nil *natsBroker).
func (m *Main) broker() service.Broker {
	if m.nats == nil {
		return nil
	}
	return m.nats
}

// breakerState reports the publish breaker's state; nil in local mode.
func (m *Main) breakerState() func() service.BreakerState {
	if m.breaker == nil {
		return nil
	}
	breaker := m.breaker
	return func() service.BreakerState { return breaker.State() }
}

// natsBroker owns the NATS connection and the JetStream publisher, and
// knows whether the server it is connected to has JetStream. It implements
// service.Broker.
type natsBroker struct {
	nc        *nats.Conn
	monitor   *jspub.Monitor
	publisher *jspub.Publisher
	stop      context.CancelFunc

	mu        sync.Mutex
	jetStream string // service.JetStream*
}

func (b *natsBroker) Connected() bool { return b.nc.IsConnected() }

func (b *natsBroker) JetStream() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.jetStream
}

func (b *natsBroker) LastError() (string, time.Time) { return b.monitor.LastError() }

// setJetStream records what the server said about JetStream, unless the
// connection has changed since it was asked (reconnects is
// nc.Stats().Reconnects at the time): another server may answer otherwise.
func (b *natsBroker) setJetStream(state string, reconnects uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.nc.IsConnected() && b.nc.Stats().Reconnects == reconnects {
		b.jetStream = state
	}
}

func (b *natsBroker) close() {
	b.stop()
	b.publisher.Close()
	b.nc.Close()
}

// connectNATS connects (retrying in the background if NATS is down at
// startup), then asks the server whether it has JetStream and ensures the
// streams, again after every reconnect: another server may answer, and a
// lone server with memory storage comes back without them.
func (m *Main) connectNATS(name string) (*natsBroker, error) {
	cfg := m.Config
	b := &natsBroker{jetStream: service.JetStreamUnknown}
	kicks := make(chan struct{}, 1)
	b.monitor = &jspub.Monitor{Logger: m.logger, OnState: func(connected bool) {
		b.mu.Lock()
		b.jetStream = service.JetStreamUnknown // until the server says
		b.mu.Unlock()
		if connected {
			kick(kicks)
		}
	}}
	auth, err := cfg.NATSAuth.Options()
	if err != nil {
		return nil, fmt.Errorf("invalid %w", err)
	}
	if b.nc, err = jspub.Connect(cfg.NATSURL, name, b.monitor, auth...); err != nil {
		return nil, fmt.Errorf("invalid NATS_URL: %w", err)
	}
	js, err := jetstream.New(b.nc)
	if err != nil {
		b.nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	storage := jetstream.MemoryStorage
	if cfg.StreamStorage == "file" {
		storage = jetstream.FileStorage
	}
	streams := jspub.NewStreamKeeper(jspub.StreamConfig{Storage: storage, Replicas: cfg.StreamReplicas}, m.logger)
	// Not Run's context: the streams must stay ensured while the pool
	// drains, until the broker closes.
	ectx, stop := context.WithCancel(context.Background())
	b.stop = stop
	if b.nc.IsConnected() {
		kick(kicks)
	}
	go b.keepStreams(ectx, js, streams, kicks, m.logger)
	if b.publisher, err = jspub.NewPublisher(b.nc, m.logger); err != nil {
		stop()
		b.nc.Close()
		return nil, err
	}
	return b, nil
}

// kick asks keepStreams for a round, unless one is already asked for.
func kick(kicks chan<- struct{}) {
	select {
	case kicks <- struct{}{}:
	default:
	}
}

// keepStreams runs a round of ensure on every kick, until ctx ends.
func (b *natsBroker) keepStreams(ctx context.Context, js jetstream.JetStream, streams *jspub.StreamKeeper, kicks <-chan struct{}, logger log.Logger) {
	why := &reasonLog{logger: logger, every: jspub.DefaultSummaryEvery}
	for {
		select {
		case <-ctx.Done():
			return
		case <-kicks:
		}
		b.ensure(ctx, js, streams, kicks, why)
	}
}

// ensure asks the server whether it has JetStream, then ensures the
// streams, retrying with backoff (and at once on a kick) until both are
// done or the connection is down: the next connect kicks again.
func (b *natsBroker) ensure(ctx context.Context, js jetstream.JetStream, streams *jspub.StreamKeeper, kicks <-chan struct{}, why *reasonLog) {
	for delay := 500 * time.Millisecond; ; delay = min(delay*2, 30*time.Second) {
		err := b.ensureOnce(ctx, js, streams, why)
		if err == nil || ctx.Err() != nil || !b.nc.IsConnected() {
			return
		}
		why.failed(err, delay)
		select {
		case <-ctx.Done():
			return
		case <-kicks:
			delay = 250 * time.Millisecond // doubled to 500 ms
		case <-time.After(delay):
		}
	}
}

func (b *natsBroker) ensureOnce(ctx context.Context, js jetstream.JetStream, streams *jspub.StreamKeeper, why *reasonLog) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	reconnects := b.nc.Stats().Reconnects
	var off *jspub.NotEnabledError
	switch err := jspub.CheckJetStream(ctx, js); {
	case errors.As(err, &off):
		b.setJetStream(service.JetStreamNotEnabled, reconnects)
		b.monitor.RecordError(err)
		return err
	case err != nil:
		return err
	}
	b.setJetStream(service.JetStreamEnabled, reconnects)
	why.enabled()
	return streams.Ensure(ctx, js)
}

// reasonLog says why the streams cannot be ensured yet: a new reason at
// once, the same one again at most once per every, so a server without
// JetStream, asked again and again, does not flood the log.
type reasonLog struct {
	logger log.Logger
	every  time.Duration
	last   string    // the reason logged last
	at     time.Time // when
	off    bool      // the last reason was JetStream not enabled
}

func (l *reasonLog) failed(err error, retryIn time.Duration) {
	reason := err.Error()
	if reason == l.last && time.Since(l.at) < l.every {
		return
	}
	l.last, l.at = reason, time.Now()
	var off *jspub.NotEnabledError
	if l.off = errors.As(err, &off); l.off {
		level.Error(l.logger).Log("msg", "not ready: events are held until JetStream answers", "err", err)
		return
	}
	level.Warn(l.logger).Log("msg", "cannot ensure JetStream streams yet; retrying", "err", err, "in", retryIn)
}

// enabled says that JetStream answers, once, when the last word was that
// it did not.
func (l *reasonLog) enabled() {
	if l.off {
		level.Info(l.logger).Log("msg", "JetStream is enabled on the NATS server now; publishing")
	}
	l.last, l.off = "", false
}

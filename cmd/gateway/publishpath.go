package main

import (
	"context"
	"fmt"
	"strconv"
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
		pub = publish.CircuitBreaker(m.breaker)(pub)
		pub = publish.Logging(m.logger, 5*time.Second)(pub)
	}
	m.buffer = publish.NewBuffer(pub, publish.BufferConfig{
		MaxEvents: m.Config.BufferMaxEvents,
		MaxBytes:  m.Config.BufferMaxBytes,
		Metrics:   publish.NewBufferMetrics(m.reg),
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
func (m *Main) connectNATS(name string) (*natsBroker, error) {
	cfg := m.Config
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
	nc, err := jspub.Connect(cfg.NATSURL, name, m.logger, kick, auth...)
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
	// Not Run's context: the streams must stay ensured while the pool
	// drains, until the broker closes.
	ectx, stop := context.WithCancel(context.Background())
	kick(nc.IsConnected())
	go ensureStreams(ectx, js, streams, ensure, m.logger)
	pub, err := jspub.NewPublisher(nc, m.logger)
	if err != nil {
		stop()
		nc.Close()
		return nil, err
	}
	return &natsBroker{nc: nc, publisher: pub, stop: stop}, nil
}

// ensureStreams ensures the streams on every kick, retrying with backoff,
// until ctx ends.
func ensureStreams(ctx context.Context, js jetstream.JetStream, streams jspub.StreamConfig, kicks <-chan struct{}, logger log.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-kicks:
		}
		for delay := 500 * time.Millisecond; ; delay = min(delay*2, 30*time.Second) {
			cctx, c := context.WithTimeout(ctx, 10*time.Second)
			err := jspub.EnsureStreams(cctx, js, streams, logger)
			c()
			if err == nil || ctx.Err() != nil {
				break
			}
			level.Warn(logger).Log("msg", "cannot ensure JetStream streams yet; retrying", "err", err, "in", delay)
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
		}
	}
}

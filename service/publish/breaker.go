package publish

import (
	"context"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"

	"github.com/shardpool/gateway/service/event"
)

// Breaker is the two-step circuit breaker of the publish path: Allow before
// handing an event to JetStream, report the outcome when its ack arrives
// (an async publish returns long before the broker has said anything).
type Breaker = gobreaker.TwoStepCircuitBreaker[struct{}]

// BreakerMetrics are the breaker's state gauge and transition counter.
type BreakerMetrics struct {
	State       *prometheus.GaugeVec   // breaker
	Transitions *prometheus.CounterVec // from, to
}

// NewBreakerMetrics creates and registers the breaker metrics.
func NewBreakerMetrics(reg prometheus.Registerer) *BreakerMetrics {
	m := &BreakerMetrics{
		State: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gateway_circuit_breaker_state",
			Help: "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
		}, []string{"breaker"}),
		Transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_circuit_breaker_transitions_total",
			Help: "Circuit breaker state transitions.",
		}, []string{"from", "to"}),
	}
	reg.MustRegister(m.State, m.Transitions)
	return m
}

// BreakerConfig tunes NewBreaker.
type BreakerConfig struct {
	Name string
	// ConsecutiveFailures trips the breaker.
	ConsecutiveFailures uint32
	// OpenTimeout is how long it stays open before half-open probes.
	OpenTimeout time.Duration
	// Probes is how many events half-open lets through; that many
	// consecutive acks close it.
	Probes uint32
}

// NewBreaker builds the breaker; transitions are logged and exported.
func NewBreaker(cfg BreakerConfig, m *BreakerMetrics, logger log.Logger) *Breaker {
	if cfg.Name == "" {
		cfg.Name = "jetstream"
	}
	if cfg.ConsecutiveFailures == 0 {
		cfg.ConsecutiveFailures = 5
	}
	if cfg.OpenTimeout == 0 {
		cfg.OpenTimeout = 2 * time.Second
	}
	if cfg.Probes == 0 {
		cfg.Probes = 5
	}
	if m != nil {
		m.State.WithLabelValues(cfg.Name).Set(float64(gobreaker.StateClosed))
	}
	return gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        cfg.Name,
		MaxRequests: cfg.Probes,
		Interval:    30 * time.Second,
		Timeout:     cfg.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= cfg.ConsecutiveFailures
		},
		OnStateChange: func(name string, from, to gobreaker.State) {
			if m != nil {
				m.State.WithLabelValues(name).Set(float64(to))
				m.Transitions.WithLabelValues(from.String(), to.String()).Inc()
			}
			lvl := level.Warn
			if to == gobreaker.StateClosed {
				lvl = level.Info
			}
			lvl(logger).Log("msg", "circuit breaker state changed", "breaker", name, "from", from.String(), "to", to.String())
		},
	})
}

// CircuitBreaker refuses events while cb is open (or half-open and out of
// probes) and feeds it each event's ack outcome.
func CircuitBreaker(cb *Breaker) Middleware {
	return func(next Publisher) Publisher {
		return PublisherFunc(func(ctx context.Context, ev *event.Event, done Done) error {
			report, err := cb.Allow()
			if err != nil {
				return err
			}
			if err := next.Publish(ctx, ev, func(err error) {
				report(err)
				done(err)
			}); err != nil {
				report(err)
				return err
			}
			return nil
		})
	}
}

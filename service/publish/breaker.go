package publish

import (
	"context"
	"sync"
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
	// LogEvery bounds the lines about an outage's repeated flips; 0 means
	// 30s.
	LogEvery time.Duration
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
	if cfg.LogEvery == 0 {
		cfg.LogEvery = 30 * time.Second
	}
	transitions := &transitionLog{logger: logger, every: cfg.LogEvery}
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
		// An event refused for the message itself says nothing about the
		// broker (which answered): neither a failure that trips the
		// breaker, nor a success, nor a half-open probe's verdict (its
		// slot is given back).
		IsExcluded: IsRejected,
		OnStateChange: func(name string, from, to gobreaker.State) {
			if m != nil {
				m.State.WithLabelValues(name).Set(float64(to))
				m.Transitions.WithLabelValues(from.String(), to.String()).Inc()
			}
			transitions.log(name, from, to)
		},
	})
}

// transitionLog logs the breaker's state changes. While the broker stays
// down the breaker flips open, half-open and open again every OpenTimeout,
// two lines every 2 s that say nothing new; so each kind of flip is logged
// once per outage, and the rest are summed up at most once per every. The
// close that ends the outage is always logged, with the flips not logged.
type transitionLog struct {
	logger log.Logger
	every  time.Duration

	mu       sync.Mutex
	seen     map[[2]gobreaker.State]bool // kinds logged since the last close
	unlogged int                         // flips since the last line
	last     time.Time                   // of the last line
}

func (l *transitionLog) log(name string, from, to gobreaker.State) {
	l.mu.Lock()
	now := time.Now()
	lvl := level.Warn
	kv := []any{"msg", "circuit breaker state changed", "breaker", name, "from", from.String(), "to", to.String()}
	switch kind := [2]gobreaker.State{from, to}; {
	case to == gobreaker.StateClosed:
		lvl = level.Info
		if l.unlogged > 0 {
			kv = append(kv, "unlogged_flips", l.unlogged)
		}
		l.seen, l.unlogged = nil, 0
	case !l.seen[kind]:
		if l.seen == nil {
			l.seen = map[[2]gobreaker.State]bool{}
		}
		l.seen[kind] = true
	case now.Sub(l.last) >= l.every:
		kv = []any{"msg", "circuit breaker keeps reopening: publishing still fails", "breaker", name, "state", to.String(),
			"flips", l.unlogged + 1, "since_last_line", now.Sub(l.last).Round(time.Second)}
		l.unlogged = 0
	default:
		l.unlogged++
		l.mu.Unlock()
		return
	}
	l.last = now
	l.mu.Unlock()
	lvl(l.logger).Log(kv...)
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

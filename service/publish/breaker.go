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
//
// It is gobreaker's TwoStepCircuitBreaker with the settings NewBreaker
// gave it (its states, errors, generations and counts, without the rolling
// buckets it never used), written out so that an event costs no closure:
// gobreaker's Allow returns a new one per call, the last allocation per
// event on the hot path.
type Breaker struct {
	name        string
	maxRequests uint32        // half-open probes
	interval    time.Duration // closed: counts start afresh this often
	timeout     time.Duration // open: until half-open
	readyToTrip func(gobreaker.Counts) bool
	isExcluded  func(error) bool
	onChange    func(name string, from, to gobreaker.State)

	mu         sync.Mutex
	state      gobreaker.State
	generation uint64
	counts     gobreaker.Counts
	expiry     time.Time
}

// Allow asks to send one event: report must be called with its outcome
// (the ack's error). err is gobreaker.ErrOpenState or ErrTooManyRequests
// when the breaker refuses.
func (cb *Breaker) Allow() (report func(error), err error) {
	gen, err := cb.before()
	if err != nil {
		return nil, err
	}
	return func(err error) { cb.after(gen, err) }, nil
}

// State returns the breaker's state now.
func (cb *Breaker) State() gobreaker.State {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	state, _ := cb.current(time.Now())
	return state
}

// before is Allow's first step: the generation to report the outcome in.
func (cb *Breaker) before() (uint64, error) {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	state, gen := cb.current(time.Now())
	switch {
	case state == gobreaker.StateOpen:
		return gen, gobreaker.ErrOpenState
	case state == gobreaker.StateHalfOpen && cb.validRequests() >= cb.maxRequests:
		return gen, gobreaker.ErrTooManyRequests
	}
	cb.counts.Requests++
	return gen, nil
}

// after reports an outcome; one from an earlier generation is ignored.
func (cb *Breaker) after(gen uint64, err error) {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	if err == nil && cb.state == gobreaker.StateClosed {
		// The common case, without the clock: a closed breaker's
		// generation may have expired unseen, but the next before()
		// clears its counts anyway, this success included.
		if gen == cb.generation {
			cb.counts.TotalSuccesses++
			cb.counts.ConsecutiveSuccesses++
			cb.counts.ConsecutiveFailures = 0
		}
		return
	}
	now := time.Now()
	state, current := cb.current(now)
	switch {
	case current != gen:
	case cb.isExcluded(err):
		cb.counts.TotalExclusions++
	case err == nil:
		cb.counts.TotalSuccesses++
		cb.counts.ConsecutiveSuccesses++
		cb.counts.ConsecutiveFailures = 0
		if state == gobreaker.StateHalfOpen && cb.counts.ConsecutiveSuccesses >= cb.maxRequests {
			cb.setState(gobreaker.StateClosed, now)
		}
	case state == gobreaker.StateClosed:
		cb.counts.TotalFailures++
		cb.counts.ConsecutiveFailures++
		cb.counts.ConsecutiveSuccesses = 0
		if cb.readyToTrip(cb.counts) {
			cb.setState(gobreaker.StateOpen, now)
		}
	case state == gobreaker.StateHalfOpen:
		cb.setState(gobreaker.StateOpen, now)
	}
}

func (cb *Breaker) validRequests() uint32 {
	if cb.counts.Requests < cb.counts.TotalExclusions {
		return 0
	}
	return cb.counts.Requests - cb.counts.TotalExclusions
}

// current moves the state on as time has passed: a closed breaker's counts
// start afresh every interval, an open one turns half-open after timeout.
func (cb *Breaker) current(now time.Time) (gobreaker.State, uint64) {
	switch cb.state {
	case gobreaker.StateClosed:
		if !cb.expiry.IsZero() && cb.expiry.Before(now) {
			cb.newGeneration(now)
		}
	case gobreaker.StateOpen:
		if cb.expiry.Before(now) {
			cb.setState(gobreaker.StateHalfOpen, now)
		}
	}
	return cb.state, cb.generation
}

func (cb *Breaker) setState(state gobreaker.State, now time.Time) {
	if cb.state == state {
		return
	}
	prev := cb.state
	cb.state = state
	cb.newGeneration(now)
	if cb.onChange != nil {
		cb.onChange(cb.name, prev, state)
	}
}

func (cb *Breaker) newGeneration(now time.Time) {
	cb.generation++
	cb.counts = gobreaker.Counts{}
	switch cb.state {
	case gobreaker.StateClosed:
		cb.expiry = time.Time{}
		if cb.interval > 0 {
			cb.expiry = now.Add(cb.interval)
		}
	case gobreaker.StateOpen:
		cb.expiry = now.Add(cb.timeout)
	default:
		cb.expiry = time.Time{}
	}
}

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
	cb := &Breaker{
		name:        cfg.Name,
		maxRequests: cfg.Probes,
		interval:    30 * time.Second,
		timeout:     cfg.OpenTimeout,
		readyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= cfg.ConsecutiveFailures
		},
		// An event refused for the message itself says nothing about the
		// broker (which answered): neither a failure that trips the
		// breaker, nor a success, nor a half-open probe's verdict (its
		// slot is given back).
		isExcluded: IsRejected,
		onChange: func(name string, from, to gobreaker.State) {
			if m != nil {
				m.State.WithLabelValues(name).Set(float64(to))
				m.Transitions.WithLabelValues(from.String(), to.String()).Inc()
			}
			transitions.log(name, from, to)
		},
	}
	cb.newGeneration(time.Now())
	return cb
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
	var calls sync.Pool
	calls.New = func() any {
		c := &breakerCall{pool: &calls}
		c.acked = c.ack
		return c
	}
	return func(next Publisher) Publisher {
		return PublisherFunc(func(ctx context.Context, ev *event.Event, done Done) error {
			gen, err := cb.before()
			if err != nil {
				return err
			}
			c := calls.Get().(*breakerCall)
			c.cb, c.gen, c.done = cb, gen, done
			if err := next.Publish(ctx, ev, c.acked); err != nil {
				c.cb, c.done = nil, nil
				calls.Put(c) // not accepted: its done will not be called
				cb.after(gen, err)
				return err
			}
			return nil
		})
	}
}

// breakerCall is an event in flight through CircuitBreaker: its done,
// wrapped. Calls are reused, with acked bound once, so that an event costs
// no closure.
type breakerCall struct {
	cb    *Breaker
	gen   uint64
	done  Done
	acked Done // ack
	pool  *sync.Pool
}

func (c *breakerCall) ack(err error) {
	cb, gen, done := c.cb, c.gen, c.done
	c.cb, c.done = nil, nil
	c.pool.Put(c)
	cb.after(gen, err)
	done(err)
}

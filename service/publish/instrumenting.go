package publish

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardpool/gateway/service/event"
)

// RouteMetrics count what reaches JetStream, per shard.
type RouteMetrics struct {
	Routed   *prometheus.CounterVec   // shard_id
	Failures *prometheus.CounterVec   // shard_id
	Duration *prometheus.HistogramVec // shard_id
}

// NewRouteMetrics creates and registers the routing metrics.
func NewRouteMetrics(reg prometheus.Registerer) *RouteMetrics {
	m := &RouteMetrics{
		Routed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_events_routed_total",
			Help: "Events published to JetStream and acked, by shard.",
		}, []string{"shard_id"}),
		Failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_route_failures_total",
			Help: "Publish attempts that failed (publish error, failed or timed-out ack); each is retried, except a refusal of the message itself (see gateway_events_dropped_total).",
		}, []string{"shard_id"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gateway_event_route_duration_seconds",
			Help:    "Time from reading a dispatch off the socket to its JetStream ack.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"shard_id"}),
	}
	reg.MustRegister(m.Routed, m.Failures, m.Duration)
	return m
}

type shardSeries struct {
	routed, failures prometheus.Counter
	duration         prometheus.Observer
}

// Instrumenting records each publish attempt's outcome and latency. It sits
// below the breaker, so it sees real attempts only, not refusals.
func Instrumenting(m *RouteMetrics) Middleware {
	var (
		mu     sync.RWMutex
		series = map[int]*shardSeries{}
	)
	// Resolving label values allocates; do it once per shard.
	get := func(shard int) *shardSeries {
		mu.RLock()
		s := series[shard]
		mu.RUnlock()
		if s != nil {
			return s
		}
		l := strconv.Itoa(shard)
		s = &shardSeries{routed: m.Routed.WithLabelValues(l), failures: m.Failures.WithLabelValues(l), duration: m.Duration.WithLabelValues(l)}
		mu.Lock()
		series[shard] = s
		mu.Unlock()
		return s
	}
	var calls sync.Pool
	calls.New = func() any {
		c := &instrumentedCall{pool: &calls}
		c.acked = c.ack
		return c
	}
	return func(next Publisher) Publisher {
		return PublisherFunc(func(ctx context.Context, ev *event.Event, done Done) error {
			s := get(ev.ShardID)
			c := calls.Get().(*instrumentedCall)
			c.series, c.receivedAt, c.done = s, ev.ReceivedAt, done
			err := next.Publish(ctx, ev, c.acked)
			if err != nil {
				c.series, c.done = nil, nil
				calls.Put(c) // not accepted: its done will not be called
				s.failures.Inc()
			}
			return err
		})
	}
}

// instrumentedCall is an event in flight through Instrumenting: its done,
// wrapped. Calls are reused, with acked bound once, so that an event costs
// no closure.
type instrumentedCall struct {
	series     *shardSeries
	receivedAt time.Time
	done       Done
	acked      Done // ack
	pool       *sync.Pool
}

func (c *instrumentedCall) ack(err error) {
	s, receivedAt, done := c.series, c.receivedAt, c.done
	c.series, c.done = nil, nil
	c.pool.Put(c)
	if err != nil {
		s.failures.Inc()
	} else {
		s.routed.Inc()
		s.duration.Observe(time.Since(receivedAt).Seconds())
	}
	done(err)
}

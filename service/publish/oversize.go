package publish

import (
	"context"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardpool/gateway/service/event"
)

// headerAllowance covers the Nats-Msg-Id header and protocol framing that
// count against the server's max_payload besides the body.
const headerAllowance = 256

// NewOversizeCounter creates and registers gateway_events_oversize_total.
func NewOversizeCounter(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gateway_events_oversize_total",
		Help: "Events larger than the broker's max_payload, published with data reduced to its top-level scalar fields and data_truncated: true.",
	}, []string{"event_type"})
	reg.MustRegister(c)
	return c
}

// Oversize keeps an event larger than the broker accepts (a GUILD_CREATE of
// a big guild can pass NATS's default 1 MiB max_payload) from blocking its
// shard or being retried forever: it is published in compact form
// (event.Compact), counted and logged with its guild. maxPayload reports the
// broker's current limit (0 or less: unknown, no check).
func Oversize(maxPayload func() int64, counter *prometheus.CounterVec, logger log.Logger) Middleware {
	return func(next Publisher) Publisher {
		return PublisherFunc(func(ctx context.Context, ev *event.Event, done Done) error {
			limit := maxPayload()
			if limit <= 0 || int64(len(ev.Body)+len(ev.ID)+headerAllowance) <= limit {
				return next.Publish(ctx, ev, done)
			}
			compact, err := event.Compact(ev)
			if err != nil || int64(len(compact.Body)+len(ev.ID)+headerAllowance) > limit {
				// Cannot happen with a sane max_payload; publishing the full
				// event lets the failure surface in the route metrics.
				level.Error(logger).Log("msg", "event exceeds max_payload even in compact form", "event_type", ev.Type, "guild_id", ev.GuildID, "bytes", len(ev.Body), "max_payload", limit, "err", err)
				return next.Publish(ctx, ev, done)
			}
			counter.WithLabelValues(ev.Type).Inc()
			level.Warn(logger).Log("msg", "event larger than the NATS max_payload published with data truncated; raise max_payload to keep it whole",
				"event_type", ev.Type, "guild_id", ev.GuildID, "shard_id", ev.ShardID, "bytes", len(ev.Body), "compact_bytes", len(compact.Body), "max_payload", limit)
			return next.Publish(ctx, compact, done)
		})
	}
}

package publish

import (
	"context"
	"fmt"

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
// (event.Compact), counted and logged with its guild. If even the compact
// form is too large, Publish returns a *RejectedError for the buffer to
// drop the event. maxPayload reports the broker's current limit (0 or less:
// unknown, no check).
func Oversize(maxPayload func() int64, counter *prometheus.CounterVec, logger log.Logger) Middleware {
	return func(next Publisher) Publisher {
		return PublisherFunc(func(ctx context.Context, ev *event.Event, done Done) error {
			limit := maxPayload()
			if limit <= 0 || int64(len(ev.Body)+len(ev.ID)+headerAllowance) <= limit {
				return next.Publish(ctx, ev, done)
			}
			compact, err := event.Compact(ev)
			if err != nil || int64(len(compact.Body)+len(ev.ID)+headerAllowance) > limit {
				// Only with an absurdly small max_payload, or for an event
				// compacted already: nothing smaller is left to send, and
				// the buffer drops it (and logs it) rather than retry it
				// forever.
				if err == nil {
					err = fmt.Errorf("%d bytes in compact form", len(compact.Body))
				}
				return &RejectedError{Reason: ReasonTooLarge, Compact: true,
					Err: fmt.Errorf("event of %d bytes over the NATS max_payload of %d: %w", len(ev.Body), limit, err)}
			}
			counter.WithLabelValues(ev.Type).Inc()
			level.Warn(logger).Log("msg", "event larger than the NATS max_payload published with data truncated; raise max_payload to keep it whole",
				"event_type", ev.Type, "guild_id", ev.GuildID, "shard_id", ev.ShardID, "bytes", len(ev.Body), "compact_bytes", len(compact.Body), "max_payload", limit)
			// If JetStream refuses even this (a stream's max_msg_size), the
			// buffer must not try a compact form again.
			return next.Publish(ctx, compact, func(err error) { done(asCompact(err)) })
		})
	}
}

package publish

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/sony/gobreaker/v2"

	"github.com/shardpool/gateway/service/event"
)

// Logging logs publish failures: each at debug, and at most one warning per
// interval with the count, so an outage does not flood the log. Successful
// events are not logged.
func Logging(logger log.Logger, interval time.Duration) Middleware {
	var (
		mu       sync.Mutex
		last     time.Time
		failures int
	)
	fail := func(ev *event.Event, stage string, err error) {
		level.Debug(logger).Log("msg", "publish failed", "stage", stage, "event_type", ev.Type, "shard_id", ev.ShardID, "event_id", ev.ID, "err", err)
		mu.Lock()
		failures++
		now := time.Now()
		if now.Sub(last) < interval {
			mu.Unlock()
			return
		}
		n := failures
		failures, last = 0, now
		mu.Unlock()
		level.Warn(logger).Log("msg", "publishing to JetStream is failing; events are buffered and retried", "failures", n, "last_err", err)
	}
	return func(next Publisher) Publisher {
		return PublisherFunc(func(ctx context.Context, ev *event.Event, done Done) error {
			// An event refused for the message itself is not "failing and
			// retried": the buffer logs what becomes of it.
			err := next.Publish(ctx, ev, func(err error) {
				if err != nil && !IsRejected(err) {
					fail(ev, "ack", err)
				}
				done(err)
			})
			// Refusals by an open breaker are expected; the breaker logs its
			// own transitions.
			refused := errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) || IsRejected(err)
			if err != nil && ctx.Err() == nil && !refused {
				fail(ev, "publish", err)
			}
			return err
		})
	}
}

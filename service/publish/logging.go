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
	var calls sync.Pool
	calls.New = func() any {
		c := &loggedCall{fail: fail, pool: &calls}
		c.acked = c.ack
		return c
	}
	return func(next Publisher) Publisher {
		return PublisherFunc(func(ctx context.Context, ev *event.Event, done Done) error {
			c := calls.Get().(*loggedCall)
			c.ev, c.done = ev, done
			err := next.Publish(ctx, ev, c.acked)
			if err == nil {
				return nil
			}
			c.ev, c.done = nil, nil
			calls.Put(c) // not accepted: its done will not be called
			// Refusals by an open breaker are expected; the breaker logs its
			// own transitions. An event refused for the message itself is
			// not "failing and retried": the buffer logs what becomes of it.
			refused := errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) || IsRejected(err)
			if ctx.Err() == nil && !refused {
				fail(ev, "publish", err)
			}
			return err
		})
	}
}

// loggedCall is an event in flight through Logging: its done, wrapped.
// Calls are reused, with acked bound once, so that an event costs no
// closure.
type loggedCall struct {
	ev    *event.Event
	done  Done
	acked Done // ack
	fail  func(ev *event.Event, stage string, err error)
	pool  *sync.Pool
}

func (c *loggedCall) ack(err error) {
	ev, done, fail := c.ev, c.done, c.fail
	c.ev, c.done = nil, nil
	c.pool.Put(c)
	if err != nil && !IsRejected(err) {
		fail(ev, "ack", err)
	}
	done(err)
}

// Package publish is the publish path: the Publisher interface the shard pool
// calls for every routed event, and the middlewares layered around the
// JetStream implementation (logging, instrumenting, circuit breaker with an
// in-order buffer).
package publish

import (
	"context"

	"github.com/shardpool/gateway/service/event"
)

// Done is called exactly once per accepted event, when the broker acked it
// (err == nil) or when the event can no longer be delivered by this process
// (shutdown before an ack). It may be called from any goroutine and must not
// block.
//
// err == nil means "the shard's resume point may pass this event". That is
// also what an event the broker refuses for the message itself gets once
// the Buffer has dropped it (counted in gateway_events_dropped_total and
// logged at error): replaying it could never get it stored, and holding the
// resume point before it would stall its shard.
type Done func(err error)

// Publisher hands events to the message broker.
//
// Publish returns once the event is accepted for delivery (in flight or
// buffered); it may block to apply backpressure, until ctx ends. A non-nil
// error means the event was not accepted and done will not be called.
// Delivery is at-least-once: a failed or timed-out ack is retried by the
// layer that owns the retry (see Buffer), never silently dropped. The one
// exception is an event refused for the message itself (*RejectedError):
// see Done.
type Publisher interface {
	Publish(ctx context.Context, ev *event.Event, done Done) error
}

// PublisherFunc adapts a function to the Publisher interface.
type PublisherFunc func(ctx context.Context, ev *event.Event, done Done) error

// Publish implements Publisher.
func (f PublisherFunc) Publish(ctx context.Context, ev *event.Event, done Done) error {
	return f(ctx, ev, done)
}

// Middleware decorates a Publisher.
type Middleware func(Publisher) Publisher

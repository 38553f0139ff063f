// Package jetstream is the NATS JetStream side of the publish path: the
// connection, the EVENTS and COMMANDS streams, and the Publisher that sends
// each event asynchronously and reports its ack.
package jetstream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shardpool/gateway/service/event"
	"github.com/shardpool/gateway/service/publish"
)

// ErrClosed is returned by Publish after Close, and passed to the done of
// every event still waiting for its ack when Close is called.
var ErrClosed = errors.New("jetstream: publisher closed")

// Defaults of the publisher options.
const (
	// DefaultMaxPending bounds the events in flight (published, not yet
	// acked). At ~1 KiB an event that is ~4 MiB, and far more than one
	// round trip's worth of events at any realistic Discord event rate.
	DefaultMaxPending = 4096
	// DefaultAckTimeout is how long an event may wait for its ack. A lost
	// ack must surface as an error so the layer above retries it; the
	// duplicate window (2 min) is much longer, so the retry is deduplicated
	// if the first copy was stored after all.
	DefaultAckTimeout = 5 * time.Second
)

// Option configures a Publisher.
type Option func(*options)

type options struct {
	maxPending int
	ackTimeout time.Duration
}

// WithMaxPending sets how many events may be in flight at once; Publish
// blocks while that many are (values below 1 mean DefaultMaxPending).
func WithMaxPending(n int) Option {
	return func(o *options) {
		if n >= 1 {
			o.maxPending = n
		}
	}
}

// WithAckTimeout sets how long an event may wait for its ack before its
// done gets an error (values of 0 or less mean DefaultAckTimeout).
func WithAckTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.ackTimeout = d
		}
	}
}

// Publisher publishes events to JetStream asynchronously: Publish returns
// once the message is written to the connection, and done is called when
// the ack (or the failure) arrives.
//
// There is no goroutine per event: the JetStream client calls back on its
// ack handler, its error handler (failed ack, ack timeout, disconnect) or
// not at all when Publish itself fails, and a map from message to done,
// guarded by a mutex, resolves each event exactly once whichever comes
// first. Those callbacks run on the client's ack-processing goroutine, some
// with its internal lock held, which is why done must not block, nor call
// Publish.
type Publisher struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	logger log.Logger
	// slots holds one token per event in flight; a full channel is the
	// backpressure, and waiting on it honours ctx, which the client's own
	// stall (a fixed 200 ms, then an error) would not.
	slots chan struct{}

	mu      sync.Mutex
	pending map[*nats.Msg]publish.Done // events whose done is still to call
	// inFlight counts the accepted events whose done has not returned yet:
	// those pending plus those whose done is running, so that Flush
	// returns only after the last done has.
	inFlight int
	idle     chan struct{} // closed when inFlight drops to 0; nil if nobody waits
	closed   bool
	quit     chan struct{} // closed by Close, to release Publish calls waiting for a slot
	// publishing counts the Publish calls between registering an event
	// and handing it to the client; Close waits for them so that no
	// publish reaches the client after its cleanup (which would resubscribe
	// the ack subject of a closed publisher).
	publishing sync.WaitGroup
}

var _ publish.Publisher = (*Publisher)(nil)

// NewPublisher returns a Publisher over nc. It creates its own JetStream
// context because the ack and error handlers it relies on can only be set
// when the context is created.
func NewPublisher(nc *nats.Conn, logger log.Logger, opts ...Option) (*Publisher, error) {
	o := options{maxPending: DefaultMaxPending, ackTimeout: DefaultAckTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	p := &Publisher{
		nc:      nc,
		logger:  logger,
		slots:   make(chan struct{}, o.maxPending),
		pending: make(map[*nats.Msg]publish.Done, o.maxPending),
		quit:    make(chan struct{}),
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, _ *jetstream.PubAck) {
			// A duplicate (PubAck.Duplicate) is a success too: the stream
			// already holds the event.
			p.resolve(m, nil)
		}),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			if errors.Is(err, jetstream.ErrJetStreamPublisherClosed) {
				err = ErrClosed // our Close, through CleanupPublisher
			}
			p.resolve(m, err)
		}),
		// The client's cap is never reached, since slots admits no more
		// events than this and the client forgets an event before calling
		// back; it is set so the two limits cannot drift apart.
		jetstream.WithPublishAsyncMaxPending(o.maxPending),
		jetstream.WithPublishAsyncTimeout(o.ackTimeout),
	)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	p.js = js
	return p, nil
}

// Publish sends ev to ev.Subject with the header Nats-Msg-Id: ev.ID, so the
// stream drops a copy it already holds. It blocks while the maximum number
// of events is in flight, until ctx ends. An error means the event was not
// accepted (not connected, closed, ctx ended) and done will not be called.
func (p *Publisher) Publish(ctx context.Context, ev *event.Event, done publish.Done) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-p.quit:
		return ErrClosed
	}
	m := &nats.Msg{
		Subject: ev.Subject,
		Data:    ev.Body,
		Header:  nats.Header{jetstream.MsgIDHeader: []string{ev.ID}},
	}
	// Registered before the publish: the ack can arrive before
	// PublishMsgAsync returns.
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.slots
		return ErrClosed
	}
	p.pending[m] = done
	p.inFlight++
	p.publishing.Add(1)
	p.mu.Unlock()

	_, err := p.js.PublishMsgAsync(m)
	p.publishing.Done()
	if err != nil {
		if p.take(m) == nil {
			// The client failed the message through the error handler
			// (a disconnect racing with the publish), which has called
			// done: the event was accepted and resolved.
			return nil
		}
		p.finish()
		return fmt.Errorf("jetstream: publish %s: %w", ev.Subject, err)
	}
	return nil
}

// resolve calls the done of m, if m is still pending.
func (p *Publisher) resolve(m *nats.Msg, err error) {
	if done := p.take(m); done != nil {
		done(err)
		p.finish()
	}
}

// take removes m from the pending events; it returns nil if m was already
// taken, which makes resolution exactly-once. The caller calls finish once
// it is through with the event.
func (p *Publisher) take(m *nats.Msg) publish.Done {
	p.mu.Lock()
	defer p.mu.Unlock()
	done, ok := p.pending[m]
	if !ok {
		return nil
	}
	delete(p.pending, m)
	return done
}

// finish ends a taken event: it wakes Flush if it was the last one and frees
// its slot (last, so the limit counts an event until its done returned).
func (p *Publisher) finish() {
	p.mu.Lock()
	p.inFlight--
	if p.inFlight == 0 && p.idle != nil {
		close(p.idle)
		p.idle = nil
	}
	p.mu.Unlock()
	<-p.slots
}

// MaxPayload returns the largest message the connected server accepts
// (0 while not connected).
func (p *Publisher) MaxPayload() int64 { return p.nc.MaxPayload() }

// Pending returns the number of accepted events not resolved yet.
func (p *Publisher) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inFlight
}

// Flush waits until every event accepted so far has been resolved (acked or
// failed, and its done returned), or until ctx ends. Publish calls still
// waiting for a slot are not accepted yet and are not waited for: stop
// publishing before a drain's Flush.
func (p *Publisher) Flush(ctx context.Context) error {
	p.mu.Lock()
	if p.inFlight == 0 {
		p.mu.Unlock()
		return nil
	}
	if p.idle == nil {
		p.idle = make(chan struct{})
	}
	idle := p.idle
	p.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("jetstream: flush with %d events in flight: %w", p.Pending(), ctx.Err())
	}
}

// Close stops the publisher: later Publish calls, and those waiting for a
// slot, return ErrClosed, and every event still waiting for its ack gets
// done(ErrClosed), since this process can no longer learn its fate. Flush
// first to let in-flight acks arrive. Close does not close the connection.
func (p *Publisher) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.quit)
	inFlight := p.inFlight
	p.mu.Unlock()
	if inFlight > 0 {
		level.Warn(p.logger).Log("msg", "publisher closed with events in flight; failing them", "events", inFlight)
	}

	p.publishing.Wait()
	// Unsubscribes the reply subject and fails the client's pending
	// publishes through the error handler, which resolves them.
	p.js.CleanupPublisher()

	// Nothing should be left; should the client have dropped an event
	// without a callback, it is failed here rather than never resolved.
	p.mu.Lock()
	left := p.pending
	p.pending = make(map[*nats.Msg]publish.Done)
	p.mu.Unlock()
	for _, done := range left {
		done(ErrClosed)
		p.finish()
	}
}

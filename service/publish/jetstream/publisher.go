// Package jetstream is the NATS JetStream side of the publish path: the
// connection, the EVENTS and COMMANDS streams, and the Publisher that sends
// each event asynchronously and reports its ack.
package jetstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

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
// It speaks JetStream's publish protocol itself rather than through
// nats.go's PublishMsgAsync, which costs a timer, a future and an
// encoding/json decode per event: each message carries a reply subject
// under one inbox subscription, the ack is recognised without decoding it
// (only an error ack is decoded), and one sweeper goroutine fails events
// whose ack is late or whose connection dropped. There is no goroutine per
// event. A map from reply id to done, guarded by a mutex, resolves each
// event exactly once whichever comes first; done runs on the subscription's
// or the sweeper's goroutine and must not block.
type Publisher struct {
	nc         *nats.Conn
	logger     log.Logger
	ackTimeout time.Duration
	inbox      string // reply subject prefix, ending in '.'
	sub        *nats.Subscription
	nextID     atomic.Uint64
	// slots holds one token per event in flight; a full channel is the
	// backpressure, and waiting on it honours ctx.
	slots chan struct{}

	wmu   sync.Mutex // the message being sent, reused (see send)
	msg   nats.Msg
	msgID []string // msg.Header's Nats-Msg-Id
	reply []byte

	mu      sync.Mutex
	pending map[uint64]publish.Done // events whose done is still to call
	order   []pendingDeadline       // ids in publish order, for the sweeper
	// inFlight counts the accepted events whose done has not returned yet:
	// those pending plus those whose done is running, so that Flush
	// returns only after the last done has.
	inFlight int
	idle     chan struct{} // closed when inFlight drops to 0; nil if nobody waits
	closed   bool
	quit     chan struct{} // closed by Close
	swept    chan struct{} // closed when the sweeper has stopped
}

type pendingDeadline struct {
	id       uint64
	deadline time.Time
}

var _ publish.Publisher = (*Publisher)(nil)

// NewPublisher returns a Publisher over nc.
func NewPublisher(nc *nats.Conn, logger log.Logger, opts ...Option) (*Publisher, error) {
	o := options{maxPending: DefaultMaxPending, ackTimeout: DefaultAckTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	p := &Publisher{
		nc:         nc,
		logger:     logger,
		ackTimeout: o.ackTimeout,
		inbox:      nats.NewInbox() + ".",
		slots:      make(chan struct{}, o.maxPending),
		pending:    make(map[uint64]publish.Done, o.maxPending),
		quit:       make(chan struct{}),
		swept:      make(chan struct{}),
	}
	sub, err := nc.Subscribe(p.inbox+"*", p.onAck)
	if err != nil {
		return nil, fmt.Errorf("jetstream: subscribe to acks: %w", err)
	}
	// Acks must never be dropped as a slow consumer: their number is
	// bounded by maxPending anyway.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		sub.Unsubscribe()
		return nil, fmt.Errorf("jetstream: ack subscription: %w", err)
	}
	p.sub = sub
	go p.sweep()
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
	if !p.nc.IsConnected() {
		// The client would buffer nothing (reconnect buffer off) and fail;
		// say why plainly and keep the slot free.
		return fmt.Errorf("jetstream: publish %s: %w", ev.Subject, nats.ErrDisconnected)
	}
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-p.quit:
		return ErrClosed
	}
	id := p.nextID.Add(1)
	// Registered before the publish: the ack can arrive before PublishMsg
	// returns.
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.slots
		return ErrClosed
	}
	p.pending[id] = done
	p.order = append(p.order, pendingDeadline{id: id, deadline: time.Now().Add(p.ackTimeout)})
	p.inFlight++
	p.mu.Unlock()

	if err := p.send(ev, id); err != nil {
		if _, ok := p.take(id); !ok {
			// Resolved meanwhile (the sweeper saw the disconnect): the
			// event was accepted and its done called.
			return nil
		}
		p.finish()
		err = fmt.Errorf("jetstream: publish %s: %w", ev.Subject, err)
		if errors.Is(err, nats.ErrMaxPayload) {
			// The client checks the server's max_payload itself; the
			// same message would be refused again.
			return &publish.RejectedError{Reason: publish.ReasonTooLarge, Err: err}
		}
		return err
	}
	return nil
}

// send writes ev to the connection with the reply subject of id. The
// message, its header and its reply subject are the publisher's own, reused
// under wmu: PublishMsg copies them into the connection's buffer and keeps
// nothing, so an event costs no allocation of ours (nats.go still makes
// one, for the header's bytes).
func (p *Publisher) send(ev *event.Event, id uint64) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if p.msg.Header == nil {
		p.msgID = []string{""}
		p.msg.Header = nats.Header{jetstream.MsgIDHeader: p.msgID}
	}
	p.reply = strconv.AppendUint(append(p.reply[:0], p.inbox...), id, 10)
	p.msg.Subject, p.msg.Data, p.msgID[0] = ev.Subject, ev.Body, ev.ID
	// Valid until the next send, which is after PublishMsg has copied it.
	p.msg.Reply = unsafe.String(unsafe.SliceData(p.reply), len(p.reply))
	err := p.nc.PublishMsg(&p.msg)
	p.msg.Data, p.msgID[0], p.msg.Reply = nil, "", "" // let go of the event
	return err
}

var errorKey = []byte(`"error"`)

// onAck resolves the event an ack (or error) answers.
func (p *Publisher) onAck(m *nats.Msg) {
	i := strings.LastIndexByte(m.Subject, '.')
	id, err := strconv.ParseUint(m.Subject[i+1:], 10, 64)
	if err != nil {
		return
	}
	p.resolve(id, ackError(m))
}

// ackError reads a JetStream publish reply: nil for a PubAck (a duplicate is
// a success too: the stream already holds the event), else the error; a
// *publish.RejectedError when JetStream refused the message itself (see
// messageRefusals).
func ackError(m *nats.Msg) error {
	if len(m.Data) == 0 {
		if m.Header.Get("Status") == "503" {
			return jetstream.ErrNoStreamResponse
		}
		return errors.New("jetstream: empty publish reply")
	}
	if !bytes.Contains(m.Data, errorKey) {
		return nil
	}
	var reply struct {
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &reply); err != nil {
		return fmt.Errorf("jetstream: bad publish reply: %w", err)
	}
	if reply.Error == nil {
		return nil
	}
	err := fmt.Errorf("jetstream: publish refused: %s (code %d, err_code %d)", reply.Error.Description, reply.Error.Code, reply.Error.ErrCode)
	if reason, ok := refusalReason(reply.Error.ErrCode, reply.Error.Description); ok {
		return &publish.RejectedError{Reason: reason, Err: err}
	}
	return err
}

// sweep fails events whose ack is late, and every pending event when the
// connection drops (their acks will not come on the new connection).
func (p *Publisher) sweep() {
	defer close(p.swept)
	tick := time.NewTicker(max(min(p.ackTimeout/5, 100*time.Millisecond), 5*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-p.quit:
			return
		case <-tick.C:
		}
		if !p.nc.IsConnected() {
			p.failAll(nats.ErrDisconnected)
			continue
		}
		now := time.Now()
		for {
			p.mu.Lock()
			if len(p.order) == 0 || p.order[0].deadline.After(now) {
				p.mu.Unlock()
				break
			}
			id := p.order[0].id
			p.order = p.order[1:]
			if len(p.order) == 0 {
				p.order = nil // let the backing array go
			}
			p.mu.Unlock()
			p.resolve(id, jetstream.ErrAsyncPublishTimeout)
		}
	}
}

func (p *Publisher) failAll(err error) {
	p.mu.Lock()
	ids := make([]uint64, 0, len(p.pending))
	for id := range p.pending {
		ids = append(ids, id)
	}
	p.order = nil
	p.mu.Unlock()
	for _, id := range ids {
		p.resolve(id, err)
	}
}

// resolve calls the done of id, if id is still pending.
func (p *Publisher) resolve(id uint64, err error) {
	if done, ok := p.take(id); ok {
		done(err)
		p.finish()
	}
}

// take removes id from the pending events; ok is false if it was already
// taken, which makes resolution exactly-once. The caller calls finish once
// it is through with the event.
func (p *Publisher) take(id uint64) (publish.Done, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	done, ok := p.pending[id]
	if !ok {
		return nil, false
	}
	delete(p.pending, id)
	return done, true
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
	<-p.swept
	p.sub.Unsubscribe()
	p.failAll(ErrClosed)
}

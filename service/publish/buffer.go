package publish

import (
	"container/heap"
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardpool/gateway/service/event"
)

// ErrClosed is passed to done for events still buffered when the buffer is
// closed: they were never acked, so their shard's resume point never passed
// them and a successor's RESUME replays them.
var ErrClosed = errors.New("publish buffer closed before the event was acked")

// BufferConfig bounds a Buffer. An event counts against the bounds from the
// moment it is accepted until its ack, so in-flight events are included.
type BufferConfig struct {
	MaxEvents int
	MaxBytes  int64
	// RetryWait is the pause after the next layer refused an event (breaker
	// open, NATS disconnected) before it is offered again, and the first
	// pause after a failed ack.
	RetryWait time.Duration
	// MaxRetryWait caps the pause after failed acks, which doubles while
	// the acks keep failing (default 2 s).
	MaxRetryWait time.Duration
	Metrics      *BufferMetrics
	// Logger logs the events dropped (error) or truncated (warn) because
	// the broker refused them for the message itself.
	Logger log.Logger
}

// BufferMetrics are the buffer's gauges, backpressure and drop counters.
type BufferMetrics struct {
	Events       prometheus.Gauge
	Bytes        prometheus.Gauge
	Backpressure *prometheus.CounterVec // shard_id
	Dropped      *prometheus.CounterVec // shard_id, reason
}

// NewBufferMetrics creates and registers the buffer metrics.
func NewBufferMetrics(reg prometheus.Registerer) *BufferMetrics {
	m := &BufferMetrics{
		Events: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_publish_buffer_events",
			Help: "Events accepted for publishing and not yet acked by JetStream (queued, in flight or awaiting retry).",
		}),
		Bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_publish_buffer_bytes",
			Help: "Bytes of the events counted in gateway_publish_buffer_events.",
		}),
		Backpressure: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_backpressure_seconds_total",
			Help: "Time a shard spent paused (not reading its socket) because the publish buffer was full.",
		}, []string{"shard_id"}),
		Dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_events_dropped_total",
			Help: "Events dropped because JetStream refused them for the message itself, whole and then in compact form (reason: too_large, refused); their shard's resume point moved past them.",
		}, []string{"shard_id", "reason"}),
	}
	reg.MustRegister(m.Events, m.Bytes, m.Backpressure, m.Dropped)
	return m
}

// Buffer is the head of the publish path: a bounded, in-order buffer that
// feeds the next Publisher from one goroutine, retries every failed or
// refused event in its original order, and blocks its callers when full so
// that shards stop reading their sockets instead of dropping events.
//
// The one exception is an event the broker refuses for the message itself
// (a *RejectedError): it is published once more in compact form, and if
// that is refused too it is dropped, counted and logged, and its done gets
// nil so that its shard's resume point moves past it. Retried as it is, it
// would be refused forever and hold back its shard and the drain.
type Buffer struct {
	next   Publisher
	cfg    BufferConfig
	logger log.Logger

	mu     sync.Mutex
	queue  []*item // FIFO; queue[head:] is live
	head   int
	retry  itemHeap // failed events, oldest ticket first
	events int
	bytes  int64
	ticket uint64
	// attempts counts the events taken to be sent, so that an attempt's
	// number tells whether it was made before a pause began (the clock
	// is not read per event for it).
	attempts uint64
	pause    pause         // spaces out retries after failed acks
	shards   map[int]bool  // shards whose drop series exist
	free     []*item       // items to reuse (see recycle)
	wake     chan struct{} // sender wake-up, cap 1
	space    chan struct{} // closed when room frees up; nil while nobody waits
	idle     chan struct{} // closed when events drops to 0; nil while nobody waits
	closed   bool
	stop     context.CancelFunc
	stopped  chan struct{}
}

type item struct {
	ticket  uint64
	ev      *event.Event
	done    Done
	size    int64  // of the event as accepted; ev may be compacted later
	compact bool   // ev is the compact form of the event accepted
	attempt uint64 // the number of its latest attempt (see Buffer.attempts)
	settle  Done   // b.settle of this item, bound once: items are reused
}

// maxFree bounds the items kept for reuse: enough for the events in flight
// at any normal rate, not the whole of a buffer that filled in an outage.
const maxFree = 4096

// NewBuffer starts a buffer in front of next. Close stops it.
func NewBuffer(next Publisher, cfg BufferConfig) *Buffer {
	if cfg.RetryWait <= 0 {
		cfg.RetryWait = 100 * time.Millisecond
	}
	if cfg.MaxRetryWait <= 0 {
		cfg.MaxRetryWait = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = log.NewNopLogger()
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Buffer{
		next: next, cfg: cfg, logger: cfg.Logger,
		pause:   pause{min: cfg.RetryWait, max: max(cfg.MaxRetryWait, cfg.RetryWait)},
		wake:    make(chan struct{}, 1),
		stop:    cancel,
		stopped: make(chan struct{}),
	}
	go b.send(ctx)
	return b
}

// Publish implements Publisher. It blocks while the buffer is full (an event
// larger than the whole buffer is still admitted when the buffer is empty).
func (b *Buffer) Publish(ctx context.Context, ev *event.Event, done Done) error {
	size := int64(ev.Size())
	b.mu.Lock()
	for !b.closed && b.events > 0 && !b.fits(size) {
		if b.space == nil {
			b.space = make(chan struct{})
		}
		space := b.space
		b.mu.Unlock()
		start := time.Now()
		select {
		case <-space:
		case <-ctx.Done():
		}
		if m := b.cfg.Metrics; m != nil {
			m.Backpressure.WithLabelValues(strconv.Itoa(ev.ShardID)).Add(time.Since(start).Seconds())
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		b.mu.Lock()
	}
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	if !b.shards[ev.ShardID] {
		b.newShard(ev.ShardID)
	}
	b.ticket++
	it := b.newItem()
	it.ticket, it.ev, it.done, it.size = b.ticket, ev, done, size
	b.queue = append(b.queue, it)
	b.events++
	b.bytes += size
	b.gauges()
	b.mu.Unlock()
	b.signal()
	return nil
}

// newItem returns an unused item; b.mu is held.
func (b *Buffer) newItem() *item {
	if n := len(b.free); n > 0 {
		it := b.free[n-1]
		b.free[n-1] = nil
		b.free = b.free[:n-1]
		return it
	}
	it := &item{}
	it.settle = func(err error) { b.settle(it, err) }
	return it
}

// newShard creates the shard's drop series at 0, so that the first drop is
// an increase that rate() and increase() see, not a series appearing.
func (b *Buffer) newShard(shard int) {
	if b.shards == nil {
		b.shards = map[int]bool{}
	}
	b.shards[shard] = true
	if m := b.cfg.Metrics; m != nil {
		for _, reason := range []string{ReasonTooLarge, ReasonRefused} {
			m.Dropped.WithLabelValues(strconv.Itoa(shard), reason)
		}
	}
}

func (b *Buffer) fits(size int64) bool {
	if b.cfg.MaxEvents > 0 && b.events+1 > b.cfg.MaxEvents {
		return false
	}
	if b.cfg.MaxBytes > 0 && b.bytes+size > b.cfg.MaxBytes {
		return false
	}
	return true
}

func (b *Buffer) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// take returns the oldest event waiting to be (re)sent, or nil.
func (b *Buffer) take() *item {
	b.mu.Lock()
	defer b.mu.Unlock()
	var q *item
	if b.head < len(b.queue) {
		q = b.queue[b.head]
	}
	if len(b.retry) > 0 && (q == nil || b.retry[0].ticket < q.ticket) {
		it := heap.Pop(&b.retry).(*item)
		b.attempts++
		it.attempt = b.attempts
		return it
	}
	if q == nil {
		return nil
	}
	b.attempts++
	q.attempt = b.attempts
	b.queue[b.head] = nil
	b.head++
	if b.head == len(b.queue) {
		b.queue, b.head = b.queue[:0], 0
	} else if b.head > 1024 && b.head > len(b.queue)/2 {
		n := copy(b.queue, b.queue[b.head:])
		// The slots past the new length still point at items (and their
		// bodies): clear them, or a burst stays in memory.
		clear(b.queue[n:])
		b.queue, b.head = b.queue[:n], 0
	}
	return q
}

func (b *Buffer) send(ctx context.Context) {
	defer close(b.stopped)
	for {
		if !b.waitPause(ctx) {
			return
		}
		it := b.take()
		if it == nil {
			select {
			case <-ctx.Done():
				return
			case <-b.wake:
				continue
			}
		}
		err := b.next.Publish(ctx, it.ev, it.settle)
		if err == nil {
			continue
		}
		if rej, ok := asRejected(err); ok {
			b.reject(it, rej)
			continue
		}
		// Refused (breaker open, not connected): keep its place and wait.
		b.requeue(it)
		t := time.NewTimer(b.cfg.RetryWait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (b *Buffer) requeue(it *item) {
	b.mu.Lock()
	heap.Push(&b.retry, it)
	b.mu.Unlock()
	b.signal()
}

// settle is the ack callback of the next layer.
func (b *Buffer) settle(it *item, err error) {
	if err == nil {
		done := it.done
		b.finish(it, true)
		done(nil)
		return
	}
	if rej, ok := asRejected(err); ok {
		b.reject(it, rej)
		return
	}
	// Not connected any more, a timeout, an election, storage full: the
	// event is fine, the broker is not; try again after a pause.
	b.retryAfterPause(it)
}

// retryAfterPause puts a failed event back in line and makes the sender
// pause before the next attempt.
func (b *Buffer) retryAfterPause(it *item) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		b.release(it)
		it.done(ErrClosed)
		return
	}
	b.pause.failed(it.attempt, b.attempts, time.Now())
	heap.Push(&b.retry, it)
	b.mu.Unlock()
	b.signal()
}

// reject handles an event the broker refused for the message itself: the
// compact form is tried once, in the event's turn and without a pause
// (the broker is fine); after that, or if there is no compact form, the
// event is dropped.
func (b *Buffer) reject(it *item, rej *RejectedError) {
	if !it.compact && !rej.Compact {
		if c, err := event.Compact(it.ev); err == nil {
			level.Warn(b.logger).Log("msg", "JetStream refuses the event; publishing it once more with data truncated",
				"event_id", it.ev.ID, "event_type", it.ev.Type, "shard_id", it.ev.ShardID, "seq", it.ev.Seq,
				"reason", rej.Reason, "bytes", len(it.ev.Body), "compact_bytes", len(c.Body), "err", rej.Err)
			b.mu.Lock()
			closed := b.closed
			if !closed {
				it.ev, it.compact = c, true
				heap.Push(&b.retry, it)
			}
			b.mu.Unlock()
			if closed {
				b.release(it)
				it.done(ErrClosed)
				return
			}
			b.signal()
			return
		}
	}
	b.drop(it, rej)
}

// drop gives up on an event no form of which the broker takes. Its done
// gets nil: to the shard that means its resume point may pass the event,
// and nothing else would ever let it pass; the counter and the log line
// are the record that it was not stored.
func (b *Buffer) drop(it *item, rej *RejectedError) {
	if m := b.cfg.Metrics; m != nil {
		m.Dropped.WithLabelValues(strconv.Itoa(it.ev.ShardID), rej.Reason).Inc()
	}
	level.Error(b.logger).Log("msg", "event dropped: JetStream refuses it whole and in compact form; its shard's resume point moves past it",
		"event_id", it.ev.ID, "event_type", it.ev.Type, "shard_id", it.ev.ShardID, "seq", it.ev.Seq,
		"guild_id", it.ev.GuildID, "reason", rej.Reason, "bytes", len(it.ev.Body), "err", rej.Err)
	done := it.done
	b.finish(it, false)
	done(nil)
}

// waitPause waits out the pause after failed acks, if any; false when ctx
// ended first.
func (b *Buffer) waitPause(ctx context.Context) bool {
	for {
		b.mu.Lock()
		if b.pause.until.IsZero() { // no pause: the common case, without the clock
			b.mu.Unlock()
			return true
		}
		left := time.Until(b.pause.until)
		b.mu.Unlock()
		if left <= 0 {
			return true
		}
		t := time.NewTimer(left)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C: // the pause may have grown meanwhile: look again
		}
	}
}

func (b *Buffer) release(it *item) {
	b.mu.Lock()
	b.released(it)
	b.mu.Unlock()
}

// finish releases an item whose done is due with nil, and takes it back
// for reuse: the next layer has called its settle, its one reference left.
// acked ends a pause after failed acks. The caller calls done (saved
// first) afterwards.
func (b *Buffer) finish(it *item, acked bool) {
	b.mu.Lock()
	if acked {
		b.pause.succeeded()
	}
	b.released(it)
	if len(b.free) < maxFree {
		*it = item{settle: it.settle}
		b.free = append(b.free, it)
	}
	b.mu.Unlock()
}

// released takes it out of the counts and wakes who waits for room or for
// the buffer to empty; b.mu is held.
func (b *Buffer) released(it *item) {
	b.events--
	b.bytes -= it.size
	b.gauges()
	if b.space != nil {
		close(b.space)
		b.space = nil
	}
	if b.events == 0 && b.idle != nil {
		close(b.idle)
		b.idle = nil
	}
}

func (b *Buffer) gauges() {
	if m := b.cfg.Metrics; m != nil {
		m.Events.Set(float64(b.events))
		m.Bytes.Set(float64(b.bytes))
	}
}

// Len returns the number of buffered (unacked) events and their bytes.
func (b *Buffer) Len() (events int, bytes int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.events, b.bytes
}

// Flush waits until every accepted event has been acked, or ctx ends.
func (b *Buffer) Flush(ctx context.Context) error {
	for {
		b.mu.Lock()
		if b.events == 0 {
			b.mu.Unlock()
			return nil
		}
		if b.idle == nil {
			b.idle = make(chan struct{})
		}
		idle := b.idle
		b.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			n, _ := b.Len()
			return errors.Join(ctx.Err(), errors.New(strconv.Itoa(n)+" events still unacked"))
		}
	}
}

// Close stops sending. Events not yet handed on get done(ErrClosed); events
// in flight are settled by the next layer.
func (b *Buffer) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	b.mu.Unlock()
	b.stop()
	<-b.stopped
	b.mu.Lock()
	var left []*item
	left = append(left, b.queue[b.head:]...)
	left = append(left, b.retry...)
	b.queue, b.head, b.retry = nil, 0, nil
	if b.space != nil {
		close(b.space)
		b.space = nil
	}
	b.mu.Unlock()
	for _, it := range left {
		b.release(it)
		it.done(ErrClosed)
	}
}

// pause spaces out the attempts after failed acks, so that a broker that
// answers every publish with an error (storage full) is not asked again in
// a hot loop: the first failure pauses the sender for min, each failure of
// an attempt made after that pause began doubles it up to max, and an ack
// ends it. Failures of attempts made before the pause began (the rest of
// the same burst, such as every event in flight when the connection
// dropped) do not lengthen it.
type pause struct {
	min, max time.Duration
	wait     time.Duration // of the current pause; 0 after an ack
	before   uint64        // the last attempt made before the current pause began
	until    time.Time     // no attempt before
}

// failed records the failure of attempt number attempt, at now, when
// attempts had been made in all.
func (p *pause) failed(attempt, attempts uint64, now time.Time) {
	if p.wait > 0 && attempt <= p.before {
		return
	}
	p.wait = min(max(p.wait*2, p.min), p.max)
	p.before, p.until = attempts, now.Add(p.wait)
}

func (p *pause) succeeded() {
	p.wait, p.until = 0, time.Time{}
}

type itemHeap []*item

func (h itemHeap) Len() int           { return len(h) }
func (h itemHeap) Less(i, j int) bool { return h[i].ticket < h[j].ticket }
func (h itemHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *itemHeap) Push(x any)        { *h = append(*h, x.(*item)) }
func (h *itemHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return it
}

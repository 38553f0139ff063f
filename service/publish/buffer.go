package publish

import (
	"container/heap"
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

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
	// open, NATS disconnected) before it is offered again.
	RetryWait time.Duration
	Metrics   *BufferMetrics
}

// BufferMetrics are the buffer's gauges and backpressure counter.
type BufferMetrics struct {
	Events       prometheus.Gauge
	Bytes        prometheus.Gauge
	Backpressure *prometheus.CounterVec // shard_id
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
	}
	reg.MustRegister(m.Events, m.Bytes, m.Backpressure)
	return m
}

// Buffer is the head of the publish path: a bounded, in-order buffer that
// feeds the next Publisher from one goroutine, retries every failed or
// refused event in its original order, and blocks its callers when full so
// that shards stop reading their sockets instead of dropping events.
type Buffer struct {
	next Publisher
	cfg  BufferConfig

	mu      sync.Mutex
	queue   []*item // FIFO; queue[head:] is live
	head    int
	retry   itemHeap // failed events, oldest ticket first
	events  int
	bytes   int64
	ticket  uint64
	wake    chan struct{} // sender wake-up, cap 1
	space   chan struct{} // closed and replaced whenever room frees up
	idle    chan struct{} // closed and replaced whenever events drops to 0
	closed  bool
	stop    context.CancelFunc
	stopped chan struct{}
}

type item struct {
	ticket uint64
	ev     *event.Event
	done   Done
	size   int64
}

// NewBuffer starts a buffer in front of next. Close stops it.
func NewBuffer(next Publisher, cfg BufferConfig) *Buffer {
	if cfg.RetryWait <= 0 {
		cfg.RetryWait = 100 * time.Millisecond
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Buffer{
		next: next, cfg: cfg,
		wake:    make(chan struct{}, 1),
		space:   make(chan struct{}),
		idle:    make(chan struct{}),
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
	b.ticket++
	b.queue = append(b.queue, &item{ticket: b.ticket, ev: ev, done: done, size: size})
	b.events++
	b.bytes += size
	b.gauges()
	b.mu.Unlock()
	b.signal()
	return nil
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
		return heap.Pop(&b.retry).(*item)
	}
	if q == nil {
		return nil
	}
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
		it := b.take()
		if it == nil {
			select {
			case <-ctx.Done():
				return
			case <-b.wake:
				continue
			}
		}
		err := b.next.Publish(ctx, it.ev, func(err error) { b.settle(it, err) })
		if err == nil {
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
	if err != nil {
		b.mu.Lock()
		closed := b.closed
		if !closed {
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
	b.release(it)
	it.done(nil)
}

func (b *Buffer) release(it *item) {
	b.mu.Lock()
	b.events--
	b.bytes -= it.size
	b.gauges()
	close(b.space)
	b.space = make(chan struct{})
	if b.events == 0 {
		close(b.idle)
		b.idle = make(chan struct{})
	}
	b.mu.Unlock()
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
	close(b.space)
	b.space = make(chan struct{})
	b.mu.Unlock()
	for _, it := range left {
		b.release(it)
		it.done(ErrClosed)
	}
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

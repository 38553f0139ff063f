package shard

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/diamondburned/arikawa/v3/utils/ws"
	"github.com/prometheus/client_golang/prometheus"
)

// heart keeps one connection alive: the first beat after interval×random(0..1)
// as Discord asks, then one per interval carrying the last sequence seen,
// an immediate beat when Discord sends op 1, and zombie detection: a beat
// that is due while the previous one is still unacknowledged means the
// connection is dead.
type heart struct {
	conn  *Conn
	seq   *atomic.Int64 // last sequence seen; 0 = none yet
	gauge prometheus.Gauge

	acked   atomic.Bool
	sentAt  atomic.Int64 // unix nanos of the last beat
	latency atomic.Int64 // nanos between the last beat and its ACK
	beatNow chan struct{}
	zombie  atomic.Bool
}

func newHeart(conn *Conn, seq *atomic.Int64, latency prometheus.Gauge) *heart {
	h := &heart{conn: conn, seq: seq, gauge: latency, beatNow: make(chan struct{}, 1)}
	h.acked.Store(true)
	return h
}

// control is the Conn's hook for op 1 and op 11, run on the read goroutine.
func (h *heart) control(op ws.OpCode, at time.Time) {
	switch op {
	case opHeartbeatAck:
		if sent := h.sentAt.Load(); sent != 0 {
			h.latency.Store(at.UnixNano() - sent)
			h.gauge.Set(time.Duration(at.UnixNano() - sent).Seconds())
		}
		h.acked.Store(true)
	case opHeartbeat:
		select {
		case h.beatNow <- struct{}{}:
		default:
		}
	}
}

// run beats until ctx ends or the connection turns out to be a zombie, in
// which case it closes the connection with a resumable code.
func (h *heart) run(ctx context.Context, interval time.Duration) {
	t := time.NewTimer(time.Duration(rand.Float64() * float64(interval)))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.beatNow:
			h.beat(ctx)
		case <-t.C:
			sent := time.Unix(0, h.sentAt.Load())
			if !h.acked.Load() && !h.conn.stalledSince(sent) {
				h.zombie.Store(true)
				h.conn.CloseWithCode(closeResumable, "heartbeat not acknowledged")
				return
			}
			h.beat(ctx)
			t.Reset(interval)
		}
	}
}

func (h *heart) beat(ctx context.Context) {
	b := make([]byte, 0, 32)
	b = append(b, `{"op":1,"d":`...)
	if s := h.seq.Load(); s > 0 {
		b = strconv.AppendInt(b, s, 10)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, '}')
	h.acked.Store(false)
	h.sentAt.Store(time.Now().UnixNano())
	// A failed send surfaces as a read error on the connection.
	_ = h.conn.SendHeartbeat(ctx, b)
}

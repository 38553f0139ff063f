package shard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/diamondburned/arikawa/v3/gateway"
	"github.com/diamondburned/arikawa/v3/utils/ws"
	"github.com/gorilla/websocket"

	"github.com/shardpool/gateway/service/event"
)

// Gateway opcodes (Discord's gateway docs).
const (
	opDispatch       ws.OpCode = 0
	opHeartbeat      ws.OpCode = 1
	opIdentify       ws.OpCode = 2
	opResume         ws.OpCode = 6
	opReconnect      ws.OpCode = 7
	opInvalidSession ws.OpCode = 9
	opHello          ws.OpCode = 10
	opHeartbeatAck   ws.OpCode = 11
)

// Dispatch is a gateway dispatch (op 0). Its event is built on the read
// goroutine, straight from the connection's read buffer, so decoding
// overlaps with publishing and `d` is copied once, into the message body,
// exactly as Discord sent it.
type Dispatch struct {
	Type       string
	Seq        int64
	ReceivedAt time.Time
	// Ready is the decoded READY (nil for other types, or when malformed).
	Ready *Ready
	// Event is the message to publish; nil when the type is not published.
	Event *event.Event
	// Err reports a d that could not be routed (malformed).
	Err error
}

// Op implements ws.Event.
func (*Dispatch) Op() ws.OpCode { return opDispatch }

// EventType implements ws.Event.
func (d *Dispatch) EventType() ws.EventType { return ws.EventType(d.Type) }

// MalformedFrame reports a frame that could not be decoded. It is not fatal
// for the connection unless the compression stream itself broke.
type MalformedFrame struct {
	Reason string // bounded label: "json" (undecodable frame), "payload" (bad d, unknown opcode)
	Err    error
}

// Op implements ws.Event.
func (*MalformedFrame) Op() ws.OpCode { return -1 }

// EventType implements ws.Event.
func (*MalformedFrame) EventType() ws.EventType { return "__shard.MalformedFrame" }

// Limits bound what one connection may allocate for a frame.
type Limits struct {
	MaxFrameBytes   int64 // largest websocket message accepted off the wire
	MaxMessageBytes int   // largest message after decompression
}

// DefaultLimits are generous for Discord's largest GUILD_CREATEs.
var DefaultLimits = Limits{MaxFrameBytes: 16 << 20, MaxMessageBytes: 64 << 20}

// Conn is one websocket connection to the Discord gateway. It implements
// arikawa's ws.Connection and adds what arikawa lacks: zlib-stream transport
// compression, closing with a chosen (resumable) code, a send limiter that
// keeps room for heartbeats, and heartbeat ACKs handled on the read
// goroutine so that a shard paused by backpressure keeps its heartbeat
// bookkeeping right.
type Conn struct {
	compression string
	limits      Limits
	dialer      websocket.Dialer

	// control is called on the read goroutine for op 1 and op 11.
	control func(op ws.OpCode, at time.Time)
	// wireBytes counts received message bytes before decompression.
	wireBytes interface{ Add(float64) }
	// prepare turns a dispatch's d (valid only during the call) into a
	// Dispatch, on the read goroutine.
	prepare Preparer

	wmu     sync.Mutex // one writer at a time (gorilla's rule)
	mu      sync.Mutex
	ws      *websocket.Conn
	limiter *sendLimiter
	closed  atomic.Bool

	// stalled is true while the read goroutine waits for the shard to take
	// an op; unstalledAt is when it last stopped waiting (unix nanos).
	stalled     atomic.Bool
	unstalledAt atomic.Int64
}

var _ ws.Connection = (*Conn)(nil)

// Preparer builds a Dispatch from a dispatch's type, seq and d; d is only
// valid during the call (it lies in the connection's reused read buffer).
type Preparer func(t string, seq int64, d []byte, at time.Time) *Dispatch

// NewConn returns an undialed connection. control handles op 1 and op 11 and
// prepare each dispatch, both on the read goroutine.
func NewConn(compression string, limits Limits, heartbeatReserve int, control func(ws.OpCode, time.Time), prepare Preparer) *Conn {
	return &Conn{
		compression: compression,
		limits:      limits,
		control:     control,
		prepare:     prepare,
		limiter:     newSendLimiter(120, time.Minute, heartbeatReserve),
		dialer: websocket.Dialer{
			Proxy:            http.ProxyFromEnvironment,
			HandshakeTimeout: 15 * time.Second,
			ReadBufferSize:   32 << 10,
			WriteBufferSize:  4 << 10,
		},
	}
}

// Dial implements ws.Connection. addr is the full gateway URL with query.
func (c *Conn) Dial(ctx context.Context, addr string) (<-chan ws.Op, error) {
	conn, resp, err := c.dialer.DialContext(ctx, addr, nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("dial gateway: %w", err)
	}
	conn.SetReadLimit(c.limits.MaxFrameBytes)
	c.mu.Lock()
	c.ws = conn
	c.mu.Unlock()
	ops := make(chan ws.Op, 64)
	go c.readLoop(conn, ops)
	return ops, nil
}

// Send implements ws.Connection for gateway commands other than heartbeats.
func (c *Conn) Send(ctx context.Context, b []byte) error {
	return c.send(ctx, b, false)
}

// SendHeartbeat sends a heartbeat; heartbeats may use the reserved part of
// the send budget.
func (c *Conn) SendHeartbeat(ctx context.Context, b []byte) error {
	return c.send(ctx, b, true)
}

func (c *Conn) send(ctx context.Context, b []byte, heartbeat bool) error {
	if err := c.limiter.wait(ctx, heartbeat); err != nil {
		return err
	}
	c.mu.Lock()
	conn := c.ws
	c.mu.Unlock()
	if conn == nil || c.closed.Load() {
		return ws.ErrWebsocketClosed
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if d, ok := ctx.Deadline(); ok {
		conn.SetWriteDeadline(d)
	} else {
		conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	}
	return conn.WriteMessage(websocket.TextMessage, b)
}

// Close implements ws.Connection. A graceful close sends 1000, which ends the
// Discord session; the shard never uses it (see CloseWithCode).
func (c *Conn) Close(gracefully bool) error {
	if gracefully {
		return c.CloseWithCode(websocket.CloseNormalClosure, "")
	}
	return c.CloseWithCode(0, "")
}

// CloseWithCode sends a close frame with code (none when code is 0) and
// closes the socket. Any code other than 1000/1001 keeps the session
// resumable.
func (c *Conn) CloseWithCode(code int, reason string) error {
	c.mu.Lock()
	conn := c.ws
	c.mu.Unlock()
	if conn == nil || !c.closed.CompareAndSwap(false, true) {
		return ws.ErrWebsocketClosed
	}
	if code != 0 {
		// WriteControl may run concurrently with a writer.
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	}
	return conn.Close()
}

// stalledSince reports whether reads were paused by the consumer at any time
// since t (then a missing ACK may simply be unread).
func (c *Conn) stalledSince(t time.Time) bool {
	return c.stalled.Load() || c.unstalledAt.Load() >= t.UnixNano()
}

func (c *Conn) readLoop(conn *websocket.Conn, ops chan<- ws.Op) {
	defer close(ops)
	var (
		z   decompressor
		buf []byte
	)
	switch c.compression {
	case CompressionZlibStream:
		z = newInflater(c.limits.MaxMessageBytes)
	case CompressionZstdStream:
		z = newZstdInflater(c.limits.MaxMessageBytes)
	}
	if z != nil {
		defer z.Close()
	}
	for {
		typ, r, err := conn.NextReader()
		if err == nil {
			buf, err = readAll(r, buf[:0])
		}
		if err != nil {
			ev := closeEvent(err)
			if errors.Is(err, websocket.ErrReadLimit) {
				ev.Err = fmt.Errorf("%w: frame over the %d-byte limit", ErrTooLarge, c.limits.MaxFrameBytes)
			}
			c.emit(ops, ws.Op{Code: -1, Data: ev})
			conn.Close()
			return
		}
		at := time.Now()
		if c.wireBytes != nil {
			c.wireBytes.Add(float64(len(buf)))
		}
		msg := buf
		if typ == websocket.BinaryMessage {
			if z == nil {
				c.emit(ops, malformedOp("payload", errors.New("binary frame on an uncompressed connection")))
				continue
			}
			if msg, err = z.Inflate(buf); err != nil {
				// The compression context is broken for good: the shard
				// reconnects and resumes on a fresh context.
				if errors.Is(err, ErrTooLarge) {
					err = fmt.Errorf("%w (limit %d bytes)", err, c.limits.MaxMessageBytes)
				}
				c.emit(ops, ws.Op{Code: -1, Data: &ws.CloseEvent{Code: -1, Err: fmt.Errorf("broken %s: %w", c.compression, err)}})
				c.CloseWithCode(4000, "decompression error")
				return
			}
		}
		env, err := parseEnvelope(msg)
		if err != nil {
			c.emit(ops, malformedOp("json", err))
			continue
		}
		switch env.Op {
		case opHeartbeatAck, opHeartbeat:
			c.control(env.Op, at)
			continue
		}
		op, err := c.decodeOp(&env, at)
		if err != nil {
			c.emit(ops, malformedOp("payload", err))
			continue
		}
		c.emit(ops, op)
	}
}

func (c *Conn) emit(ops chan<- ws.Op, op ws.Op) {
	select {
	case ops <- op:
		return
	default:
	}
	c.stalled.Store(true)
	ops <- op
	c.unstalledAt.Store(time.Now().UnixNano())
	c.stalled.Store(false)
}

func (c *Conn) decodeOp(env *envelope, at time.Time) (ws.Op, error) {
	switch env.Op {
	case opDispatch:
		if env.T == "" {
			return ws.Op{}, errors.New("dispatch without a type")
		}
		return ws.Op{Code: opDispatch, Type: ws.EventType(env.T), Sequence: env.S, Data: c.prepare(env.T, env.S, env.D, at)}, nil
	case opHello:
		var h gateway.HelloEvent
		if err := json.Unmarshal(env.D, &h); err != nil || h.HeartbeatInterval <= 0 {
			return ws.Op{}, fmt.Errorf("bad HELLO: %v", err)
		}
		return ws.Op{Code: opHello, Data: &h}, nil
	case opReconnect:
		return ws.Op{Code: opReconnect, Data: &gateway.ReconnectEvent{}}, nil
	case opInvalidSession:
		var resumable gateway.InvalidSessionEvent
		if len(env.D) > 0 {
			if err := json.Unmarshal(env.D, &resumable); err != nil {
				return ws.Op{}, fmt.Errorf("bad INVALID_SESSION: %w", err)
			}
		}
		return ws.Op{Code: opInvalidSession, Data: &resumable}, nil
	default:
		return ws.Op{}, ws.UnknownEventError{Op: env.Op, Type: ws.EventType(env.T)}
	}
}

func malformedOp(reason string, err error) ws.Op {
	return ws.Op{Code: -1, Data: &MalformedFrame{Reason: reason, Err: err}}
}

func closeEvent(err error) *ws.CloseEvent {
	ev := &ws.CloseEvent{Code: -1, Err: err}
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		ev.Code = ce.Code
		ev.Err = fmt.Errorf("%d %s", ce.Code, ce.Text)
	}
	return ev
}

// readAll reads r into buf, reusing its capacity.
func readAll(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

package shard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Limits bound what one connection may allocate for a message. A message
// over either limit is dropped (see frames.go); the connection stays up.
type Limits struct {
	MaxFrameBytes   int64 // largest websocket message accepted off the wire
	MaxMessageBytes int   // largest message after decompression
}

// DefaultLimits are generous for Discord's largest GUILD_CREATEs.
var DefaultLimits = Limits{MaxFrameBytes: 16 << 20, MaxMessageBytes: 64 << 20}

// pauseThreshold is how long a Publish call must block before it counts
// as a pause of the socket reads (normal calls take microseconds).
const pauseThreshold = 20 * time.Millisecond

// conn is one websocket connection to the Discord gateway: writes under
// Discord's send budget (120 per 60 s, with a reserve only heartbeats may
// use), a close with a chosen code, and a record of when the reader paused.
// Reading is the payload reader's (frames.go).
type conn struct {
	ws      *websocket.Conn
	limiter *sendLimiter
	wmu     sync.Mutex // one writer at a time (gorilla's rule)
	closed  atomic.Bool

	// publishing is when the reader's current Publish call started (unix
	// nanos, 0 when none); pausedUntil is when its last long one ended.
	publishing  atomic.Int64
	pausedUntil atomic.Int64
}

// heartbeatReserve is the part of the send budget kept for heartbeats.
const heartbeatReserve = 3

var dialer = websocket.Dialer{
	Proxy:            http.ProxyFromEnvironment,
	HandshakeTimeout: 15 * time.Second,
	ReadBufferSize:   32 << 10,
	WriteBufferSize:  4 << 10,
}

// dial opens a connection; addr is the full gateway URL with query.
func dial(ctx context.Context, addr string) (*conn, error) {
	ws, resp, err := dialer.DialContext(ctx, addr, nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("dial gateway: %w", err)
	}
	// The payload reader enforces the size limits itself, without killing
	// the connection as gorilla's read limit would.
	ws.SetReadLimit(0)
	return &conn{ws: ws, limiter: newSendLimiter(120, time.Minute, heartbeatReserve)}, nil
}

// send writes one gateway command within the send budget; heartbeats may
// use the reserve.
func (c *conn) send(ctx context.Context, b []byte, heartbeat bool) error {
	if err := c.limiter.wait(ctx, heartbeat); err != nil {
		return err
	}
	if c.closed.Load() {
		return net.ErrClosed
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if d, ok := ctx.Deadline(); ok {
		c.ws.SetWriteDeadline(d)
	} else {
		c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	}
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

// close sends a close frame with code (none when 0) and closes the socket.
// Only the first call does anything. The shard never sends 1000 or 1001,
// which would end the Discord session.
func (c *conn) close(code int, reason string) {
	if !c.closed.CompareAndSwap(false, true) {
		return
	}
	if code != 0 {
		// WriteControl may run concurrently with a writer.
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	}
	c.ws.Close()
}

// publishStarted and publishEnded bracket the reader's Publish calls.
func (c *conn) publishStarted(start time.Time) { c.publishing.Store(start.UnixNano()) }

func (c *conn) publishEnded(start time.Time) {
	c.publishing.Store(0)
	if now := time.Now(); now.Sub(start) >= pauseThreshold {
		c.pausedUntil.Store(now.UnixNano())
	}
}

// pausedSince reports whether the reader was paused by backpressure at any
// time since t, as of now: then a missing heartbeat ACK may simply be unread.
func (c *conn) pausedSince(t, now time.Time) bool {
	if p := c.publishing.Load(); p != 0 && now.UnixNano()-p >= int64(pauseThreshold) {
		return true
	}
	return c.pausedUntil.Load() >= t.UnixNano()
}

// closedInput is the session's input for the read error that ended a
// connection: Discord's close code, or -1 when the TCP connection dropped.
func closedInput(err error) Closed {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return Closed{Code: ce.Code, Err: fmt.Errorf("%d %s", ce.Code, ce.Text)}
	}
	return Closed{Code: -1, Err: err}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

package discordsim

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

const (
	// writeTimeout bounds a single websocket write; a client that stops
	// reading long enough is treated like a slow client and dropped.
	writeTimeout = 10 * time.Second
	// closeGrace is how long the server waits for the client's close reply
	// after sending a close frame before closing TCP.
	closeGrace = 2 * time.Second
)

// outItem is one entry of a connection's outbound queue. Batches (READY and
// its GUILD_CREATEs, RESUME replays) travel as one item so their size is not
// limited by the queue length, while live traffic is.
type outItem struct {
	recs      []*dispatchRec
	raw       []byte // a non-dispatch payload (HELLO, ACK, op 7/9, SendRaw)
	close     int    // if non-zero: send a close frame with this code and stop
	reason    string
	onWritten func(time.Time)
	queued    time.Time // when enqueued; a write delay counts from here
}

// conn is one websocket connection. The HTTP handler goroutine runs the
// read loop; a second goroutine owns all data writes (and the compression
// context), fed by out.
type conn struct {
	srv  *Server
	id   int64
	ws   *websocket.Conn
	path string // "/gateway" or "/resume"
	host string // Host header, used to build resume_gateway_url
	comp Compression
	// label is Config.ConnLabel's name for the client, for ShardConns.
	label string
	// version is the v query parameter; versionOK is false for versions
	// Discord no longer serves.
	version   int
	versionOK bool

	out        chan outItem
	done       chan struct{} // closed once the connection is torn down
	readerDone chan struct{}
	killOnce   sync.Once
	closing    atomic.Bool   // a close handshake is in progress
	withhold   atomic.Bool   // zombie simulation: no heartbeat ACKs
	sawClose   atomic.Bool   // the client sent a close frame
	splitter   *zlibSplitter // SetSplit; created and used by the writer
	// delayRng draws the ConnDelay of each frame, and lastWriteAt is when
	// the previous delayed frame was due; both belong to the writer.
	delayRng    *rand.Rand
	lastWriteAt time.Time

	mu           sync.Mutex
	sess         *session
	beatBase     time.Time // HELLO write time, then time of the last heartbeat
	hadBeat      bool
	lateReported bool
	beatTimer    *time.Timer
	sendTimes    []time.Time // ring of the last SendLimit client frame times
	sendIdx      int
}

func (c *conn) session() *session {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess
}

func (c *conn) setSession(s *session) {
	c.mu.Lock()
	c.sess = s
	c.mu.Unlock()
}

// shardOf returns the shard and session id the connection is bound to, or
// -1 and "" before IDENTIFY/RESUME.
func (c *conn) shardOf() (int, string) {
	if s := c.session(); s != nil {
		return s.shard, s.id
	}
	return -1, ""
}

// enqueue never blocks: a full queue means the client does not keep up and,
// like Discord, the server drops it. The session stays resumable.
func (c *conn) enqueue(it outItem) {
	select {
	case <-c.done:
		return
	default:
	}
	it.queued = time.Now()
	select {
	case c.out <- it:
	default:
		c.kill(ActionSlowClientDrop, fmt.Sprintf("outbound queue full (%d)", cap(c.out)))
	}
}

// kill tears the connection down without a close frame. kind, if not empty,
// is recorded as a server action.
func (c *conn) kill(kind, detail string) {
	c.killOnce.Do(func() {
		c.srv.recordConnEnd(c, ConnEndServer)
		close(c.done)
		_ = c.ws.Close()
		c.mu.Lock()
		if c.beatTimer != nil {
			c.beatTimer.Stop()
		}
		shard, sid := -1, ""
		if c.sess != nil {
			shard, sid = c.sess.shard, c.sess.id
		}
		c.mu.Unlock()
		if kind != "" {
			c.srv.recordAction(Action{Kind: kind, Shard: shard, SessionID: sid, ConnID: c.id, Detail: detail})
		}
		c.srv.notify()
	})
}

// closeWith starts a close handshake with code, after everything already
// queued has been written. If endSession is set the bound session is
// invalidated first so the client cannot resume it.
func (c *conn) closeWith(code int, reason string, endSession bool, actionDetail string) {
	if !c.closing.CompareAndSwap(false, true) {
		return
	}
	if reason == "" {
		reason = CloseReason(code)
	}
	shard, sid := c.shardOf()
	if endSession {
		if s := c.session(); s != nil {
			s.invalidate()
		}
	}
	c.srv.recordAction(Action{Kind: ActionClose, Shard: shard, SessionID: sid, ConnID: c.id, Code: code, Detail: joinDetail(reason, actionDetail)})
	select {
	case c.out <- outItem{close: code, reason: reason, queued: time.Now()}:
	default:
		// Queue full: close right away rather than never.
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
		c.kill("", "")
	}
}

func joinDetail(a, b string) string {
	if b == "" {
		return a
	}
	return a + ": " + b
}

// protocolError records a client protocol violation and closes with code.
func (c *conn) protocolError(code int, detail string) {
	shard, sid := c.shardOf()
	c.srv.recordViolation(Violation{Kind: ViolationProtocol, Shard: shard, SessionID: sid, ConnID: c.id, Code: code, Detail: detail})
	c.closeWith(code, "", closeEndsSession(code), detail)
}

func (c *conn) writeLoop(enc frameEncoder) {
	defer enc.close()
	for {
		select {
		case <-c.done:
			return
		case it := <-c.out:
			if !c.waitWriteDelay(it.queued) {
				return
			}
			if it.close != 0 {
				c.writeClose(it.close, it.reason)
				return
			}
			if it.raw != nil && !c.write(enc, it.raw) {
				return
			}
			for _, r := range it.recs {
				if !c.write(enc, r.frame) {
					return
				}
				r.written.Store(true)
				c.srv.framesWritten.Add(1)
				if r.notify {
					c.srv.notify()
				}
			}
			if it.onWritten != nil {
				it.onWritten(time.Now())
			}
		}
	}
}

// waitWriteDelay holds an item until the write delay of the connection's
// shard (SetWriteDelay) plus the connection's own random delay
// (Config.ConnDelay) have passed since it was queued, never letting it
// overtake the item before. It reports false when the connection was torn
// down meanwhile.
func (c *conn) waitWriteDelay(queued time.Time) bool {
	var d time.Duration
	if shard, _ := c.shardOf(); shard >= 0 {
		d = c.srv.writeDelay(shard)
	}
	if most := c.srv.cfg.ConnDelay; most > 0 {
		if c.delayRng == nil {
			c.delayRng = rand.New(rand.NewPCG(uint64(c.id), uint64(time.Now().UnixNano())))
		}
		d += time.Duration(c.delayRng.Int64N(int64(most) + 1))
	}
	if d <= 0 {
		return true
	}
	at := queued.Add(d)
	if at.Before(c.lastWriteAt) {
		at = c.lastWriteAt // frames keep their order
	}
	c.lastWriteAt = at
	wait := time.Until(at)
	if wait <= 0 {
		return true
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-c.done:
		return false
	case <-t.C:
		return true
	}
}

func (c *conn) write(enc frameEncoder, payload []byte) bool {
	select {
	case <-c.done:
		return false
	default:
	}
	typ, b, err := enc.encode(payload)
	if err == nil {
		_ = c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
		err = c.writeMessages(typ, b)
	}
	if err != nil {
		select {
		case <-c.done: // torn down elsewhere; nothing to record
		default:
			c.kill(ActionWriteError, err.Error())
		}
		return false
	}
	return true
}

// writeMessages writes one encoded payload: one websocket message, or
// several when the shard's zlib-stream payloads are split (SetSplit).
func (c *conn) writeMessages(typ int, b []byte) error {
	var cuts []int
	if c.comp == CompressZlib && c.srv.anySplit.Load() {
		if shard, _ := c.shardOf(); shard >= 0 {
			if pieces := c.srv.split(shard); pieces > 1 {
				if c.splitter == nil {
					c.splitter = newZlibSplitter(c.id)
				}
				cuts = c.splitter.cuts(b, pieces)
			}
		}
	}
	start := 0
	for _, end := range append(cuts, len(b)) {
		if err := c.ws.WriteMessage(typ, b[start:end]); err != nil {
			return err
		}
		start = end
	}
	return nil
}

func (c *conn) writeClose(code int, reason string) {
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	t := time.NewTimer(closeGrace)
	defer t.Stop()
	select {
	case <-c.readerDone:
	case <-c.done:
	case <-t.C:
	}
	c.kill("", "")
}

// onCloseFrame handles a close frame from the client: record it, and if the
// client initiated the close, echo it (RFC 6455) and apply Discord's rule
// that 1000/1001 invalidate the session.
func (c *conn) onCloseFrame(code int, text string) error {
	c.sawClose.Store(true)
	c.srv.recordConnEnd(c, ConnEndClientClose)
	echo := c.closing.Load()
	shard, sid := c.shardOf()
	c.srv.recordClientClose(Close{Shard: shard, SessionID: sid, ConnID: c.id, Code: code, Reason: text, Echo: echo})
	if echo {
		return nil
	}
	c.closing.Store(true)
	if code == websocket.CloseNormalClosure || code == websocket.CloseGoingAway {
		if s := c.session(); s != nil {
			s.invalidate()
		}
	}
	msg := []byte{}
	if code != websocket.CloseNoStatusReceived {
		msg = websocket.FormatCloseMessage(code, "")
	}
	_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
	return nil
}

func (c *conn) readLoop() {
	defer c.finish()
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		if c.closing.Load() {
			continue // closing: ignore anything but the close reply
		}
		c.handle(data)
	}
}

// finish runs when the read side ends, whatever the reason.
func (c *conn) finish() {
	c.srv.recordConnEnd(c, ConnEndClientGone)
	close(c.readerDone)
	select {
	case <-c.done:
	default:
		if !c.sawClose.Load() && !c.closing.Load() {
			// The client vanished without a close frame; 1006 is the code
			// websocket uses for "closed abnormally".
			shard, sid := c.shardOf()
			c.srv.recordClientClose(Close{Shard: shard, SessionID: sid, ConnID: c.id, Code: websocket.CloseAbnormalClosure, Reason: "connection lost without close frame"})
		}
	}
	c.kill("", "")
	if s := c.session(); s != nil {
		s.detach(c)
	}
	c.srv.removeConn(c)
}

// handle processes one client frame.
func (c *conn) handle(data []byte) {
	now := time.Now()
	if c.overRate(now) {
		shard, sid := c.shardOf()
		c.srv.recordViolation(Violation{Kind: ViolationSendRate, Shard: shard, SessionID: sid, ConnID: c.id, Code: CloseRateLimited,
			Detail: fmt.Sprintf("more than %d payloads within %v", c.srv.cfg.SendLimit, c.srv.cfg.SendWindow)})
		c.closeWith(CloseRateLimited, "", false, "send rate exceeded")
		return
	}
	if len(data) > maxClientPayload {
		c.protocolError(CloseDecodeError, fmt.Sprintf("payload of %d bytes exceeds %d", len(data), maxClientPayload))
		return
	}
	var p struct {
		Op *int            `json:"op"`
		D  json.RawMessage `json:"d"`
	}
	if err := json.Unmarshal(data, &p); err != nil {
		c.protocolError(CloseDecodeError, "invalid JSON: "+err.Error())
		return
	}
	if p.Op == nil {
		c.protocolError(CloseDecodeError, "payload without op")
		return
	}
	switch op := *p.Op; op {
	case OpHeartbeat:
		c.onHeartbeat(now)
	case OpIdentify:
		c.srv.identify(c, p.D, now)
	case OpResume:
		c.srv.resume(c, p.D, now)
	case OpPresenceUpdate, OpVoiceStateUpdate, OpRequestGuildMembers, OpRequestSoundboardSounds:
		s := c.session()
		if s == nil {
			c.protocolError(CloseNotAuthenticated, fmt.Sprintf("op %d before IDENTIFY/RESUME", op))
			return
		}
		c.srv.recordCommand(Command{Shard: s.shard, SessionID: s.id, ConnID: c.id, Op: op, Data: append(json.RawMessage(nil), p.D...), At: now})
		c.srv.answerCommand(s, op, p.D)
	default:
		c.protocolError(CloseUnknownOpcode, fmt.Sprintf("unknown or receive-only opcode %d", op))
	}
}

// overRate records a client frame and reports whether it is beyond SendLimit
// frames within the sliding SendWindow.
func (c *conn) overRate(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sendTimes == nil {
		c.sendTimes = make([]time.Time, c.srv.cfg.SendLimit)
	}
	oldest := c.sendTimes[c.sendIdx]
	c.sendTimes[c.sendIdx] = now
	c.sendIdx = (c.sendIdx + 1) % len(c.sendTimes)
	return !oldest.IsZero() && now.Sub(oldest) < c.srv.cfg.SendWindow
}

// helloWritten starts heartbeat supervision from the moment HELLO left.
func (c *conn) helloWritten(at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.done:
		return
	default:
	}
	c.beatBase = at
	c.beatTimer = time.AfterFunc(c.srv.beatAllowance(), c.beatExpired)
}

func (c *conn) onHeartbeat(now time.Time) {
	allowed := c.srv.beatAllowance()
	c.mu.Lock()
	late := !c.beatBase.IsZero() && !c.lateReported && now.Sub(c.beatBase) > allowed
	gap, first := now.Sub(c.beatBase), !c.hadBeat
	c.beatBase, c.hadBeat, c.lateReported = now, true, false
	if c.beatTimer != nil {
		c.beatTimer.Reset(allowed)
	}
	c.mu.Unlock()
	if late {
		c.lateHeartbeat(first, gap, true)
	}
	if !c.withhold.Load() {
		c.enqueue(outItem{raw: controlFrame(OpHeartbeatACK, "null")})
	}
}

// beatExpired fires when no heartbeat arrived within the allowance; it also
// catches clients that never heartbeat at all.
func (c *conn) beatExpired() {
	allowed := c.srv.beatAllowance()
	c.mu.Lock()
	since := time.Since(c.beatBase)
	if c.lateReported || since <= allowed {
		c.mu.Unlock()
		return
	}
	c.lateReported = true
	first := !c.hadBeat
	c.mu.Unlock()
	select {
	case <-c.done:
		return
	default:
	}
	c.lateHeartbeat(first, since, false)
}

func (c *conn) lateHeartbeat(first bool, gap time.Duration, arrived bool) {
	what := "heartbeat gap"
	if first {
		what = "first heartbeat after HELLO"
	}
	state := "arrived after"
	if !arrived {
		state = "missing after"
	}
	shard, sid := c.shardOf()
	c.srv.recordViolation(Violation{Kind: ViolationHeartbeatLate, Shard: shard, SessionID: sid, ConnID: c.id,
		Detail: fmt.Sprintf("%s %s %v (interval %v)", what, state, gap.Round(time.Millisecond), c.srv.cfg.HeartbeatInterval)})
	if c.srv.cfg.CloseOnMissedHeartbeat && !arrived {
		c.closeWith(CloseSessionTimedOut, "", true, "missed heartbeat")
	}
}

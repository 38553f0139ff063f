package discordsim

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
)

var (
	// ErrNoSession is returned when a shard never identified or its latest
	// session was invalidated.
	ErrNoSession = errors.New("discordsim: shard has no valid session")
	// ErrNotConnected is returned by controls that need a live connection.
	ErrNotConnected = errors.New("discordsim: shard has no live connection")
)

// currentSession is the latest session identified for shard (any total).
func (s *Server) currentSession(shard int) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current[shard]
}

func (s *Server) liveConn(shard int) (*conn, *session, error) {
	ss := s.currentSession(shard)
	if ss == nil {
		return nil, nil, ErrNoSession
	}
	c := ss.liveConn()
	if c == nil {
		return nil, ss, ErrNotConnected
	}
	return c, ss, nil
}

// Dispatch appends a dispatch of type t with body d to shard's current
// session and returns its seq. If the session has no live connection the
// dispatch is only logged and will be replayed by a RESUME, like Discord.
// d must be valid JSON and t an event name such as "GUILD_CREATE". Unlike
// the load generator, Dispatch does not filter by the session's intents.
// Nor does it bound d: a dispatch of many MiB is queued, written and
// replayed like any other (Discord's largest GUILD_CREATEs are that big),
// which is how a test shows what a client's size limits do to a session.
func (s *Server) Dispatch(shard int, t string, d []byte) (int64, error) {
	if err := checkDispatch(t, d); err != nil {
		return 0, err
	}
	ss := s.currentSession(shard)
	if ss == nil {
		return 0, ErrNoSession
	}
	rec, err := ss.dispatch(t, d)
	if err != nil {
		return 0, ErrNoSession
	}
	return rec.seq, nil
}

// checkDispatch checks a test's dispatch: an event name dispatchFrame can
// embed as it is, and a JSON body.
func checkDispatch(t string, d []byte) error {
	if !validEventName(t) {
		return fmt.Errorf("discordsim: invalid event name %q", t)
	}
	if !json.Valid(d) {
		return fmt.Errorf("discordsim: %s body is not valid JSON", t)
	}
	return nil
}

// Drop closes shard's TCP connection without a close frame (network loss).
// The session stays resumable.
func (s *Server) Drop(shard int) error {
	c, ss, err := s.liveConn(shard)
	if err != nil {
		return err
	}
	ss.detach(c) // detach first so nothing else is queued to the dying conn
	c.kill(ActionDrop, "Drop requested")
	return nil
}

// CloseWith sends a close frame with code and reason (after what is already
// queued), then closes the connection. Codes after which Discord requires a
// new session (4004, 4007, 4009, 4010-4014) also invalidate the session;
// others leave it resumable. An empty reason uses Discord's text.
func (s *Server) CloseWith(shard int, code int, reason string) error {
	c, _, err := s.liveConn(shard)
	if err != nil {
		return err
	}
	c.closeWith(code, reason, closeEndsSession(code), "CloseWith requested")
	return nil
}

// Reconnect sends op 7. Like Discord the connection is left open; the
// client is expected to close it and RESUME.
func (s *Server) Reconnect(shard int) error {
	c, ss, err := s.liveConn(shard)
	if err != nil {
		return err
	}
	c.enqueue(outItem{raw: controlFrame(OpReconnect, "null")})
	s.recordAction(Action{Kind: ActionReconnect, Shard: shard, SessionID: ss.id, ConnID: c.id})
	return nil
}

// InvalidSession sends op 9 with d=resumable. The session is unbound from
// the connection (which stays open, so the client may IDENTIFY or RESUME on
// it or reconnect); with resumable=false it is also invalidated.
func (s *Server) InvalidSession(shard int, resumable bool) error {
	c, ss, err := s.liveConn(shard)
	if err != nil {
		return err
	}
	if resumable {
		ss.detach(c)
	} else {
		ss.invalidate()
	}
	c.setSession(nil)
	s.sendInvalidSession(c, shard, ss.id, resumable, fmt.Sprintf("InvalidSession requested (d=%v)", resumable))
	return nil
}

// RequestHeartbeat sends op 1; the client must answer with a heartbeat.
func (s *Server) RequestHeartbeat(shard int) error {
	c, ss, err := s.liveConn(shard)
	if err != nil {
		return err
	}
	c.enqueue(outItem{raw: controlFrame(OpHeartbeat, "null")})
	s.recordAction(Action{Kind: ActionHeartbeatReq, Shard: shard, SessionID: ss.id, ConnID: c.id})
	return nil
}

// WithholdAcks turns heartbeat ACKs off (on=true) or back on for shard's
// current connection, simulating a zombie connection. It applies to that
// connection only: a new connection (e.g. after the client resumed) gets
// ACKs again, as a zombied link would be replaced by a healthy one.
func (s *Server) WithholdAcks(shard int, on bool) error {
	c, ss, err := s.liveConn(shard)
	if err != nil {
		return err
	}
	c.withhold.Store(on)
	s.recordAction(Action{Kind: ActionWithholdAcks, Shard: shard, SessionID: ss.id, ConnID: c.id, Detail: fmt.Sprint(on)})
	return nil
}

// SetWriteDelay delays every frame the simulator writes to shard's
// connections by d, counted from the moment the frame was queued, like a
// slow network path: frames keep their order and throughput is not limited,
// but each one arrives d late, heartbeat ACKs and close frames included. It
// applies to the shard's current and future connections (once bound to the
// shard by IDENTIFY or RESUME) until it is set again; 0 turns it off.
func (s *Server) SetWriteDelay(shard int, d time.Duration) {
	d = max(d, 0)
	s.mu.Lock()
	if d == 0 {
		delete(s.delays, shard)
	} else {
		s.delays[shard] = d
	}
	s.anyDelay.Store(len(s.delays) > 0)
	cur := s.current[shard]
	s.mu.Unlock()
	a := Action{Kind: ActionWriteDelay, Shard: shard, Detail: d.String()}
	if cur != nil {
		a.SessionID = cur.id
		if c := cur.liveConn(); c != nil {
			a.ConnID = c.id
		}
	}
	s.recordAction(a)
}

// WriteDelay returns shard's write delay (see SetWriteDelay).
func (s *Server) WriteDelay(shard int) time.Duration { return s.writeDelay(shard) }

func (s *Server) writeDelay(shard int) time.Duration {
	if !s.anyDelay.Load() {
		return 0 // the common case, without taking mu for every frame
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.delays[shard]
}

// SetSplit makes the simulator send every zlib-stream payload written to
// shard's connections as pieces websocket messages instead of one. Discord's
// docs tell zlib-stream clients to buffer messages until one ends with the
// Z_SYNC_FLUSH suffix 00 00 ff ff and only then inflate, because a payload
// may span several messages. The cuts fall at arbitrary points; for every
// other payload the last cut lies inside (or just before) the 4-byte suffix,
// so a piece ends with part of it. No piece but the last ends with the whole
// suffix, or a client following the docs would inflate too early.
//
// Only zlib-stream is split. Discord documents that with zstd-stream "each
// websocket message corresponds to a single gateway message", and a zstd
// message has no end marker a client could wait for; uncompressed JSON is
// one payload per text message. Like SetWriteDelay it applies to the
// shard's current and future connections (once bound to the shard by
// IDENTIFY or RESUME, so HELLO is never split) until it is set again;
// pieces of 0 or 1 turn it off.
func (s *Server) SetSplit(shard int, pieces int) {
	pieces = max(pieces, 1)
	s.mu.Lock()
	if pieces == 1 {
		delete(s.splits, shard)
	} else {
		s.splits[shard] = pieces
	}
	s.anySplit.Store(len(s.splits) > 0)
	cur := s.current[shard]
	s.mu.Unlock()
	a := Action{Kind: ActionSplit, Shard: shard, Detail: fmt.Sprint(pieces)}
	if cur != nil {
		a.SessionID = cur.id
		if c := cur.liveConn(); c != nil {
			a.ConnID = c.id
		}
	}
	s.recordAction(a)
}

// Split returns the number of messages each zlib-stream payload of shard is
// sent as (see SetSplit); 1 means unsplit.
func (s *Server) Split(shard int) int { return s.split(shard) }

func (s *Server) split(shard int) int {
	if !s.anySplit.Load() {
		return 1 // the common case, without taking mu for every frame
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(s.splits[shard], 1)
}

// SendRaw writes frame as one payload on shard's connection (one message, or
// several under SetSplit), compressed per the connection's transport
// compression, e.g. to inject malformed data. It bypasses the replay log: a
// RESUME does not send it again. Use Dispatch for a well-formed payload that
// must come back after a RESUME, such as an oversized one.
func (s *Server) SendRaw(shard int, frame []byte) error {
	c, ss, err := s.liveConn(shard)
	if err != nil {
		return err
	}
	c.enqueue(outItem{raw: append([]byte(nil), frame...)})
	s.recordAction(Action{Kind: ActionSendRaw, Shard: shard, SessionID: ss.id, ConnID: c.id, Detail: fmt.Sprintf("%d bytes", len(frame))})
	return nil
}

// SetEventRate changes the load generator rate (dispatches per second per
// session); 0 stops it.
func (s *Server) SetEventRate(perShard float64) {
	if perShard < 0 || math.IsNaN(perShard) {
		perShard = 0
	}
	s.rateBits.Store(math.Float64bits(perShard))
	select {
	case s.rateCh <- struct{}{}:
	default:
	}
	if perShard > 0 {
		s.startGenerator()
		return
	}
	// Wait out a batch being generated, so that a test that stops the
	// load reads a ledger that no longer grows.
	s.genMu.Lock()
	//lint:ignore SA2001 an empty critical section is the barrier wanted
	s.genMu.Unlock()
}

// EventRate returns the current load generator rate.
func (s *Server) EventRate() float64 { return math.Float64frombits(s.rateBits.Load()) }

// SetSessionStartRemaining sets session_start_limit.remaining, and lifts a
// token revocation caused by exhausting it (the daily reset, or the owner
// installing the new token).
func (s *Server) SetSessionStartRemaining(n int) {
	s.mu.Lock()
	s.remaining = max(n, 0)
	s.revoked = false
	s.mu.Unlock()
}

// GuildIDForShard is the method form of the package function.
func (s *Server) GuildIDForShard(shard, total, n int) string { return GuildIDForShard(shard, total, n) }

// CurrentSession returns the id of shard's latest session, or "".
func (s *Server) CurrentSession(shard int) string {
	if ss := s.currentSession(shard); ss != nil {
		return ss.id
	}
	return ""
}

// LiveConnID returns the id of shard's live connection (as in Record
// entries), or 0.
func (s *Server) LiveConnID(shard int) int64 {
	if c, _, err := s.liveConn(shard); err == nil {
		return c.id
	}
	return 0
}

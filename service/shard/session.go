package shard

// This file is the gateway protocol, top to bottom: one shard's session as a
// state machine that owns no socket, goroutine or clock. The driver (shard.go
// and conn.go) feeds it inputs (a decoded payload, a timer firing, a close,
// an ack) and carries out the actions it returns (send this, close with that
// code, publish this event, dial again after that delay). Every opcode and
// every close code is decided in Handle; session_test.go checks each rule
// against the Discord documentation it cites.
//
// Rules, from https://discord.com/developers/docs/events/gateway:
//   - HELLO (op 10) opens every connection; the first heartbeat goes out
//     after heartbeat_interval × jitter, then one per interval, each carrying
//     the last sequence number received (null before any).
//   - A new session IDENTIFYs (op 2); a session that may still be resumed
//     RESUMEs (op 6) on the resume_gateway_url READY gave it.
//   - Discord may ask for a heartbeat (op 1): send one at once.
//   - No HEARTBEAT_ACK (op 11) between two timed heartbeats means a zombie
//     connection: close it with a code other than 1000/1001 and resume.
//   - RECONNECT (op 7): close and resume. INVALID_SESSION (op 9) d=true:
//     resume; d=false: wait 1–5 s and IDENTIFY a new session.
//   - Close codes: see closeCodes below.
//   - Each IDENTIFY spends one of the bot's daily session starts
//     (session_start_limit); running out resets the bot's token. The driver
//     takes a start before it carries out a Dial that will IDENTIFY; when
//     the budget is down to its reserve it feeds SessionLimited instead, and
//     the session waits, holding no connection, until Discord's reset.

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/shardpool/gateway/service/event"
)

// Gateway opcodes.
const (
	opDispatch       = 0
	opHeartbeat      = 1
	opIdentify       = 2
	opResume         = 6
	opReconnect      = 7
	opInvalidSession = 9
	opHello          = 10
	opHeartbeatAck   = 11
)

// closeResumable is the close code the shard sends when it leaves a
// connection: anything but 1000 and 1001 keeps the session resumable.
const closeResumable = 4000

// closeNormal ends the session for good: Discord will not resume it.
const closeNormal = 1000

// closeRule is what a close code received from Discord means for the shard.
type closeRule int

const (
	closeResume   closeRule = iota // reconnect and RESUME
	closeIdentify                  // the session is gone: reconnect and IDENTIFY
	closeFatal                     // reconnecting cannot help: stop the shard
)

// closeCodes is Discord's close code table. Codes it does not list (1000,
// 1001, 1006, a dropped TCP connection) are resumed: if Discord ended the
// session it answers the RESUME with op 9, and the shard identifies then.
var closeCodes = map[int]struct {
	rule closeRule
	msg  string // for the operator, on the fatal codes
}{
	4000: {closeResume, "unknown error"},
	4001: {closeResume, "unknown opcode"},
	4002: {closeResume, "decode error"},
	4003: {closeResume, "not authenticated"},
	4004: {closeFatal, "authentication failed: check DISCORD_TOKEN"},
	4005: {closeResume, "already authenticated"},
	4007: {closeIdentify, "invalid seq"},
	4008: {closeResume, "rate limited"},
	4009: {closeIdentify, "session timed out"},
	4010: {closeFatal, "invalid shard sent: check TOTAL_SHARDS and POOL_ID"},
	4011: {closeFatal, "sharding required: the bot has too many guilds for TOTAL_SHARDS; raise it or use auto; with a fleet in Consul, reshard it without downtime: gatewayctl reshard -url http://<instance> -total N (N: /gateway/bot's shards), or set RESHARD=auto"},
	4012: {closeFatal, "invalid gateway API version"},
	4013: {closeFatal, "invalid intents"},
	4014: {closeFatal, "disallowed intents: enable the privileged Server Members intent for the bot in the Discord developer portal"},
}

// Input is something that happened to the session.
type Input interface{ input() }

// Inputs. Dispatch (op 0) is an input too; see conn.go.
type (
	// Start asks for the first connection.
	Start struct{}
	// Hello is op 10.
	Hello struct{ Interval time.Duration }
	// HelloTimeout: the connection produced no HELLO in time.
	HelloTimeout struct{}
	// HeartbeatRequest is op 1 from Discord.
	HeartbeatRequest struct{}
	// HeartbeatAck is op 11, received at At.
	HeartbeatAck struct{ At time.Time }
	// HeartbeatDue: the heartbeat timer fired at At. ReadsPaused reports
	// that the driver stopped reading the socket (backpressure) at some
	// point since the previous timed heartbeat, so a missing ACK may be
	// sitting unread.
	HeartbeatDue struct {
		At          time.Time
		ReadsPaused bool
	}
	// ReconnectRequest is op 7.
	ReconnectRequest struct{}
	// InvalidSession is op 9; d says whether the session may be resumed.
	InvalidSession struct{ Resumable bool }
	// Skipped is a dispatch the driver could not deliver (too large to
	// read): the resume point may pass it, or it would be replayed forever.
	Skipped struct{ Seq int64 }
	// Acked: JetStream acked the event of seq, published in generation Gen.
	Acked struct {
		Gen uint64
		Seq int64
	}
	// Closed: the connection ended, with the close code Discord sent (-1
	// when there was none) and the read error.
	Closed struct {
		Code int
		Err  error
	}
	// Dialed: the websocket is open.
	Dialed struct{}
	// DialFailed: the websocket could not be opened.
	DialFailed struct{ Err error }
	// SessionLimited: the Dial the session asked for was not carried out:
	// it would IDENTIFY, and the bot's daily session starts are down to the
	// reserve until Wait has passed (Discord's reset_after).
	SessionLimited struct{ Wait time.Duration }
	// Shutdown: the shard is being stopped (drain, fence, exit). The session
	// stays resumable for a successor.
	Shutdown struct{}
)

func (Start) input()            {}
func (Hello) input()            {}
func (HelloTimeout) input()     {}
func (HeartbeatRequest) input() {}
func (HeartbeatAck) input()     {}
func (HeartbeatDue) input()     {}
func (ReconnectRequest) input() {}
func (InvalidSession) input()   {}
func (Skipped) input()          {}
func (Acked) input()            {}
func (Closed) input()           {}
func (Dialed) input()           {}
func (DialFailed) input()       {}
func (SessionLimited) input()   {}
func (Shutdown) input()         {}
func (*Dispatch) input()        {}

// Dispatch is op 0. Its event is built on the read goroutine, straight from
// the connection's read buffer, so `d` is copied once, into the message
// body, exactly as Discord sent it.
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

	published Published // what the Publish action refers to
}

// Ready is the part of READY the session keeps.
type Ready struct {
	SessionID        string `json:"session_id"`
	ResumeGatewayURL string `json:"resume_gateway_url"`
	Guilds           []struct {
		ID string `json:"id"`
	} `json:"guilds"`
}

// Action is something the driver must do.
type Action interface{ action() }

// Actions.
type (
	// StartHeartbeat starts the connection's heartbeat timer: first after
	// First, then every Interval.
	StartHeartbeat struct{ First, Interval time.Duration }
	// SendIdentify: take the shard's identify permit, then send IDENTIFY.
	SendIdentify struct{}
	// SendResume sends RESUME for SessionID from Seq.
	SendResume struct {
		SessionID string
		Seq       int64
	}
	// SendHeartbeat sends op 1 with Seq (null when 0).
	SendHeartbeat struct{ Seq int64 }
	// Close closes the connection with Code; a Closed input follows.
	Close struct {
		Code   int
		Reason string
	}
	// Publish hands Event (dispatch Seq) to the publisher; its ack comes
	// back as Acked{Gen, Seq} (or Session.Ack). It is one pointer, to the
	// dispatch's own record, so that returning it allocates nothing.
	Publish struct{ *Published }
	// Dial opens the next connection after After: to URL, resuming or
	// identifying. Reason and Err say why the previous one ended ("" for
	// the first).
	Dial struct {
		After  time.Duration
		URL    string
		Resume bool
		Reason string // bounded, for the reconnects metric
		Err    error
	}
	// Stop ends the shard: Err is nil after a Shutdown, the fatal close
	// otherwise.
	Stop struct{ Err error }
	// Enter reports a new state, for /status, metrics and logs.
	Enter struct{ State State }
)

// Published is what a Publish action publishes.
type Published struct {
	Event *event.Event
	Seq   int64
	Gen   uint64
}

func (StartHeartbeat) action() {}
func (SendIdentify) action()   {}
func (SendResume) action()     {}
func (SendHeartbeat) action()  {}
func (Close) action()          {}
func (Publish) action()        {}
func (Dial) action()           {}
func (Stop) action()           {}
func (Enter) action()          {}

// State is a shard's lifecycle state as shown in /status.
type State string

// Shard states.
const (
	StateConnecting   State = "connecting"
	StateIdentifying  State = "identifying"
	StateReady        State = "ready"
	StateResuming     State = "resuming"
	StateReconnecting State = "reconnecting"
	StateFailed       State = "failed"
	StateDrained      State = "drained"
	// StateSessionLimit: waiting, without a connection, for the daily
	// session start budget to reset before the shard may IDENTIFY.
	StateSessionLimit State = "session_limit"
)

// reasonSessionLimit is the Reason of a Dial put off by SessionLimited.
const reasonSessionLimit = "session_limit"

// SessionConfig is what the session needs to know besides its inputs.
type SessionConfig struct {
	GatewayURL string // from /gateway/bot
	Backoff    Backoff
	// InvalidSessionDelay is the pause before a new IDENTIFY after op 9
	// d=false or close 4007/4009; Discord asks for 1–5 s.
	InvalidSessionDelay func() time.Duration
	// Rand returns a number in [0, 1): heartbeat and backoff jitter.
	Rand func() float64
	// Resume, when set, makes the first connection RESUME this session.
	Resume *Handoff
}

// Handoff is what a successor needs to RESUME a session instead of
// identifying: the session, where to resume it and the last sequence whose
// event JetStream acked.
type Handoff struct {
	SessionID        string    `json:"session_id"`
	ResumeGatewayURL string    `json:"resume_gateway_url"`
	Seq              int64     `json:"seq"`
	Time             time.Time `json:"time"`
}

// Session is one shard's gateway session. It is not safe for concurrent
// use: the driver serialises Handle.
type Session struct {
	cfg   SessionConfig
	state State

	id        string // session_id; "" when the next connection must IDENTIFY
	resumeURL string // resume_gateway_url; "" to use the main gateway URL
	seq       int64  // last sequence received, for heartbeats
	acks      ackTracker

	dialURL   string // where the current or last connection was dialed
	connected bool   // a connection is open (Dialed, not yet Closed)
	hello     bool   // the current connection said HELLO
	healthy   bool   // the current connection reached READY or RESUMED
	attempt   int    // connections since the last healthy one, for backoff
	closing   *Dial  // the session closed the connection: what comes next
	stopping  bool   // Shutdown: the next Closed ends the shard
	final     bool   // EndForGood: the Shutdown closes with 1000, no hand-off

	beats   uint64 // heartbeats sent on this connection
	acked   uint64 // ACKs received on this connection
	mark    uint64 // beats at the last timed heartbeat
	sentAt  time.Time
	latency time.Duration
}

// NewSession returns a session that has not connected.
func NewSession(cfg SessionConfig) *Session {
	if cfg.Rand == nil {
		cfg.Rand = randFloat
	}
	if cfg.InvalidSessionDelay == nil {
		cfg.InvalidSessionDelay = func() time.Duration { return time.Second + time.Duration(cfg.Rand()*float64(4*time.Second)) }
	}
	s := &Session{cfg: cfg, state: StateConnecting}
	if h := cfg.Resume; h != nil && h.SessionID != "" {
		s.id, s.resumeURL, s.seq = h.SessionID, h.ResumeGatewayURL, h.Seq
		s.acks.reset(h.Seq)
	}
	return s
}

// Ack is Handle(Acked{gen, seq}) for the publish path, once per event:
// the input is not boxed into an interface, which would allocate.
func (s *Session) Ack(gen uint64, seq int64) { s.acks.done(gen, seq) }

// Handle is the protocol: it takes one input and returns what to do, in
// order. out is reused for the result.
func (s *Session) Handle(in Input, out []Action) []Action {
	out = out[:0]
	switch in := in.(type) {
	case Start:
		return s.dial(out, 0, "", nil)
	case Dialed:
		s.connected = true
		if s.state == StateSessionLimit {
			return s.enter(out, StateConnecting) // the budget allowed it at last
		}
		return out
	case DialFailed:
		if s.stopping {
			return s.stop(out, nil)
		}
		return s.connectionFailed(out, "dial", in.Err)
	case HelloTimeout:
		if s.closing != nil {
			return out
		}
		s.dropDeadResumeURL()
		out = append(out, Close{closeResumable, "no HELLO"})
		return s.closeThen(out, s.retry("hello_timeout", errors.New("no HELLO from the gateway")))
	case Hello:
		return s.onHello(out, in)
	case HeartbeatRequest:
		if !s.hello {
			return out
		}
		s.beats++
		return append(out, SendHeartbeat{s.seq})
	case HeartbeatAck:
		if s.acked < s.beats {
			s.acked++
			s.latency = in.At.Sub(s.sentAt)
		}
		return out
	case HeartbeatDue:
		return s.onHeartbeatDue(out, in)
	case *Dispatch:
		return s.onDispatch(out, in)
	case Skipped:
		s.see(in.Seq)
		s.acks.add(in.Seq, true)
		return out
	case Acked:
		s.acks.done(in.Gen, in.Seq)
		return out
	case ReconnectRequest:
		if s.closing != nil {
			return out
		}
		out = append(out, Close{closeResumable, "reconnect requested"})
		return s.closeThen(out, s.retry("op7_reconnect", nil))
	case InvalidSession:
		if s.closing != nil {
			return out
		}
		if in.Resumable {
			out = append(out, Close{closeResumable, "invalid session, resuming"})
			return s.closeThen(out, s.retry("op9_resumable", nil))
		}
		out = append(out, Close{closeResumable, "invalid session"})
		return s.closeThen(out, s.renew("op9_invalid_session", errors.New("session invalidated by Discord (op 9)")))
	case Closed:
		return s.onClosed(out, in)
	case SessionLimited:
		// The same Dial, after the reset; the driver checks the budget
		// again then. No connection is open: the refused Dial was not
		// carried out.
		out = s.enter(out, StateSessionLimit)
		return append(out, Dial{After: in.Wait, URL: s.dialURL, Resume: s.id != "", Reason: reasonSessionLimit})
	case Shutdown:
		// It may come twice: from the drain's own goroutine while a
		// connection ends, and again from the driver, which must then get
		// its Stop.
		s.stopping = true
		if !s.connected {
			return s.stop(out, nil)
		}
		if s.closing != nil {
			return out // the Closed of the close under way ends the shard
		}
		if s.final {
			return append(out, Close{closeNormal, "resharded: session ended for good"})
		}
		return append(out, Close{closeResumable, "draining"})
	}
	panic(fmt.Sprintf("shard: unknown session input %T", in))
}

func (s *Session) onHello(out []Action, in Hello) []Action {
	if s.hello || s.closing != nil {
		return out // a second HELLO on one connection changes nothing
	}
	s.hello = true
	first := time.Duration(s.cfg.Rand() * float64(in.Interval))
	out = append(out, StartHeartbeat{First: first, Interval: in.Interval})
	if s.id != "" {
		out = s.enter(out, StateResuming)
		_, acked, _ := s.acks.snapshot()
		return append(out, SendResume{SessionID: s.id, Seq: acked})
	}
	out = s.enter(out, StateIdentifying)
	return append(out, SendIdentify{})
}

// onHeartbeatDue sends the timed heartbeat, or closes a zombie connection:
// a heartbeat from the previous tick is still unacknowledged. Heartbeats
// Discord asked for (op 1) in between count as sent but do not move the
// mark, so one sent just before the tick cannot make the tick a zombie.
func (s *Session) onHeartbeatDue(out []Action, in HeartbeatDue) []Action {
	if !s.hello || s.closing != nil {
		return out
	}
	if s.acked < s.mark && !in.ReadsPaused {
		out = append(out, Close{closeResumable, "heartbeat not acknowledged"})
		return s.closeThen(out, s.retry("zombie", errors.New("heartbeat not acknowledged: zombie connection")))
	}
	s.beats++
	s.mark = s.beats
	s.sentAt = in.At
	return append(out, SendHeartbeat{s.seq})
}

func (s *Session) onDispatch(out []Action, d *Dispatch) []Action {
	s.see(d.Seq)
	switch d.Type {
	case "READY":
		if d.Ready == nil {
			// No session id: nothing to resume, nothing to publish.
			out = append(out, Close{closeResumable, "malformed READY"})
			return s.closeThen(out, s.renew("bad_ready", d.Err))
		}
		s.id, s.resumeURL = d.Ready.SessionID, d.Ready.ResumeGatewayURL
		s.acks.reset(0)
		s.acks.add(d.Seq, true)
		s.healthy, s.attempt = true, 0
		return s.enter(out, StateReady)
	case "RESUMED":
		s.acks.add(d.Seq, true)
		s.healthy, s.attempt = true, 0
		return s.enter(out, StateReady)
	}
	if d.Event == nil || d.Err != nil {
		// Not published (an unrouted type, or data that no replay would
		// fix): the resume point may pass it.
		s.acks.add(d.Seq, true)
		return out
	}
	s.acks.add(d.Seq, false)
	gen, _, _ := s.acks.snapshot()
	d.published = Published{Event: d.Event, Seq: d.Seq, Gen: gen}
	return append(out, Publish{&d.published})
}

func (s *Session) onClosed(out []Action, in Closed) []Action {
	s.connected = false
	if next := s.closing; next != nil {
		s.closing = nil
		if s.stopping {
			return s.stop(out, nil)
		}
		return s.dial(out, next.After, next.Reason, next.Err)
	}
	if s.stopping {
		return s.stop(out, nil)
	}
	rule, known := closeCodes[in.Code]
	switch {
	case known && rule.rule == closeFatal:
		out = s.enter(out, StateFailed)
		return append(out, Stop{fmt.Errorf("%s (close code %d)", rule.msg, in.Code)})
	case known && rule.rule == closeIdentify:
		next := s.renew("close_"+strconv.Itoa(in.Code), fmt.Errorf("session cannot be resumed: %s (close code %d)", rule.msg, in.Code))
		return s.dial(out, next.After, next.Reason, next.Err)
	case in.Code > 0:
		return s.connectionFailed(out, "close_"+strconv.Itoa(in.Code), in.Err)
	default:
		return s.connectionFailed(out, "dropped", in.Err)
	}
}

// connectionFailed ends a connection that failed without a close from us:
// reconnect after backoff, resuming if there is a session. A resume URL that
// could not even be dialed is dropped, so the next attempt RESUMEs the same
// session on the main gateway URL instead of retrying a dead host forever.
func (s *Session) connectionFailed(out []Action, reason string, err error) []Action {
	if reason == "dial" {
		s.dropDeadResumeURL()
	}
	next := s.retry(reason, err)
	return s.dial(out, next.After, next.Reason, next.Err)
}

// dropDeadResumeURL forgets a resume URL that did not answer: the session
// is resumed on the main gateway URL instead.
func (s *Session) dropDeadResumeURL() {
	if s.resumeURL != "" && s.dialURL == s.resumeURL {
		s.resumeURL = ""
	}
}

// retry is the next connection after a failure the session survives.
func (s *Session) retry(reason string, err error) Dial {
	d := s.cfg.Backoff.delay(s.attempt, s.cfg.Rand)
	s.attempt++
	return Dial{After: d, Reason: reason, Err: err}
}

// renew forgets the session: the next connection IDENTIFYs, after the
// pause Discord asks for.
func (s *Session) renew(reason string, err error) Dial {
	next := s.retry(reason, err)
	if d := s.cfg.InvalidSessionDelay(); d > next.After {
		next.After = d
	}
	s.id, s.resumeURL, s.seq = "", "", 0
	s.acks.reset(0)
	return next
}

// closeThen records what follows the close the session just asked for; it
// is returned when the connection's Closed arrives.
func (s *Session) closeThen(out []Action, next Dial) []Action {
	s.closing = &next
	return out
}

// dial ends the current connection's bookkeeping and plans the next one.
func (s *Session) dial(out []Action, after time.Duration, reason string, err error) []Action {
	s.hello, s.healthy = false, false
	s.beats, s.acked, s.mark = 0, 0, 0
	url := s.cfg.GatewayURL
	if s.id != "" && s.resumeURL != "" {
		url = s.resumeURL
	}
	s.dialURL = url
	st := StateConnecting
	if reason != "" {
		st = StateReconnecting
	}
	out = s.enter(out, st)
	return append(out, Dial{After: after, URL: url, Resume: s.id != "", Reason: reason, Err: err})
}

func (s *Session) stop(out []Action, err error) []Action {
	s.connected, s.closing = false, nil
	out = s.enter(out, StateDrained)
	return append(out, Stop{err})
}

func (s *Session) enter(out []Action, st State) []Action {
	if s.state == st {
		return out
	}
	s.state = st
	return append(out, Enter{st})
}

// see records the last sequence received, which heartbeats carry.
func (s *Session) see(seq int64) {
	if seq > s.seq {
		s.seq = seq
	}
}

// State returns the session's state.
func (s *Session) State() State { return s.state }

// Resumable reports whether the session can be RESUMEd.
func (s *Session) Resumable() bool { return s.id != "" }

// Latency is the time between the last timed heartbeat and its ACK.
func (s *Session) Latency() time.Duration { return s.latency }

// Seqs returns the resume point (the last contiguous sequence whose event
// was acked or needs none) and the last sequence received.
func (s *Session) Seqs() (acked, seen int64) {
	_, acked, seen = s.acks.snapshot()
	return acked, seen
}

// Handoff returns the record a successor needs to RESUME this session, or
// nil when there is none.
func (s *Session) Handoff(now time.Time) *Handoff {
	if s.id == "" || s.final {
		return nil
	}
	acked, _ := s.Seqs()
	return &Handoff{SessionID: s.id, ResumeGatewayURL: s.resumeURL, Seq: acked, Time: now.UTC()}
}

// EndForGood makes the coming Shutdown close the connection with 1000, which
// ends the session at Discord, and leaves no hand-off record: the shard's
// generation was resharded away, nobody will resume it.
func (s *Session) EndForGood() { s.final = true }

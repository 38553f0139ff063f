// Package shard runs one Discord gateway shard: the connection (arikawa's
// ws.Connection, extended with zlib-stream compression and resumable close
// codes), the session lifecycle (IDENTIFY, READY, heartbeats, RESUME on the
// resume_gateway_url, reconnect with backoff) and the hand-off of each
// dispatch to the publisher, tracking which sequence JetStream has acked.
package shard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/diamondburned/arikawa/v3/gateway"
	"github.com/diamondburned/arikawa/v3/utils/json/option"
	"github.com/diamondburned/arikawa/v3/utils/ws"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/shardpool/gateway/service/event"
	"github.com/shardpool/gateway/service/publish"
)

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
)

// Intents is what the gateway asks Discord for: GUILDS | GUILD_MEMBERS.
const Intents = gateway.IntentGuilds | gateway.IntentGuildMembers

// closeResumable is the close code the shard sends when it leaves a
// connection it wants to resume later. 1000 and 1001 would end the session.
const closeResumable = 4000

// fatalCloseCodes are the close codes after which reconnecting cannot help;
// the message says what the operator has to fix.
var fatalCloseCodes = map[int]string{
	4004: "authentication failed: check DISCORD_TOKEN",
	4010: "invalid shard sent: check TOTAL_SHARDS and POOL_ID",
	4011: "sharding required: the bot has too many guilds for TOTAL_SHARDS; raise it or use auto",
	4012: "invalid gateway API version",
	4013: "invalid intents",
	4014: "disallowed intents: enable the privileged Server Members intent for the bot in the Discord developer portal",
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

// Backoff shapes reconnect delays: exponential from Base, capped at Max, with
// jitter.
type Backoff struct {
	Base, Max time.Duration
}

// Delay returns the delay before reconnect attempt n (0-based): a random
// value in [d/2, d] with d = min(Max, Base×2^n); attempt 0 is in [0, Base).
func (b Backoff) Delay(n int) time.Duration {
	if b.Base <= 0 {
		return 0
	}
	if n == 0 {
		return time.Duration(rand.Int64N(int64(b.Base)))
	}
	d := b.Base
	for i := 0; i < n && d < b.Max; i++ {
		d *= 2
	}
	if b.Max > 0 && d > b.Max {
		d = b.Max
	}
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// Config configures one shard.
type Config struct {
	ID, Total   int
	Token       string // never logged
	GatewayURL  string // from /gateway/bot, without query
	Compression string // CompressionZlibStream or CompressionNone
	Limits      Limits
	Backoff     Backoff
	// HelloTimeout bounds the wait for HELLO after a dial.
	HelloTimeout time.Duration
	// InvalidSessionDelay returns the pause before a new IDENTIFY after
	// op 9 d=false or close 4007/4009 (Discord asks for 1–5 s).
	InvalidSessionDelay func() time.Duration

	Identify  IdentifyLimiter
	Publisher publish.Publisher
	Metrics   *Metrics
	Logger    log.Logger

	// Resume, when set, makes the first connection RESUME this session.
	Resume *Handoff
}

// Shard is one gateway shard. Run drives it; the other methods are safe to
// call concurrently.
type Shard struct {
	cfg    Config
	label  string // shard id as a metric label
	logger log.Logger

	acks    ackTracker
	lastSeq atomic.Int64 // last sequence seen, for heartbeats
	routed  atomic.Uint64

	mu        sync.Mutex
	state     State
	sessionID string
	resumeURL string
	guilds    map[uint64]struct{}
	lastErr   string
	heart     *heart
}

// New returns a shard that has not started.
func New(cfg Config) *Shard {
	if cfg.Limits == (Limits{}) {
		cfg.Limits = DefaultLimits
	}
	if cfg.HelloTimeout == 0 {
		cfg.HelloTimeout = 30 * time.Second
	}
	if cfg.InvalidSessionDelay == nil {
		cfg.InvalidSessionDelay = func() time.Duration { return time.Second + rand.N(4*time.Second) }
	}
	if cfg.Compression == "" {
		cfg.Compression = CompressionZlibStream
	}
	s := &Shard{
		cfg:    cfg,
		label:  strconv.Itoa(cfg.ID),
		logger: log.With(cfg.Logger, "shard_id", cfg.ID),
		state:  StateConnecting,
		guilds: map[uint64]struct{}{},
	}
	if h := cfg.Resume; h != nil && h.SessionID != "" {
		s.sessionID, s.resumeURL = h.SessionID, h.ResumeGatewayURL
		s.acks.reset(h.Seq)
		s.lastSeq.Store(h.Seq)
	}
	s.cfg.Metrics.Ready.WithLabelValues(s.label).Set(0)
	s.cfg.Metrics.Guilds.WithLabelValues(s.label).Set(0)
	return s
}

// ID returns the shard id.
func (s *Shard) ID() int { return s.cfg.ID }

type action int

const (
	actResume   action = iota // reconnect, resuming the session if there is one
	actIdentify               // the session is gone: reconnect and IDENTIFY after a pause
	actFatal                  // stop: reconnecting cannot help
	actStop                   // ctx ended (drain or shutdown)
)

type outcome struct {
	act     action
	reason  string // bounded, for the reconnects metric
	err     error
	healthy bool // the connection reached READY or RESUMED
}

// Run connects and keeps the shard connected until ctx ends (the shard is
// then drained: its session stays resumable) or a fatal close code arrives.
func (s *Shard) Run(ctx context.Context) error {
	attempt := 0
	for {
		if ctx.Err() != nil {
			s.setState(StateDrained)
			return nil
		}
		out := s.connect(ctx)
		switch out.act {
		case actStop:
			s.setState(StateDrained)
			return nil
		case actFatal:
			s.setState(StateFailed)
			s.setErr(out.err)
			level.Error(s.logger).Log("msg", "shard stopped", "err", out.err)
			return out.err
		}
		if out.err != nil {
			s.setErr(out.err)
		}
		if out.healthy {
			attempt = 0
		}
		delay := s.cfg.Backoff.Delay(attempt)
		attempt++
		if out.act == actIdentify {
			s.invalidate()
			if d := s.cfg.InvalidSessionDelay(); d > delay {
				delay = d
			}
		}
		s.cfg.Metrics.Reconnects.WithLabelValues(s.label, out.reason).Inc()
		level.Info(s.logger).Log("msg", "reconnecting", "reason", out.reason, "err", out.err, "delay", delay.Round(time.Millisecond), "resume", s.Resumable())
		s.setState(StateReconnecting)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
}

// connect runs one websocket connection from dial to close.
func (s *Shard) connect(ctx context.Context) outcome {
	s.mu.Lock()
	resume := s.sessionID != ""
	addr := s.cfg.GatewayURL
	if resume && s.resumeURL != "" {
		addr = s.resumeURL
	}
	s.mu.Unlock()
	if resume {
		s.setState(StateResuming)
	} else {
		s.setState(StateConnecting)
	}

	// An identifying connection takes its turn in the identify bucket
	// before dialing, so the dial overlaps the previous shard's window.
	var permit Permit
	if !resume {
		s.setState(StateIdentifying)
		p, err := s.cfg.Identify.Acquire(ctx, s.cfg.ID)
		if err != nil {
			return outcome{act: actStop}
		}
		permit = p
		defer permit.Release(time.Time{})
	}

	var h *heart
	conn := NewConn(s.cfg.Compression, s.cfg.Limits, 3, func(op ws.OpCode, at time.Time) { h.control(op, at) }, s.preparer())
	conn.wireBytes = s.cfg.Metrics.WireBytes.WithLabelValues(s.label)
	h = newHeart(conn, &s.lastSeq, s.cfg.Metrics.HeartbeatLatency.WithLabelValues(s.label))
	s.mu.Lock()
	s.heart = h
	s.mu.Unlock()

	dialCtx, cancelDial := context.WithTimeout(ctx, 30*time.Second)
	ops, err := conn.Dial(dialCtx, gatewayQuery(addr, s.cfg.Compression))
	cancelDial()
	if err != nil {
		if ctx.Err() != nil {
			return outcome{act: actStop}
		}
		return outcome{act: actResume, reason: "dial", err: err}
	}
	connCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer conn.CloseWithCode(closeResumable, "reconnecting")

	// HELLO comes first on every connection.
	hello := time.NewTimer(s.cfg.HelloTimeout)
	defer hello.Stop()
	var interval time.Duration
	for interval == 0 {
		select {
		case <-ctx.Done():
			conn.CloseWithCode(closeResumable, "draining")
			return outcome{act: actStop}
		case <-hello.C:
			return outcome{act: actResume, reason: "hello_timeout", err: errors.New("no HELLO from the gateway")}
		case op, ok := <-ops:
			if !ok {
				return outcome{act: actResume, reason: "closed", err: errors.New("connection closed before HELLO")}
			}
			switch data := op.Data.(type) {
			case *gateway.HelloEvent:
				interval = data.HeartbeatInterval.Duration()
			case *ws.CloseEvent:
				return s.closed(data, h)
			case *MalformedFrame:
				s.malformed(data)
			}
		}
	}
	go h.run(connCtx, interval)

	if resume {
		if err := s.sendResume(ctx, conn); err != nil {
			return s.sendFailed(ctx, err)
		}
	} else {
		if err := s.identify(ctx, conn, permit); err != nil {
			return s.sendFailed(ctx, err)
		}
	}

	healthy := false
	for {
		select {
		case <-ctx.Done():
			conn.CloseWithCode(closeResumable, "draining")
			return outcome{act: actStop}
		case op, ok := <-ops:
			if !ok {
				return outcome{act: actResume, reason: "closed", err: errors.New("connection closed"), healthy: healthy}
			}
			switch data := op.Data.(type) {
			case *Dispatch:
				if s.dispatch(ctx, data) {
					healthy = true
				}
			case *gateway.ReconnectEvent:
				conn.CloseWithCode(closeResumable, "reconnect requested")
				return outcome{act: actResume, reason: "op7_reconnect", healthy: healthy}
			case *gateway.InvalidSessionEvent:
				if *data {
					conn.CloseWithCode(closeResumable, "invalid session, resuming")
					return outcome{act: actResume, reason: "op9_resumable", healthy: healthy}
				}
				conn.CloseWithCode(closeResumable, "invalid session")
				return outcome{act: actIdentify, reason: "op9_invalid_session", err: errors.New("session invalidated by Discord (op 9)"), healthy: healthy}
			case *ws.CloseEvent:
				out := s.closed(data, h)
				out.healthy = healthy
				return out
			case *MalformedFrame:
				s.malformed(data)
			case *gateway.HelloEvent:
				// A second HELLO on one connection is harmless; ignore it.
			}
		}
	}
}

func (s *Shard) sendFailed(ctx context.Context, err error) outcome {
	if ctx.Err() != nil {
		return outcome{act: actStop}
	}
	return outcome{act: actResume, reason: "send", err: err}
}

// closed classifies the end of a connection.
func (s *Shard) closed(ev *ws.CloseEvent, h *heart) outcome {
	if msg, fatal := fatalCloseCodes[ev.Code]; fatal {
		return outcome{act: actFatal, err: fmt.Errorf("%s (close code %d)", msg, ev.Code)}
	}
	switch {
	case errors.Is(ev.Err, ErrTooLarge):
		return outcome{act: actResume, reason: "frame_too_large", err: ev.Err}
	case h.zombie.Load():
		return outcome{act: actResume, reason: "zombie", err: errors.New("heartbeat not acknowledged: zombie connection")}
	case ev.Code == 4007 || ev.Code == 4009:
		return outcome{act: actIdentify, reason: "close_" + strconv.Itoa(ev.Code), err: fmt.Errorf("session cannot be resumed (close code %d)", ev.Code)}
	case ev.Code > 0:
		return outcome{act: actResume, reason: "close_" + strconv.Itoa(ev.Code), err: ev}
	default:
		return outcome{act: actResume, reason: "dropped", err: ev}
	}
}

func (s *Shard) malformed(m *MalformedFrame) {
	s.cfg.Metrics.FramesMalformed.WithLabelValues(s.label, m.Reason).Inc()
	level.Warn(s.logger).Log("msg", "malformed gateway frame skipped", "reason", m.Reason, "err", m.Err)
}

func (s *Shard) identify(ctx context.Context, conn *Conn, permit Permit) error {
	s.setState(StateIdentifying)
	cmd := gateway.IdentifyCommand{
		Token:      s.cfg.Token,
		Properties: gateway.IdentifyProperties{gateway.IdentifyOS: runtime.GOOS, gateway.IdentifyBrowser: "shardpool", gateway.IdentifyDevice: "shardpool"},
		Shard:      &gateway.Shard{s.cfg.ID, s.cfg.Total},
		Intents:    option.NewUint(uint(Intents)),
	}
	b, err := json.Marshal(ws.Op{Code: opIdentify, Data: &cmd})
	if err != nil {
		return fmt.Errorf("encode IDENTIFY: %w", err)
	}
	if err := permit.Wait(ctx); err != nil {
		return err
	}
	if err := conn.Send(ctx, b); err != nil {
		return fmt.Errorf("send IDENTIFY: %w", err)
	}
	// The window counts from after the write, never from before it.
	permit.Release(time.Now())
	s.cfg.Metrics.Identifies.WithLabelValues(s.label).Inc()
	s.cfg.Metrics.SessionStarts.Dec()
	level.Info(s.logger).Log("msg", "identified", "total_shards", s.cfg.Total)
	return nil
}

func (s *Shard) sendResume(ctx context.Context, conn *Conn) error {
	s.mu.Lock()
	sessionID := s.sessionID
	s.mu.Unlock()
	_, acked, _ := s.acks.snapshot()
	b, err := json.Marshal(ws.Op{Code: opResume, Data: &gateway.ResumeCommand{Token: s.cfg.Token, SessionID: sessionID, Sequence: acked}})
	if err != nil {
		return fmt.Errorf("encode RESUME: %w", err)
	}
	if err := conn.Send(ctx, b); err != nil {
		return fmt.Errorf("send RESUME: %w", err)
	}
	level.Info(s.logger).Log("msg", "resuming", "seq", acked)
	return nil
}

// Ready is the part of READY the shard keeps.
type Ready struct {
	SessionID        string `json:"session_id"`
	ResumeGatewayURL string `json:"resume_gateway_url"`
	Guilds           []struct {
		ID string `json:"id"`
	} `json:"guilds"`
}

// preparer returns the read goroutine's half of dispatch handling for one
// connection: it builds each event, with the session the connection is on
// (the one it resumes, or the one its READY starts).
func (s *Shard) preparer() Preparer {
	s.mu.Lock()
	session := s.sessionID
	s.mu.Unlock()
	return func(t string, seq int64, d []byte, at time.Time) *Dispatch {
		disp := &Dispatch{Type: t, Seq: seq, ReceivedAt: at}
		if t == "READY" {
			var r Ready
			if err := json.Unmarshal(d, &r); err != nil || r.SessionID == "" {
				disp.Err = fmt.Errorf("bad READY: %v", err)
				return disp
			}
			session, disp.Ready = r.SessionID, &r
			return disp
		}
		disp.Event, _, disp.Err = event.Build(s.cfg.ID, session, seq, t, d, at)
		return disp
	}
}

// dispatch handles one op 0 on the shard's goroutine. It reports whether
// the session became ready.
func (s *Shard) dispatch(ctx context.Context, d *Dispatch) (ready bool) {
	s.lastSeq.Store(d.Seq)
	s.cfg.Metrics.EventsReceived.WithLabelValues(s.label, typeLabel(d.Type)).Inc()
	switch d.Type {
	case "READY":
		if d.Ready == nil {
			s.malformed(&MalformedFrame{Reason: "payload", Err: d.Err})
			return false
		}
		r := d.Ready
		s.acks.reset(0)
		s.acks.add(d.Seq, true)
		s.mu.Lock()
		s.sessionID, s.resumeURL = r.SessionID, r.ResumeGatewayURL
		s.guilds = make(map[uint64]struct{}, len(r.Guilds))
		for _, g := range r.Guilds {
			if id, err := strconv.ParseUint(g.ID, 10, 64); err == nil {
				s.guilds[id] = struct{}{}
			}
		}
		n := len(s.guilds)
		s.lastErr = ""
		s.mu.Unlock()
		s.cfg.Metrics.Guilds.WithLabelValues(s.label).Set(float64(n))
		s.setState(StateReady)
		level.Info(s.logger).Log("msg", "ready", "guilds", n)
		return true
	case "RESUMED":
		s.acks.add(d.Seq, true)
		s.setState(StateReady)
		level.Info(s.logger).Log("msg", "resumed", "seq", d.Seq)
		return true
	}
	if d.Err != nil {
		// Nothing to publish and nothing a replay would fix: count it, log it
		// and let the resume point move past it.
		s.malformed(&MalformedFrame{Reason: "payload", Err: fmt.Errorf("%s seq %d: %w", d.Type, d.Seq, d.Err)})
		s.acks.add(d.Seq, true)
		return false
	}
	ev := d.Event
	if ev == nil {
		level.Debug(s.logger).Log("msg", "dispatch not published", "type", d.Type, "seq", d.Seq)
		s.acks.add(d.Seq, true)
		return false
	}
	if d.Type == "GUILD_CREATE" || d.Type == "GUILD_DELETE" {
		s.trackGuild(d.Type, ev.GuildID)
	}
	s.acks.add(d.Seq, false)
	gen, _, _ := s.acks.snapshot()
	seq := d.Seq
	err := s.cfg.Publisher.Publish(ctx, ev, func(err error) {
		if err == nil {
			s.acks.done(gen, seq)
			s.routed.Add(1)
		}
	})
	if err != nil && ctx.Err() == nil {
		// Not accepted and not a shutdown: the resume point stays before it,
		// so a later RESUME replays it.
		level.Error(s.logger).Log("msg", "event not accepted for publishing", "event_type", ev.Type, "seq", seq, "err", err)
	}
	return false
}

// trackGuild keeps the shard's guild count: a GUILD_CREATE adds the guild, a
// published GUILD_DELETE (a real leave) removes it. A GUILD_DELETE with
// unavailable: true (an outage) is never published, so the guild stays.
func (s *Shard) trackGuild(t, guildID string) {
	id, err := strconv.ParseUint(guildID, 10, 64)
	if err != nil {
		return
	}
	s.mu.Lock()
	if t == "GUILD_CREATE" {
		s.guilds[id] = struct{}{}
	} else {
		delete(s.guilds, id)
	}
	n := len(s.guilds)
	s.mu.Unlock()
	s.cfg.Metrics.Guilds.WithLabelValues(s.label).Set(float64(n))
}

func (s *Shard) invalidate() {
	s.mu.Lock()
	s.sessionID, s.resumeURL = "", ""
	s.mu.Unlock()
	s.acks.reset(0)
	s.lastSeq.Store(0)
}

func (s *Shard) setState(st State) {
	s.mu.Lock()
	s.state = st
	s.mu.Unlock()
	ready := 0.0
	if st == StateReady {
		ready = 1
	}
	s.cfg.Metrics.Ready.WithLabelValues(s.label).Set(ready)
}

func (s *Shard) setErr(err error) {
	s.mu.Lock()
	s.lastErr = err.Error()
	s.mu.Unlock()
}

// Ready reports whether the shard's session is READY.
func (s *Shard) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state == StateReady
}

// Resumable reports whether the shard holds a session it can RESUME.
func (s *Shard) Resumable() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessionID != ""
}

// Guilds returns the number of guilds the shard holds.
func (s *Shard) Guilds() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.guilds)
}

// Handoff returns the record a successor needs to RESUME this shard's
// session, or nil when there is no session.
func (s *Shard) Handoff() *Handoff {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessionID == "" {
		return nil
	}
	_, acked, _ := s.acks.snapshot()
	return &Handoff{SessionID: s.sessionID, ResumeGatewayURL: s.resumeURL, Seq: acked, Time: time.Now().UTC()}
}

// Status is one shard's entry in /status. It holds no secret.
type Status struct {
	ID                 int     `json:"id"`
	State              State   `json:"state"`
	Resumable          bool    `json:"resumable"`
	LastSeq            int64   `json:"last_seq"`
	LastAckedSeq       int64   `json:"last_acked_seq"`
	HeartbeatLatencyMS float64 `json:"heartbeat_latency_ms"`
	Guilds             int     `json:"guilds"`
	EventsRouted       uint64  `json:"events_routed"`
	LastError          string  `json:"last_error,omitempty"`
}

// Status returns a snapshot of the shard.
func (s *Shard) Status() Status {
	_, acked, seen := s.acks.snapshot()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{
		ID: s.cfg.ID, State: s.state, Resumable: s.sessionID != "",
		LastSeq: seen, LastAckedSeq: acked, Guilds: len(s.guilds),
		EventsRouted: s.routed.Load(), LastError: s.lastErr,
	}
	if s.heart != nil {
		st.HeartbeatLatencyMS = float64(s.heart.latency.Load()) / 1e6
	}
	return st
}

// gatewayQuery adds the version, encoding and compression parameters.
func gatewayQuery(addr, compression string) string {
	u, err := url.Parse(addr)
	if err != nil {
		return addr
	}
	q := u.Query()
	q.Set("v", "10")
	q.Set("encoding", "json")
	if compression != CompressionNone {
		q.Set("compress", compression)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

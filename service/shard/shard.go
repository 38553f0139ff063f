// Package shard runs one Discord gateway shard. The protocol is session.go:
// a state machine with no I/O. This file is its driver: it dials, reads
// payloads off the connection (conn.go, frames.go), turns them into the
// session's inputs, and carries out the actions the session returns
// (sending, closing, publishing each dispatch, heartbeating, identifying
// when the identify limiter allows).
//
// Goroutines per connection: the reader (Run's own goroutine, which also
// publishes, so a full publish buffer pauses the socket reads: backpressure
// instead of dropping), the heartbeat timer, and the identify wait. The
// session is shared between them under mu.
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
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardpool/gateway/service/event"
	"github.com/shardpool/gateway/service/publish"
)

// Intents is what the gateway asks Discord for: GUILDS | GUILD_MEMBERS.
const Intents = gateway.IntentGuilds | gateway.IntentGuildMembers

// dialTimeout bounds opening the websocket.
const dialTimeout = 30 * time.Second

func randFloat() float64 { return rand.Float64() }

// Backoff shapes reconnect delays: exponential from Base, capped at Max, with
// jitter.
type Backoff struct {
	Base, Max time.Duration
}

// Delay returns the delay before reconnect attempt n (0-based): a random
// value in [d/2, d] with d = min(Max, Base×2^n); attempt 0 is in [0, Base).
func (b Backoff) Delay(n int) time.Duration { return b.delay(n, randFloat) }

func (b Backoff) delay(n int, rnd func() float64) time.Duration {
	if b.Base <= 0 {
		return 0
	}
	if n == 0 {
		return time.Duration(rnd() * float64(b.Base))
	}
	d := b.Base
	for i := 0; i < n && d < b.Max; i++ {
		d *= 2
	}
	if b.Max > 0 && d > b.Max {
		d = b.Max
	}
	return d/2 + time.Duration(rnd()*float64(d/2+1))
}

// Config configures one shard.
type Config struct {
	ID, Total   int
	Token       string // never logged
	GatewayURL  string // from /gateway/bot, without query
	Compression string // CompressionZlibStream, CompressionZstdStream or CompressionNone
	Limits      Limits
	Backoff     Backoff
	// HelloTimeout bounds the wait for HELLO after a dial.
	HelloTimeout time.Duration
	// InvalidSessionDelay returns the pause before a new IDENTIFY after
	// op 9 d=false or close 4007/4009 (Discord asks for 1–5 s).
	InvalidSessionDelay func() time.Duration

	Identify IdentifyLimiter
	// SessionStarts is the bot's daily session start budget (budget.go):
	// every IDENTIFY takes a start from it first. nil: not counted (tests).
	SessionStarts *SessionStarts
	Publisher     publish.Publisher
	Metrics       *Metrics
	Logger        log.Logger

	// RewriteEvent, when set, sees each built event with its session and
	// dispatch (t, d) before it is published, on the read goroutine in seq
	// order, and returns the event to publish (nil: none). A resharding's
	// overlap gives events content-derived ids with it
	// (cmd/gateway/reshard_ids.go).
	RewriteEvent func(ev *event.Event, session, t string, d []byte) *event.Event

	// Resume, when set, makes the first connection RESUME this session.
	Resume *Handoff

	// Commands: intents, extra events, presence and the command path
	// (commands.go).
	Commands CommandConfig
}

// Shard is one gateway shard. Run drives it; the other methods are safe to
// call concurrently.
type Shard struct {
	cfg    Config
	label  string // shard id as a metric label
	logger log.Logger
	routed atomic.Uint64

	mu      sync.Mutex
	sess    *Session
	guilds  map[uint64]struct{}
	lastErr string

	// start is the session start reserved for the connection being run,
	// when it will IDENTIFY: Run's goroutine sets and releases it, the
	// identify goroutine it starts spends it.
	start *SessionStart

	cmds commands // the command path (commands.go)

	deliveries sync.Pool // of *delivery
}

// New returns a shard that has not started.
func New(cfg Config) *Shard {
	if cfg.Limits == (Limits{}) {
		cfg.Limits = DefaultLimits
	}
	if cfg.HelloTimeout == 0 {
		cfg.HelloTimeout = 30 * time.Second
	}
	if cfg.Compression == "" {
		cfg.Compression = CompressionZlibStream
	}
	s := &Shard{
		cfg:    cfg,
		label:  strconv.Itoa(cfg.ID),
		logger: log.With(cfg.Logger, "shard_id", cfg.ID),
		guilds: map[uint64]struct{}{},
		sess: NewSession(SessionConfig{
			GatewayURL:          cfg.GatewayURL,
			Backoff:             cfg.Backoff,
			InvalidSessionDelay: cfg.InvalidSessionDelay,
			Resume:              cfg.Resume,
		}),
	}
	s.deliveries.New = s.newDelivery
	s.cfg.Metrics.Ready.WithLabelValues(s.label).Set(0)
	s.cfg.Metrics.Guilds.WithLabelValues(s.label).Set(0)
	s.cfg.Metrics.HeartbeatLatency.WithLabelValues(s.label).Set(0)
	return s
}

// ID returns the shard id.
func (s *Shard) ID() int { return s.cfg.ID }

// Run connects and keeps the shard connected until ctx ends (the shard is
// then drained: its session stays resumable) or a fatal close code arrives.
func (s *Shard) Run(ctx context.Context) error {
	defer s.running()()
	var buf []Action
	end := s.step(ctx, nil, Start{}, &buf)
	for {
		switch a := end.(type) {
		case Stop:
			if a.Err != nil {
				s.setErr(a.Err)
				level.Error(s.logger).Log("msg", "shard stopped", "err", a.Err)
			}
			return a.Err
		case Dial:
			if a.Reason == reasonSessionLimit {
				level.Debug(s.logger).Log("msg", "waiting for the session start budget to reset", "delay", a.After.Round(time.Millisecond))
			} else if a.Reason != "" {
				s.cfg.Metrics.Reconnects.WithLabelValues(s.label, a.Reason).Inc()
				if a.Err != nil {
					s.setErr(a.Err)
				}
				level.Info(s.logger).Log("msg", "reconnecting", "reason", a.Reason, "err", a.Err, "delay", a.After.Round(time.Millisecond), "resume", a.Resume)
			}
			if !sleep(ctx, a.After) {
				end = s.step(ctx, nil, Shutdown{}, &buf)
				continue
			}
			if refused := s.reserveStart(ctx, a); refused != nil {
				end = s.step(ctx, nil, refused, &buf)
				continue
			}
			end = s.connect(ctx, a)
			s.start.Release() // the connection ended without sending IDENTIFY
			s.start = nil
		default:
			// Not reached: the session answers Start, Closed, DialFailed,
			// SessionLimited and Shutdown with a Dial or a Stop. Stop
			// loudly rather than spin.
			err := fmt.Errorf("shard: the session returned %T where a Dial or a Stop was due", end)
			level.Error(s.logger).Log("msg", "shard stopped", "err", err)
			return err
		}
	}
}

// reserveStart takes the session start that a Dial which will IDENTIFY
// spends, before dialing, so that no connection is held while the budget
// is at its reserve. It returns the input to feed instead of dialing:
// SessionLimited until the reset, or Shutdown when ctx ended.
func (s *Shard) reserveStart(ctx context.Context, d Dial) Input {
	if d.Resume || s.cfg.SessionStarts == nil {
		return nil
	}
	start, err := s.cfg.SessionStarts.Reserve(ctx, s.cfg.ID)
	var limit *SessionLimitError
	switch {
	case errors.As(err, &limit):
		s.setErr(limit)
		return SessionLimited{Wait: limit.Wait}
	case err != nil:
		return Shutdown{} // Reserve retries everything else until ctx ends
	}
	s.start = start
	return nil
}

// link is one connection and the goroutines that live as long as it does.
type link struct {
	conn *conn
	ctx  context.Context // ends with the connection
	wg   sync.WaitGroup
}

// connect runs one websocket connection from dial to close and returns what
// the session wants next (Dial or Stop).
func (s *Shard) connect(ctx context.Context, d Dial) Action {
	var buf []Action
	dialCtx, cancelDial := context.WithTimeout(ctx, dialTimeout)
	c, err := dial(dialCtx, gatewayQuery(d.URL, s.cfg.Compression))
	cancelDial()
	if err != nil {
		if ctx.Err() != nil {
			return s.step(ctx, nil, Shutdown{}, &buf)
		}
		return s.step(ctx, nil, DialFailed{err}, &buf)
	}
	c.limiter = s.cfg.Commands.Budget.limiter()
	connCtx, cancel := context.WithCancel(ctx)
	l := &link{conn: c, ctx: connCtx}
	s.attach(l)
	defer s.detach(l)
	s.step(ctx, l, Dialed{}, &buf)
	// A drain or shutdown closes the socket, which ends the read loop.
	stop := context.AfterFunc(ctx, func() {
		var b []Action
		s.step(ctx, l, Shutdown{}, &b)
	})
	end := s.read(ctx, l)
	stop()
	cancel()
	c.close(0, "")
	l.wg.Wait()
	return end
}

// step feeds one input to the session and carries out the actions it
// returns, except the one that ends the connection (Dial or Stop), which it
// returns. buf is the calling goroutine's own action buffer.
func (s *Shard) step(ctx context.Context, l *link, in Input, buf *[]Action) (end Action) {
	s.mu.Lock()
	*buf = s.sess.Handle(in, *buf)
	for _, a := range *buf {
		if e, ok := a.(Enter); ok {
			s.entered(e.State)
		}
	}
	s.mu.Unlock()
	for _, a := range *buf {
		switch a := a.(type) {
		case Publish:
			s.publish(ctx, l, a)
		case SendHeartbeat:
			l.conn.send(l.ctx, heartbeatPayload(a.Seq), true) // a failure surfaces as a read error
		case SendResume:
			s.sendResume(l, a)
		case SendIdentify:
			l.wg.Add(1)
			go s.identify(l)
		case StartHeartbeat:
			l.wg.Add(1)
			go s.heartbeat(l, a)
		case Close:
			l.conn.close(a.Code, a.Reason)
		case Dial, Stop:
			end = a
		}
	}
	return end
}

// entered records a new state; mu is held.
func (s *Shard) entered(st State) {
	ready := 0.0
	switch st {
	case StateReady:
		ready = 1
		s.lastErr = ""
	}
	s.cfg.Metrics.Ready.WithLabelValues(s.label).Set(ready)
}

// read reads the connection until it ends, feeding the session, and returns
// what comes next.
func (s *Shard) read(ctx context.Context, l *link) Action {
	wire := s.cfg.Metrics.WireBytes.WithLabelValues(s.label)
	pr := newPayloadReader(l.conn.ws, s.cfg.Compression, s.cfg.Limits, func(n int) { wire.Add(float64(n)) })
	defer pr.Close()
	r := s.newReader(l)
	l.conn.ws.SetReadDeadline(time.Now().Add(s.cfg.HelloTimeout))
	for {
		msg, err := pr.Next()
		at := time.Now()
		if err != nil {
			if errors.Is(err, ErrTooLarge) {
				s.oversized(ctx, l, err, &r.buf)
				continue
			}
			if errors.Is(err, errBinaryOnPlain) {
				s.malformed("payload", err)
				continue
			}
			if !r.hello && isTimeout(err) {
				s.step(ctx, l, HelloTimeout{}, &r.buf)
			}
			return s.step(ctx, l, closedInput(err), &r.buf)
		}
		if end := s.payload(ctx, r, msg, at); end != nil {
			return end // not reached: only Closed ends a connection
		}
	}
}

// reader is a connection's read loop state, reused from one payload to the
// next so that a dispatch allocates nothing but its event.
type reader struct {
	l        *link
	session  string // the session events on this connection belong to
	hello    bool
	env      envelope
	dispatch Dispatch // the session and received() do not keep it
	buf      []Action
	received map[string]prometheus.Counter // by dispatch type
	// publishes is the router's Publishes, bound once.
	publishes func(t string) bool
}

func (s *Shard) newReader(l *link) *reader {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &reader{l: l, session: s.sess.id, received: map[string]prometheus.Counter{}, publishes: s.cfg.Commands.Events.Publishes}
}

// payload handles one payload, read at at; it returns the action that ends
// the connection, if it comes.
func (s *Shard) payload(ctx context.Context, r *reader, msg []byte, at time.Time) Action {
	if err := parseEnvelopeInto(msg, &r.env, r.publishes); err != nil {
		s.malformed("json", err)
		return nil
	}
	in, err := s.decode(r, at)
	if err != nil {
		s.malformed("payload", err)
		return nil
	}
	switch in := in.(type) {
	case Hello:
		if !r.hello {
			r.hello = true
			r.l.conn.ws.SetReadDeadline(time.Time{})
		}
	case *Dispatch:
		s.received(r, in)
	}
	if end := s.step(ctx, r.l, in, &r.buf); end != nil {
		return end
	}
	if _, ok := in.(HeartbeatAck); ok {
		s.mu.Lock()
		lat := s.sess.Latency()
		s.mu.Unlock()
		s.cfg.Metrics.HeartbeatLatency.WithLabelValues(s.label).Set(lat.Seconds())
	}
	return nil
}

// decode turns the payload in r.env into the session's input. Dispatches
// are built into events here, on the read goroutine, while d still lies in
// the read buffer; r.session tracks the session id the events belong to.
func (s *Shard) decode(r *reader, at time.Time) (Input, error) {
	env := &r.env
	switch env.Op {
	case opDispatch:
		if env.T == "" {
			return nil, errors.New("dispatch without a type")
		}
		d := &r.dispatch
		*d = Dispatch{Type: env.T, Seq: env.S, ReceivedAt: at}
		if env.T == "READY" {
			var rd Ready
			if err := json.Unmarshal(env.D, &rd); err != nil || rd.SessionID == "" {
				d.Err = fmt.Errorf("bad READY: %v", err)
				return d, nil
			}
			r.session, d.Ready = rd.SessionID, &rd
			return d, nil
		}
		if s.answered(env.T, env.D) {
			return d, nil // a reply to a worker's command: not published
		}
		d.Event, _, d.Err = s.cfg.Commands.Events.BuildScanned(s.cfg.ID, r.session, env.S, env.T, env.D, &env.Fields, at)
		if d.Event != nil && s.cfg.RewriteEvent != nil {
			d.Event = s.cfg.RewriteEvent(d.Event, r.session, env.T, env.D)
		}
		return d, nil
	case opHeartbeat:
		return HeartbeatRequest{}, nil
	case opHeartbeatAck:
		return HeartbeatAck{At: at}, nil
	case opHello:
		var h gateway.HelloEvent
		if err := json.Unmarshal(env.D, &h); err != nil || h.HeartbeatInterval <= 0 {
			return nil, fmt.Errorf("bad HELLO: %v", err)
		}
		return Hello{Interval: h.HeartbeatInterval.Duration()}, nil
	case opReconnect:
		return ReconnectRequest{}, nil
	case opInvalidSession:
		var resumable bool
		if len(env.D) > 0 {
			if err := json.Unmarshal(env.D, &resumable); err != nil {
				return nil, fmt.Errorf("bad INVALID_SESSION: %w", err)
			}
		}
		return InvalidSession{Resumable: resumable}, nil
	default:
		return nil, fmt.Errorf("unknown opcode %d", env.Op)
	}
}

// received counts a dispatch and keeps the guild count.
func (s *Shard) received(r *reader, d *Dispatch) {
	c := r.received[d.Type]
	if c == nil {
		c = s.cfg.Metrics.EventsReceived.WithLabelValues(s.label, typeLabel(d.Type))
		if len(r.received) < 64 { // a hostile peer's made-up types are not kept
			r.received[d.Type] = c
		}
	}
	c.Inc()
	switch {
	case d.Type == "READY" && d.Ready != nil:
		s.mu.Lock()
		s.guilds = make(map[uint64]struct{}, len(d.Ready.Guilds))
		for _, g := range d.Ready.Guilds {
			if id, err := strconv.ParseUint(g.ID, 10, 64); err == nil {
				s.guilds[id] = struct{}{}
			}
		}
		n := len(s.guilds)
		s.mu.Unlock()
		s.cfg.Metrics.Guilds.WithLabelValues(s.label).Set(float64(n))
		level.Info(s.logger).Log("msg", "ready", "guilds", n)
	case d.Type == "RESUMED":
		level.Info(s.logger).Log("msg", "resumed", "seq", d.Seq)
	case d.Err != nil:
		// Nothing to publish and nothing a replay would fix: the session
		// lets the resume point move past it.
		s.malformed("payload", fmt.Errorf("%s seq %d: %w", d.Type, d.Seq, d.Err))
	case d.Event != nil && (d.Type == "GUILD_CREATE" || d.Type == "GUILD_DELETE"):
		s.trackGuild(d.Type, d.Event.GuildID)
	case d.Event == nil:
		level.Debug(s.logger).Log("msg", "dispatch not published", "type", d.Type, "seq", d.Seq)
	}
}

// publish hands one event to the publisher. It blocks while the publish
// buffer is full, which pauses the socket reads; the conn remembers the
// pause so that an ACK left unread meanwhile is not taken for a zombie.
func (s *Shard) publish(ctx context.Context, l *link, p Publish) {
	// The socket has not been read since the event's frame was: that is
	// when the reads paused, and it saves a clock reading per event.
	start := p.Event.ReceivedAt
	if start.IsZero() {
		start = time.Now()
	}
	l.conn.publishStarted(start)
	d := s.deliveries.Get().(*delivery)
	d.p = *p.Published
	err := s.cfg.Publisher.Publish(ctx, p.Event, d.done)
	l.conn.publishEnded(start)
	if err != nil && ctx.Err() == nil {
		// Not accepted and not a shutdown: the resume point stays before
		// it, so a later RESUME replays it.
		level.Error(s.logger).Log("msg", "event not accepted for publishing", "event_type", p.Event.Type, "seq", p.Seq, "err", err)
	}
}

// delivery is one event on its way to JetStream: what its ack does.
// Deliveries are reused, with their done bound once, so that publishing an
// event allocates nothing.
type delivery struct {
	s    *Shard
	p    Published
	done publish.Done // acked
}

func (s *Shard) newDelivery() any {
	d := &delivery{s: s}
	d.done = d.acked
	return d
}

// acked is the event's done: the ack moves the resume point, and the event
// goes back to event's pool, the publish path being through with it.
func (d *delivery) acked(err error) {
	s, p := d.s, d.p
	d.p = Published{}
	s.deliveries.Put(d)
	if err != nil {
		return // not acked: the resume point stays before it
	}
	s.mu.Lock()
	s.sess.Ack(p.Gen, p.Seq)
	s.mu.Unlock()
	s.routed.Add(1)
	event.Release(p.Event)
}

// oversized handles a payload dropped for its size: counted, logged with
// its type and seq when its first bytes tell them, and passed by the resume
// point, so that Discord's replay of it after a RESUME cannot loop.
func (s *Shard) oversized(ctx context.Context, l *link, err error, buf *[]Action) {
	s.cfg.Metrics.FramesMalformed.WithLabelValues(s.label, "too_large").Inc()
	var prefix []byte
	var oe *OversizeError
	if errors.As(err, &oe) {
		prefix = oe.Prefix
	}
	t, seq, ok := peekEnvelope(prefix)
	if !ok || seq <= 0 {
		level.Error(s.logger).Log("msg", "oversized gateway message dropped", "err", err)
		return
	}
	level.Error(s.logger).Log("msg", "oversized gateway message dropped", "event_type", typeLabel(t), "seq", seq, "err", err)
	s.cfg.Metrics.EventsReceived.WithLabelValues(s.label, typeLabel(t)).Inc()
	s.step(ctx, l, Skipped{Seq: seq}, buf)
}

func (s *Shard) malformed(reason string, err error) {
	s.cfg.Metrics.FramesMalformed.WithLabelValues(s.label, reason).Inc()
	level.Warn(s.logger).Log("msg", "malformed gateway frame skipped", "reason", reason, "err", err)
}

// heartbeat is the connection's heartbeat timer.
func (s *Shard) heartbeat(l *link, a StartHeartbeat) {
	defer l.wg.Done()
	t := time.NewTimer(a.First)
	defer t.Stop()
	var buf []Action
	last := time.Now()
	for {
		select {
		case <-l.ctx.Done():
			return
		case now := <-t.C:
			paused := l.conn.pausedSince(last, now)
			last = now
			s.step(l.ctx, l, HeartbeatDue{At: now, ReadsPaused: paused}, &buf)
			t.Reset(a.Interval)
		}
	}
}

// identify waits for the shard's turn in its identify bucket, which it
// asks for only now that the connection said HELLO, so a slow dial never
// holds the bucket, and then sends IDENTIFY.
func (s *Shard) identify(l *link) {
	defer l.wg.Done()
	permit, err := s.cfg.Identify.Acquire(l.ctx, s.cfg.ID)
	if err != nil {
		return // the connection ended first
	}
	var sent time.Time
	defer func() { permit.Release(sent) }()
	if err := permit.Wait(l.ctx); err != nil {
		if l.ctx.Err() == nil {
			// The turn cannot be trusted (a fleet-wide limiter lost its
			// lock): leave this connection and take a new turn on the next.
			level.Warn(s.logger).Log("msg", "identify turn lost; reconnecting", "err", err)
			l.conn.close(closeResumable, "identify turn lost")
		}
		return
	}
	if s.cfg.SessionStarts != nil && s.start == nil {
		// Not reached: Run reserves before every Dial that will IDENTIFY.
		l.conn.close(closeResumable, "no session start reserved")
		return
	}
	cmd := gateway.IdentifyCommand{
		Token:      s.cfg.Token,
		Properties: gateway.IdentifyProperties{gateway.IdentifyOS: runtime.GOOS, gateway.IdentifyBrowser: "shardpool", gateway.IdentifyDevice: "shardpool"},
		Shard:      &gateway.Shard{s.cfg.ID, s.cfg.Total},
	}
	b, err := json.Marshal(struct {
		Op int `json:"op"`
		D  any `json:"d"`
	}{opIdentify, s.identifyData(&cmd)})
	if err != nil {
		l.conn.close(closeResumable, "encode IDENTIFY")
		return
	}
	// Spent from the first byte: a write that fails may still have reached
	// Discord, which counts the IDENTIFY.
	if s.start != nil {
		s.start.Spent()
	} else {
		s.cfg.Metrics.SessionStarts.Dec()
	}
	if err := l.conn.send(l.ctx, b, false); err != nil {
		l.conn.close(closeResumable, "send IDENTIFY failed")
		return
	}
	// The window counts from after the write, never from before it.
	sent = time.Now()
	s.cfg.Metrics.Identifies.WithLabelValues(s.label).Inc()
	level.Info(s.logger).Log("msg", "identified", "total_shards", s.cfg.Total)
}

func (s *Shard) sendResume(l *link, a SendResume) {
	b, err := json.Marshal(struct {
		Op int                    `json:"op"`
		D  *gateway.ResumeCommand `json:"d"`
	}{opResume, &gateway.ResumeCommand{Token: s.cfg.Token, SessionID: a.SessionID, Sequence: a.Seq}})
	if err == nil {
		err = l.conn.send(l.ctx, b, false)
	}
	if err != nil {
		l.conn.close(closeResumable, "send RESUME failed")
		return
	}
	level.Info(s.logger).Log("msg", "resuming", "seq", a.Seq)
}

// heartbeatPayload is op 1 with the last sequence received (null before any).
func heartbeatPayload(seq int64) []byte {
	b := make([]byte, 0, 32)
	b = append(b, `{"op":1,"d":`...)
	if seq > 0 {
		b = strconv.AppendInt(b, seq, 10)
	} else {
		b = append(b, "null"...)
	}
	return append(b, '}')
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

func (s *Shard) setErr(err error) {
	s.mu.Lock()
	s.lastErr = err.Error()
	s.mu.Unlock()
}

// Ready reports whether the shard's session is READY.
func (s *Shard) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sess.State() == StateReady
}

// Resumable reports whether the shard holds a session it can RESUME.
func (s *Shard) Resumable() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sess.Resumable()
}

// Guilds returns the number of guilds the shard holds.
func (s *Shard) Guilds() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.guilds)
}

// EndForGood makes the shard's coming stop (a drain) end its session at
// Discord (close 1000) instead of keeping it resumable; Handoff is nil from
// now on. For a resharding's retired generation.
func (s *Shard) EndForGood() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sess.EndForGood()
}

// Handoff returns the record a successor needs to RESUME this shard's
// session, or nil when there is no session.
func (s *Shard) Handoff() *Handoff {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sess.Handoff(time.Now())
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
	s.mu.Lock()
	defer s.mu.Unlock()
	acked, seen := s.sess.Seqs()
	return Status{
		ID: s.cfg.ID, State: s.sess.State(), Resumable: s.sess.Resumable(),
		LastSeq: seen, LastAckedSeq: acked, Guilds: len(s.guilds),
		HeartbeatLatencyMS: float64(s.sess.Latency()) / 1e6,
		EventsRouted:       s.routed.Load(), LastError: s.lastErr,
	}
}

// sleep waits d unless ctx ends first; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
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

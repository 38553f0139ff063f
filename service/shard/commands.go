package shard

// The command path: workers ask a shard to send a gateway command (op 3
// presence, op 4 voice state, op 8 request guild members) on the
// connection that holds the shard. Commands share the connection's send
// budget with heartbeats (which keep their reserve), IDENTIFY and RESUME;
// a command waits for room only within its request's deadline and only
// behind a bounded number of others. The replies to an op 8
// (GUILD_MEMBERS_CHUNK, or RATE_LIMITED) carry its nonce and go back to the
// asker instead of the streams.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/diamondburned/arikawa/v3/gateway"
	"github.com/diamondburned/arikawa/v3/utils/json/option"

	"github.com/shardpool/gateway/service/event"
)

const (
	// maxWaitingCommands bounds the commands waiting for the send budget on
	// one shard: past it a command is refused at once. 117 commands fit in
	// a window, so a longer queue could only wait past any sane deadline.
	maxWaitingCommands = 64
	// defaultCommandWait bounds the wait of a command whose request has no
	// deadline.
	defaultCommandWait = 5 * time.Second
	// notReadyRetry is the retry hint for a shard that is not READY: a
	// reconnect usually takes about that long.
	notReadyRetry = time.Second
	// replyTTL is how long after the request, or after its last chunk, an
	// asker is still waited on; later chunks for its nonce are dropped.
	replyTTL = time.Minute
)

// CommandConfig is what a shard asks Discord for and what the command path
// needs. The zero value asks for Intents, publishes the events table only
// and keeps no presence.
type CommandConfig struct {
	// Intents for IDENTIFY (GATEWAY_INTENTS); 0 means Intents.
	Intents gateway.Intents
	// Events routes dispatches to subjects (the table plus EXTRA_EVENTS);
	// nil routes the table only.
	Events *event.Router
	// Presence, shared by every shard of the process, goes into each
	// IDENTIFY once set.
	Presence *Presence
	// Metrics counts commands and shows the send budget; nil: none.
	Metrics *CommandMetrics
	// OnRun is called when the shard starts running and the function it
	// returns when it stops (drain, fence, fatal close): the NATS subject
	// of the shard's commands is subscribed only meanwhile.
	OnRun func(*Shard) (stop func())
	// Budget is the connection's send budget (zero: Discord's 120/60 s).
	Budget SendBudget
}

// CommandError is why a command was not sent. RetryAfter, when not zero,
// is when sending it again may work.
type CommandError struct {
	Result     string // the metric's result label
	Msg        string
	RetryAfter time.Duration
}

func (e *CommandError) Error() string { return e.Msg }

// Command results, as gateway_commands_total counts them.
const (
	ResultOK       = "ok"
	ResultInvalid  = "invalid"
	ResultNotReady = "not_ready"
	ResultNoBudget = "no_budget"
	ResultFailed   = "failed"
	// ResultRateLimited is an op 8 that Discord answered with RATE_LIMITED:
	// a reply to its asker, not a result of gateway_commands_total.
	ResultRateLimited = "rate_limited"
)

// Reply is one answer of Discord to a REQUEST_GUILD_MEMBERS: a
// GUILD_MEMBERS_CHUNK (Chunk is its d, valid only during the call; Last on
// chunk_index = chunk_count - 1), or a RATE_LIMITED (RetryAfter).
type Reply struct {
	Chunk       []byte
	Last        bool
	RateLimited bool
	RetryAfter  time.Duration
}

// ReplyFunc receives the replies of one request, in order, on the shard's
// read goroutine: it must not block.
type ReplyFunc func(Reply)

// Presence is the bot's presence (an op 3 d), shared by the shards of the
// process: every IDENTIFY carries the latest. Safe for concurrent use.
type Presence struct {
	d atomic.Pointer[json.RawMessage]
}

// Set checks and stores d.
func (p *Presence) Set(d json.RawMessage) error {
	n, err := NormalizePresence(d)
	if err == nil {
		p.d.Store(&n)
	}
	return err
}

// Get returns the presence, or nil when none was set.
func (p *Presence) Get() json.RawMessage {
	if p == nil {
		return nil
	}
	if d := p.d.Load(); d != nil {
		return *d
	}
	return nil
}

// commands is a shard's side of the command path.
type commands struct {
	mu      sync.Mutex
	live    *link             // the current connection, nil between them
	waiting int               // commands waiting for the send budget
	askers  map[string]*asker // op 8 nonce → who asked
}

type asker struct {
	reply   ReplyFunc
	expires time.Time
}

// Send writes cmd on the shard's connection within the send budget and
// returns once it is written, with the nonce of an op 8. reply receives
// an op 8's chunks or its RATE_LIMITED; nil sends the chunks the way they
// would go without a command (the streams, if EXTRA_EVENTS asks). An error
// is a *CommandError.
func (s *Shard) Send(ctx context.Context, cmd Command, reply ReplyFunc) (nonce string, err error) {
	defer func() { s.countCommand(cmd.Op, err) }()
	payload, nonce, err := encodeCommand(cmd)
	if err != nil {
		return "", &CommandError{Result: ResultInvalid, Msg: err.Error()}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultCommandWait)
		defer cancel()
	}
	l, err := s.admit(ctx)
	if err != nil {
		return "", err
	}
	defer s.leave()
	if cmd.Op == OpRequestGuildMembers && reply != nil {
		if err := s.expect(nonce, reply); err != nil {
			return "", err
		}
	}
	if err := s.write(ctx, l, payload); err != nil {
		s.forget(nonce)
		return "", err
	}
	return nonce, nil
}

// admit lets a command wait for the budget of the live connection: not
// when the shard is not READY, when too many wait already, or when its turn
// would come after ctx's deadline.
func (s *Shard) admit(ctx context.Context) (*link, error) {
	if !s.Ready() {
		return nil, &CommandError{Result: ResultNotReady, Msg: fmt.Sprintf("shard %d is not READY", s.cfg.ID), RetryAfter: notReadyRetry}
	}
	c := &s.cmds
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.live
	if l == nil {
		return nil, &CommandError{Result: ResultNotReady, Msg: fmt.Sprintf("shard %d has no connection", s.cfg.ID), RetryAfter: notReadyRetry}
	}
	now := time.Now()
	wait := l.conn.limiter.until(now, c.waiting)
	if c.waiting >= maxWaitingCommands {
		return nil, &CommandError{Result: ResultNoBudget, Msg: fmt.Sprintf("shard %d: %d commands already wait for the send budget", s.cfg.ID, c.waiting), RetryAfter: wait}
	}
	if dl, _ := ctx.Deadline(); now.Add(wait).After(dl) {
		return nil, &CommandError{Result: ResultNoBudget, Msg: fmt.Sprintf("shard %d: the send budget (120 per 60 s) has no room before the request's deadline", s.cfg.ID), RetryAfter: wait}
	}
	c.waiting++
	return l, nil
}

func (s *Shard) leave() {
	s.cmds.mu.Lock()
	s.cmds.waiting--
	s.cmds.mu.Unlock()
}

// write sends payload on l within the budget, giving up when ctx ends or
// the connection does.
func (s *Shard) write(ctx context.Context, l *link, payload []byte) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(l.ctx, cancel)
	defer stop()
	err := l.conn.send(ctx, payload, false)
	switch {
	case err == nil:
		return nil
	case l.ctx.Err() != nil:
		return &CommandError{Result: ResultFailed, Msg: fmt.Sprintf("shard %d: the connection ended before the command was written", s.cfg.ID), RetryAfter: notReadyRetry}
	case errors.Is(err, context.DeadlineExceeded):
		wait := l.conn.limiter.until(time.Now(), 0)
		return &CommandError{Result: ResultNoBudget, Msg: fmt.Sprintf("shard %d: the send budget had no room before the request's deadline", s.cfg.ID), RetryAfter: wait}
	case errors.Is(err, context.Canceled):
		return &CommandError{Result: ResultFailed, Msg: fmt.Sprintf("shard %d: the request was cancelled before the command was written", s.cfg.ID)}
	default:
		return &CommandError{Result: ResultFailed, Msg: fmt.Sprintf("shard %d: write failed: %v", s.cfg.ID, err), RetryAfter: notReadyRetry}
	}
}

// attach and detach follow the connection commands are written on.
func (s *Shard) attach(l *link) {
	s.cmds.mu.Lock()
	s.cmds.live = l
	s.cmds.mu.Unlock()
}

func (s *Shard) detach(l *link) {
	s.cmds.mu.Lock()
	if s.cmds.live == l {
		s.cmds.live = nil
	}
	s.cmds.mu.Unlock()
}

// expect registers the asker of an op 8 under its nonce.
func (s *Shard) expect(nonce string, reply ReplyFunc) error {
	c := &s.cmds
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	c.sweep(now)
	if c.askers == nil {
		c.askers = map[string]*asker{}
	}
	if _, taken := c.askers[nonce]; taken {
		return &CommandError{Result: ResultInvalid, Msg: fmt.Sprintf("nonce %q is in use by a request still answered", nonce)}
	}
	c.askers[nonce] = &asker{reply: reply, expires: now.Add(replyTTL)}
	return nil
}

func (s *Shard) forget(nonce string) {
	s.cmds.mu.Lock()
	delete(s.cmds.askers, nonce)
	s.cmds.mu.Unlock()
}

// sweep forgets askers nobody answered in time. mu is held.
func (c *commands) sweep(now time.Time) {
	for n, a := range c.askers {
		if now.After(a.expires) {
			delete(c.askers, n)
		}
	}
}

// memberReply is the part of a GUILD_MEMBERS_CHUNK or RATE_LIMITED d that
// routes it.
type memberReply struct {
	Nonce      string   `json:"nonce"`
	ChunkIndex int      `json:"chunk_index"`
	ChunkCount int      `json:"chunk_count"`
	Opcode     int      `json:"opcode"`      // RATE_LIMITED
	RetryAfter float64  `json:"retry_after"` // RATE_LIMITED, seconds
	Meta       struct { // RATE_LIMITED
		Nonce string `json:"nonce"`
	} `json:"meta"`
}

// answered hands a dispatch that answers a worker's command to its asker
// and reports whether it did, or dropped it because the asker is gone:
// either way it is not published. Called on the read goroutine, in order.
func (s *Shard) answered(t string, d []byte) bool {
	if t != "GUILD_MEMBERS_CHUNK" && t != "RATE_LIMITED" {
		return false
	}
	var r memberReply
	if json.Unmarshal(d, &r) != nil {
		return false // published or not as any malformed dispatch
	}
	reply := Reply{Chunk: d, Last: r.ChunkIndex >= r.ChunkCount-1}
	nonce := r.Nonce
	if t == "RATE_LIMITED" {
		if r.Opcode != OpRequestGuildMembers {
			return false
		}
		nonce = r.Meta.Nonce
		reply = Reply{RateLimited: true, RetryAfter: time.Duration(r.RetryAfter * float64(time.Second))}
	}
	if nonce == "" {
		return false
	}
	a := s.asker(nonce, reply.Last || reply.RateLimited)
	switch {
	case a != nil:
		a.reply(reply)
		s.countReply(t)
		return true
	case len(nonce) >= len(nonceStart) && nonce[:len(nonceStart)] == nonceStart:
		s.countReply("dropped")
		return true
	}
	return false
}

// asker returns the asker of nonce, forgotten when done, and keeps it
// waited on for another replyTTL otherwise.
func (s *Shard) asker(nonce string, done bool) *asker {
	c := &s.cmds
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	a := c.askers[nonce]
	if a == nil || now.After(a.expires) {
		delete(c.askers, nonce)
		return nil
	}
	if done {
		delete(c.askers, nonce)
	} else {
		a.expires = now.Add(replyTTL)
	}
	return a
}

// intents returns what IDENTIFY asks for.
func (s *Shard) intents() gateway.Intents {
	if s.cfg.Commands.Intents != 0 {
		return s.cfg.Commands.Intents
	}
	return Intents
}

// identifyData returns IDENTIFY's d: cmd with the configured intents and
// the bot's presence, once one was set.
func (s *Shard) identifyData(cmd *gateway.IdentifyCommand) any {
	cmd.Intents = option.NewUint(uint(s.intents()))
	p := s.cfg.Commands.Presence.Get()
	if p == nil {
		return cmd
	}
	return struct {
		*gateway.IdentifyCommand
		Presence json.RawMessage `json:"presence"`
	}{cmd, p}
}

// running starts what lives as long as Run: the budget gauge and OnRun.
func (s *Shard) running() (stop func()) {
	cc := s.cfg.Commands
	cc.Metrics.track(s)
	var stopHook func()
	if cc.OnRun != nil {
		stopHook = cc.OnRun(s)
	}
	return func() {
		if stopHook != nil {
			stopHook()
		}
		cc.Metrics.untrack(s)
	}
}

// budgetFree returns the commands the live connection may still send in
// the window, or -1 without a connection.
func (s *Shard) budgetFree() int {
	s.cmds.mu.Lock()
	l := s.cmds.live
	s.cmds.mu.Unlock()
	if l == nil {
		return -1
	}
	return l.conn.limiter.free(time.Now())
}

func (s *Shard) countCommand(op int, err error) {
	m := s.cfg.Commands.Metrics
	if m == nil {
		return
	}
	result := ResultOK
	var ce *CommandError
	if errors.As(err, &ce) {
		result = ce.Result
	} else if err != nil {
		result = ResultFailed
	}
	m.Commands.WithLabelValues(s.label, opLabel(op), result).Inc()
}

func (s *Shard) countReply(kind string) {
	if m := s.cfg.Commands.Metrics; m != nil {
		switch kind {
		case "GUILD_MEMBERS_CHUNK":
			kind = "chunk"
		case "RATE_LIMITED":
			kind = "rate_limited"
		}
		m.Replies.WithLabelValues(s.label, kind).Inc()
	}
}

// opLabel keeps the op label's values bounded.
func opLabel(op int) string {
	switch op {
	case OpPresenceUpdate, OpVoiceStateUpdate, OpRequestGuildMembers:
		return strconv.Itoa(op)
	}
	return "other"
}

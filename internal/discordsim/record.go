package discordsim

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"time"
)

// Violation kinds: things a well-behaved client must never do.
const (
	// ViolationIdentifyBucket: two IDENTIFYs of the same bucket
	// (shard_id % max_concurrency) within IdentifyWindow.
	ViolationIdentifyBucket = "identify_bucket"
	// ViolationSessionStartLimit: IDENTIFY with no session starts left.
	ViolationSessionStartLimit = "session_start_limit"
	// ViolationHeartbeatLate: first heartbeat later than the interval after
	// HELLO, or a gap between heartbeats longer than the interval (both with
	// Config.HeartbeatGrace tolerance, 10% + 50ms by default); also recorded
	// when the heartbeat never comes.
	ViolationHeartbeatLate = "heartbeat_late"
	// ViolationSendRate: more than SendLimit payloads within SendWindow.
	ViolationSendRate = "send_rate"
	// ViolationProtocol: a payload Discord closes the connection for
	// (4001, 4002, 4003, 4005, 4007, 4010, 4012, 4013, 4014).
	ViolationProtocol = "protocol"
	// ViolationAuth: IDENTIFY with a missing, wrong or revoked token (4004).
	ViolationAuth = "auth"
)

// Identify outcomes.
const (
	IdentifyReady                = "ready"
	IdentifyRateLimited          = "rate_limited" // bucket violation, answered with op 9
	IdentifySessionLimit         = "session_limit"
	IdentifyAuthFailed           = "auth_failed"
	IdentifyInvalidShard         = "invalid_shard"
	IdentifyInvalidIntents       = "invalid_intents"
	IdentifyDisallowedIntents    = "disallowed_intents"
	IdentifyDecodeError          = "decode_error"
	IdentifyAlreadyAuthenticated = "already_authenticated"
	// IdentifyShardingRequired: the session would have held more guilds
	// than MaxGuildsPerShard; closed with 4011.
	IdentifyShardingRequired = "sharding_required"
)

// Resume outcomes.
const (
	ResumeResumed              = "resumed"
	ResumeBadToken             = "bad_token"
	ResumeUnknownSession       = "unknown_session"
	ResumeInvalidSession       = "invalid_session" // invalidated or expired
	ResumeTooOld               = "too_old"         // seq before the replay window
	ResumeInvalidSeq           = "invalid_seq"     // seq after the session's last seq (4007)
	ResumeDecodeError          = "decode_error"
	ResumeAlreadyAuthenticated = "already_authenticated"
)

// Server action kinds, recorded in Record.Actions.
const (
	ActionClose          = "close"           // close frame sent (Code set)
	ActionDrop           = "drop"            // TCP closed without close frame on request
	ActionSlowClientDrop = "slow_client"     // outbound queue overflowed
	ActionWriteError     = "write_error"     // a write failed or timed out
	ActionSuperseded     = "superseded"      // connection replaced by a RESUME elsewhere
	ActionReconnect      = "reconnect"       // op 7 sent
	ActionInvalidSession = "invalid_session" // op 9 sent
	ActionHeartbeatReq   = "heartbeat_request"
	ActionWithholdAcks   = "withhold_acks"
	ActionSendRaw        = "send_raw"
	ActionWriteDelay     = "write_delay" // SetWriteDelay (Detail: the delay)
	ActionSplit          = "split"       // SetSplit (Detail: the number of pieces)
)

// Identify is one IDENTIFY received, successful or not.
type Identify struct {
	Shard      int // -1 if the payload was rejected before the shard was read
	Total      int
	Intents    int64
	Bucket     int // shard % max_concurrency
	At         time.Time
	Path       string // "/gateway" or "/resume"
	APIVersion int    // v query parameter of the connection (9 or 10)
	ConnID     int64
	SessionID  string // set when Outcome is IdentifyReady
	Outcome    string
	Presence   json.RawMessage // d.presence as sent, nil when absent
}

// Resume is one RESUME received.
type Resume struct {
	Shard      int // shard of the named session, -1 if unknown
	SessionID  string
	Seq        int64
	Path       string
	APIVersion int
	At         time.Time
	ConnID     int64
	Outcome    string
	Replayed   int // dispatches replayed before RESUMED
}

// Close is a close frame received from a client (Code 1006 records a
// connection that vanished without one).
type Close struct {
	Shard     int
	SessionID string
	ConnID    int64
	Code      int
	Reason    string
	Echo      bool // reply to a close the server started
	At        time.Time
}

// Violation is a client behaviour Discord would punish.
type Violation struct {
	Kind      string
	Shard     int
	SessionID string
	ConnID    int64
	Code      int // close code sent because of it, if any
	Detail    string
	At        time.Time
}

// Action is something the simulator did to a connection.
type Action struct {
	Kind      string
	Shard     int
	SessionID string
	ConnID    int64
	Code      int
	Detail    string
	At        time.Time
}

// Command is a send-only opcode (3, 4, 8, 31) received from a client.
type Command struct {
	Shard     int
	SessionID string
	ConnID    int64
	Op        int
	Data      json.RawMessage
	At        time.Time
}

// How a shard's connection ended (ShardConn.EndedBy).
const (
	ConnEndClientClose = "client_close" // the client sent a close frame (or echoed ours)
	ConnEndClientGone  = "client_gone"  // the TCP connection ended without a close frame first
	ConnEndServer      = "server"       // the simulator tore it down (a close handshake done or timed out, Drop, a write error)
)

// ShardConn is one connection's time as a shard's connection: from the
// first IDENTIFY or RESUME naming the shard on it (whatever its outcome:
// Discord's rule is that no other client may even try while the shard is
// live elsewhere) to the first sign that the connection is over. Two of
// them for one shard that overlap in time are two live connections of the
// shard at once (Overlaps).
type ShardConn struct {
	Shard     int
	ConnID    int64
	Label     string    // Config.ConnLabel's name for the client
	SessionID string    // the session the connection carried, "" if none
	Claimed   time.Time // the IDENTIFY or RESUME was received
	Ended     time.Time // zero while the connection is open
	EndedBy   string    // ConnEnd*
}

// Overlap is a shard claimed on a connection while an earlier connection of
// the same shard was still open.
type Overlap struct {
	Shard         int
	Earlier       ShardConn
	Later         ShardConn
	Duration      time.Duration // from the later claim to the earlier end (to the snapshot if still open)
	EarlierIsOpen bool
}

// Record is a snapshot of everything the simulator observed and did.
type Record struct {
	Identifies   []Identify
	Resumes      []Resume
	ClientCloses []Close
	Violations   []Violation
	Actions      []Action
	Commands     []Command
	// ShardConns are the connections that named a shard, in the order
	// of their first IDENTIFY or RESUME.
	ShardConns  []ShardConn
	Connections int // websocket connections accepted so far
	At          time.Time
}

// Overlaps returns every pair of a shard's connections whose lives
// overlap: the later one claimed the shard before the earlier one ended.
func (r Record) Overlaps() []Overlap {
	byShard := map[int][]ShardConn{}
	for _, c := range r.ShardConns {
		byShard[c.Shard] = append(byShard[c.Shard], c)
	}
	var out []Overlap
	for _, shard := range slices.Sorted(maps.Keys(byShard)) {
		conns := byShard[shard]
		slices.SortStableFunc(conns, func(a, b ShardConn) int { return a.Claimed.Compare(b.Claimed) })
		for i, later := range conns {
			for _, earlier := range conns[:i] {
				end, open := earlier.Ended, earlier.Ended.IsZero()
				if open {
					end = r.At
				}
				if later.Claimed.Before(end) {
					out = append(out, Overlap{Shard: shard, Earlier: earlier, Later: later, Duration: end.Sub(later.Claimed), EarlierIsOpen: open})
				}
			}
		}
	}
	return out
}

// ViolationsOf returns the violations of the given kind.
func (r Record) ViolationsOf(kind string) []Violation {
	var out []Violation
	for _, v := range r.Violations {
		if v.Kind == kind {
			out = append(out, v)
		}
	}
	return out
}

// SessionInfo describes a session.
type SessionInfo struct {
	ID        string
	Shard     int
	Total     int
	Intents   int64
	Seq       int64 // last seq assigned
	Live      bool  // a connection is attached
	Invalid   bool  // can no longer be resumed
	ResumeURL string
	Guilds    []string
	Created   time.Time
}

// SentDispatch is a ledger entry: a dispatch the simulator generated.
type SentDispatch struct {
	Shard     int
	SessionID string
	Seq       int64
	Type      string
	Data      []byte // the d payload; shared, must not be modified
	// Guild is the guild of a guild-scoped dispatch: the load generator's
	// with Config.Guilds set, and DispatchGuild's. It is "" for a dispatch
	// made for one session (READY, its GUILD_CREATEs, Dispatch, answers to
	// commands) and for the generator's without Config.Guilds.
	Guild string
	// Key identifies a guild-scoped dispatch: each of its copies, one per
	// session holding the guild (two while a bot runs two shard counts),
	// has the same Key, and no other dispatch has it. 0 when Guild is "".
	Key uint64
	At  time.Time
	// Written reports whether the dispatch was written to a websocket at
	// least once, i.e. whether Discord would consider it delivered.
	Written bool
}

// Stats are cheap counters.
type Stats struct {
	Connections           int // websocket connections accepted
	LiveConnections       int
	Sessions              int
	LiveSessions          int
	Identifies            int
	Resumes               int
	Violations            int
	Dispatches            int64 // dispatches generated (all sessions)
	FramesWritten         int64 // dispatch frames written, replays included
	SlowClientDrops       int
	SessionStartRemaining int
}

func (s *Server) recordIdentify(r Identify) {
	s.recMu.Lock()
	s.rec.Identifies = append(s.rec.Identifies, r)
	s.recMu.Unlock()
	s.notify()
}

func (s *Server) recordResume(r Resume) {
	s.recMu.Lock()
	s.rec.Resumes = append(s.rec.Resumes, r)
	s.recMu.Unlock()
	s.notify()
}

func (s *Server) recordClientClose(c Close) {
	c.At = time.Now()
	s.recMu.Lock()
	s.rec.ClientCloses = append(s.rec.ClientCloses, c)
	s.recMu.Unlock()
	s.logf("discordsim: client close shard=%d code=%d %q", c.Shard, c.Code, c.Reason)
	s.notify()
}

func (s *Server) recordViolation(v Violation) {
	v.At = time.Now()
	s.recMu.Lock()
	s.rec.Violations = append(s.rec.Violations, v)
	s.recMu.Unlock()
	s.logf("discordsim: violation %s shard=%d: %s", v.Kind, v.Shard, v.Detail)
	s.notify()
}

func (s *Server) recordAction(a Action) {
	a.At = time.Now()
	s.recMu.Lock()
	s.rec.Actions = append(s.rec.Actions, a)
	if a.Kind == ActionSlowClientDrop {
		s.slowDrops++
	}
	s.recMu.Unlock()
	s.logf("discordsim: action %s shard=%d code=%d %s", a.Kind, a.Shard, a.Code, a.Detail)
	s.notify()
}

// recordClaim notes that c named shard in an IDENTIFY or RESUME received at
// at (and, once known, the session it carries); the first claim of a
// connection opens its ShardConn.
func (s *Server) recordClaim(c *conn, shard int, sessionID string, at time.Time) {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	if i, ok := s.shardConnIdx[c.id]; ok {
		if sc := &s.rec.ShardConns[i]; sc.Shard == shard && sessionID != "" {
			sc.SessionID = sessionID
		}
		return
	}
	if s.shardConnIdx == nil {
		s.shardConnIdx = map[int64]int{}
	}
	s.shardConnIdx[c.id] = len(s.rec.ShardConns)
	s.rec.ShardConns = append(s.rec.ShardConns, ShardConn{Shard: shard, ConnID: c.id, Label: c.label, SessionID: sessionID, Claimed: at})
}

// recordConnEnd closes c's ShardConn, if it has one, at the first sign
// that the connection is over.
func (s *Server) recordConnEnd(c *conn, how string) {
	now := time.Now()
	s.recMu.Lock()
	defer s.recMu.Unlock()
	if i, ok := s.shardConnIdx[c.id]; ok && s.rec.ShardConns[i].Ended.IsZero() {
		s.rec.ShardConns[i].Ended, s.rec.ShardConns[i].EndedBy = now, how
	}
}

func (s *Server) recordCommand(c Command) {
	s.recMu.Lock()
	s.rec.Commands = append(s.rec.Commands, c)
	s.recMu.Unlock()
	s.notify()
}

func (s *Server) ledgerAdd(r *dispatchRec) {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	s.dispatchCount++
	limit := s.cfg.LedgerLimit
	if limit < 0 {
		return
	}
	s.ledger = append(s.ledger, r)
	if limit > 0 && len(s.ledger)-s.ledgerHead > limit {
		s.ledger[s.ledgerHead] = nil
		s.ledgerHead++
		if s.ledgerHead >= limit {
			s.ledger = append(make([]*dispatchRec, 0, limit+limit/2+1), s.ledger[s.ledgerHead:]...)
			s.ledgerHead = 0
		}
	}
}

// Record returns a snapshot of all records.
func (s *Server) Record() Record {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	return Record{
		Identifies:   slices.Clone(s.rec.Identifies),
		Resumes:      slices.Clone(s.rec.Resumes),
		ClientCloses: slices.Clone(s.rec.ClientCloses),
		Violations:   slices.Clone(s.rec.Violations),
		Actions:      slices.Clone(s.rec.Actions),
		Commands:     slices.Clone(s.rec.Commands),
		ShardConns:   slices.Clone(s.rec.ShardConns),
		Connections:  s.rec.Connections,
		At:           time.Now(),
	}
}

// Stats returns counters without copying the records.
func (s *Server) Stats() Stats {
	var st Stats
	s.mu.Lock()
	st.LiveConnections = len(s.conns)
	st.Sessions = len(s.order)
	st.SessionStartRemaining = s.remaining
	sessions := slices.Clone(s.order)
	s.mu.Unlock()
	for _, ss := range sessions {
		if ss.liveConn() != nil {
			st.LiveSessions++
		}
	}
	s.recMu.Lock()
	st.Connections = s.rec.Connections
	st.Identifies = len(s.rec.Identifies)
	st.Resumes = len(s.rec.Resumes)
	st.Violations = len(s.rec.Violations)
	st.Dispatches = s.dispatchCount
	st.SlowClientDrops = s.slowDrops
	s.recMu.Unlock()
	st.FramesWritten = s.framesWritten.Load()
	return st
}

// Sessions returns every session created so far, in creation order.
func (s *Server) Sessions() []SessionInfo {
	s.mu.Lock()
	sessions := slices.Clone(s.order)
	s.mu.Unlock()
	out := make([]SessionInfo, len(sessions))
	for i, ss := range sessions {
		out[i] = ss.info()
	}
	return out
}

// Dispatches returns the ledger: every dispatch generated (subject to
// LedgerLimit), in generation order.
func (s *Server) Dispatches() []SentDispatch {
	s.recMu.Lock()
	recs := slices.Clone(s.ledger[s.ledgerHead:])
	s.recMu.Unlock()
	out := make([]SentDispatch, len(recs))
	for i, r := range recs {
		out[i] = SentDispatch{Shard: r.shard, SessionID: r.session, Seq: r.seq, Type: r.typ, Data: r.data(), Guild: r.guild, Key: r.key, At: r.at, Written: r.written.Load()}
	}
	return out
}

// notify wakes every WaitFor caller so it re-evaluates its condition.
func (s *Server) notify() {
	s.notifyMu.Lock()
	close(s.notifyCh)
	s.notifyCh = make(chan struct{})
	s.notifyMu.Unlock()
}

func (s *Server) changed() <-chan struct{} {
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	return s.notifyCh
}

// WaitFor blocks until cond returns true or ctx ends. cond is evaluated on
// every state change (connections, identifies, resumes, closes, violations,
// READY/RESUMED written) and at least every 20ms, so it may inspect anything
// (Record, Dispatches, ...). It must not block.
func (s *Server) WaitFor(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		ch := s.changed()
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		case <-t.C:
		}
	}
}

// WaitConnected waits until shard's current session has a live connection.
func (s *Server) WaitConnected(ctx context.Context, shard int) error {
	return s.WaitFor(ctx, func() bool {
		ss := s.currentSession(shard)
		return ss != nil && ss.liveConn() != nil
	})
}

// WaitReady waits until shard has a live session whose READY was written.
func (s *Server) WaitReady(ctx context.Context, shard int) error {
	return s.WaitFor(ctx, func() bool {
		ss := s.currentSession(shard)
		if ss == nil {
			return false
		}
		ss.mu.Lock()
		defer ss.mu.Unlock()
		return ss.conn != nil && ss.readyRec != nil && ss.readyRec.written.Load()
	})
}

// WaitIdentifies waits until at least n IDENTIFYs with outcome "ready" were
// recorded.
func (s *Server) WaitIdentifies(ctx context.Context, n int) error {
	return s.WaitFor(ctx, func() bool {
		s.recMu.Lock()
		defer s.recMu.Unlock()
		k := 0
		for _, id := range s.rec.Identifies {
			if id.Outcome == IdentifyReady {
				k++
			}
		}
		return k >= n
	})
}

// WaitResumes waits until at least n successful RESUMEs were recorded.
func (s *Server) WaitResumes(ctx context.Context, n int) error {
	return s.WaitFor(ctx, func() bool {
		s.recMu.Lock()
		defer s.recMu.Unlock()
		k := 0
		for _, r := range s.rec.Resumes {
			if r.Outcome == ResumeResumed {
				k++
			}
		}
		return k >= n
	})
}

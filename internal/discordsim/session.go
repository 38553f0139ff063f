package discordsim

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// dispatchRec is one dispatch of a session. The same record is referenced by
// the session's replay log, the server's ledger and the connection queues,
// so a replay sends byte-identical payloads with the original seq.
type dispatchRec struct {
	shard   int
	session string
	seq     int64
	typ     string
	guild   string // the guild of a guild-scoped dispatch (fanOut), else ""
	key     uint64 // shared by the copies of one guild-scoped dispatch, else 0
	frame   []byte // full uncompressed payload
	dOff    int    // offset of d in frame
	at      time.Time
	written atomic.Bool // written to a websocket at least once
	notify  bool        // wake waiters when written (READY, RESUMED)
}

func (r *dispatchRec) data() []byte {
	end := len(r.frame) - 1
	return r.frame[r.dOff:end:end]
}

var (
	errSessionInvalid = errors.New("session invalid")
	errSeqAhead       = errors.New("seq ahead of session")
	errSeqTrimmed     = errors.New("seq older than replay log")
)

// session is a gateway session: a sequence space and a replay log that
// survive the connections carrying them.
type session struct {
	srv       *Server
	id        string
	shard     int
	total     int
	intents   int64
	resumeURL string
	guilds    []string
	created   time.Time

	mu         sync.Mutex
	seq        int64
	log        []*dispatchRec // log[head:] is the replay window
	head       int
	conn       *conn // live connection, nil when detached
	invalid    bool
	detachedAt time.Time
	readyRec   *dispatchRec
}

func newSessionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// appendLocked assigns the next seq to a dispatch and stores it in the replay
// log and the ledger. s.mu must be held.
func (s *session) appendLocked(t string, d []byte) *dispatchRec {
	return s.appendKeyedLocked(t, d, "", 0)
}

// appendKeyedLocked is appendLocked for a dispatch that names its guild
// and the key its copies share (0 for a dispatch of this session only).
func (s *session) appendKeyedLocked(t string, d []byte, guild string, key uint64) *dispatchRec {
	s.seq++
	frame, off := dispatchFrame(t, s.seq, d)
	rec := &dispatchRec{shard: s.shard, session: s.id, seq: s.seq, typ: t, guild: guild, key: key, frame: frame, dOff: off, at: time.Now()}
	limit := s.srv.cfg.ReplayLimit
	s.log = append(s.log, rec)
	if len(s.log)-s.head > limit {
		s.log[s.head] = nil
		s.head++
		// Compact once the dead prefix is as large as the window, which keeps
		// trimming amortised O(1) and memory within 2x of the limit.
		if s.head >= limit {
			s.log = append(make([]*dispatchRec, 0, limit+limit/2+1), s.log[s.head:]...)
			s.head = 0
		}
	}
	s.srv.ledgerAdd(rec)
	return rec
}

// dispatch appends a dispatch and, if a connection is live, queues it there.
func (s *session) dispatch(t string, d []byte) (*dispatchRec, error) {
	return s.dispatchGuild(t, d, "", 0)
}

// dispatchGuild is dispatch for one copy of a guild-scoped dispatch (see
// Server.fanOut): the record keeps the guild and the key the copies share.
func (s *session) dispatchGuild(t string, d []byte, guild string, key uint64) (*dispatchRec, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.invalid {
		return nil, errSessionInvalid
	}
	rec := s.appendKeyedLocked(t, d, guild, key)
	if s.conn != nil {
		s.conn.enqueue(outItem{recs: []*dispatchRec{rec}})
	}
	return rec, nil
}

// valid reports whether the session still receives dispatches.
func (s *session) valid() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.invalid && !s.expiredLocked(time.Now())
}

// resume validates seq, attaches c and queues the replay followed by
// RESUMED as one batch so the replay is not subject to the queue limit.
// It returns the connection previously attached (to be dropped by the
// caller). onResumed runs under the session lock just before the replay is
// queued, with the number of replayed dispatches.
func (s *session) resume(c *conn, seq int64, onResumed func(replayed int)) (old *conn, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.invalid {
		return nil, errSessionInvalid
	}
	if s.expiredLocked(time.Now()) {
		s.invalidateLocked()
		return nil, errSessionInvalid
	}
	if seq > s.seq {
		return nil, errSeqAhead
	}
	if seq < 0 {
		seq = 0
	}
	win := s.log[s.head:]
	i := 0
	if seq < s.seq {
		if len(win) == 0 || win[0].seq > seq+1 {
			return nil, errSeqTrimmed
		}
		i = int(seq + 1 - win[0].seq)
	} else {
		i = len(win)
	}
	batch := make([]*dispatchRec, 0, len(win)-i+1)
	batch = append(batch, win[i:]...)
	replayed := len(batch)
	resumed := s.appendLocked("RESUMED", []byte(`{"_trace":`+gatewayTrace+`}`))
	resumed.notify = true
	batch = append(batch, resumed)
	old = s.conn
	s.conn = c
	c.setSession(s)
	onResumed(replayed)
	c.enqueue(outItem{recs: batch})
	return old, nil
}

// detach unbinds c if it is the live connection.
func (s *session) detach(c *conn) {
	s.mu.Lock()
	if s.conn == c {
		s.conn = nil
		s.detachedAt = time.Now()
	}
	s.mu.Unlock()
}

// invalidate makes the session unresumable and returns its live connection.
func (s *session) invalidate() *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.invalidateLocked()
}

func (s *session) invalidateLocked() *conn {
	c := s.conn
	s.invalid = true
	s.conn = nil
	// The ledger keeps the records; the replay log is no longer needed.
	s.log, s.head = nil, 0
	return c
}

func (s *session) expiredLocked(now time.Time) bool {
	to := s.srv.cfg.SessionTimeout
	return to > 0 && s.conn == nil && !s.invalid && !s.detachedAt.IsZero() && now.Sub(s.detachedAt) > to
}

func (s *session) liveConn() *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn
}

func (s *session) info() SessionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return SessionInfo{
		ID:        s.id,
		Shard:     s.shard,
		Total:     s.total,
		Intents:   s.intents,
		Seq:       s.seq,
		Live:      s.conn != nil,
		Invalid:   s.invalid || s.expiredLocked(time.Now()),
		ResumeURL: s.resumeURL,
		Guilds:    append([]string(nil), s.guilds...),
		Created:   s.created,
	}
}

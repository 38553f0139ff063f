package discordsim

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// DefaultToken is the bot token expected when Config.Token is empty.
const DefaultToken = "discordsim.bot.token"

// Config configures a Server. Zero values select the documented defaults.
type Config struct {
	// Addr is the listen address for Start; default "127.0.0.1:0".
	Addr string
	// Token is the expected bot token ("Bot <token>" for REST, the raw token
	// in IDENTIFY/RESUME); default DefaultToken.
	Token string
	// Shards is the recommended shard count returned by /gateway/bot;
	// default 1.
	Shards int
	// MaxConcurrency is session_start_limit.max_concurrency; default 1.
	MaxConcurrency int
	// SessionStartTotal is session_start_limit.total; default 1000.
	SessionStartTotal int
	// SessionStartRemaining is the initial remaining count, decremented by
	// each successful IDENTIFY; 0 means SessionStartTotal, negative means
	// already exhausted.
	SessionStartRemaining int
	// SessionStartResetAfter is the session start window: remaining goes
	// back to SessionStartTotal each time it ends, and /gateway/bot's
	// reset_after counts down to that. Default 24h, Discord's; tests
	// shorten it to see a reset.
	SessionStartResetAfter time.Duration
	// SessionLimitInvalidSession answers an IDENTIFY made with no session
	// starts left with op 9 (d=false) and keeps the token working, instead
	// of Discord's token reset; the violation is recorded either way. A
	// client that ignores the limit then keeps identifying, which a test
	// can count.
	SessionLimitInvalidSession bool
	// IdentifyWindow is the per-bucket identify window; default 5s.
	IdentifyWindow time.Duration
	// IdentifyTolerance is subtracted from IdentifyWindow before an identify
	// counts as a bucket violation, absorbing transit jitter between a
	// client's clock and ours; default min(IdentifyWindow/10, 100ms),
	// negative means none.
	IdentifyTolerance time.Duration
	// LenientIdentify keeps IDENTIFYs that violate the bucket limit instead
	// of answering op 9 as Discord does; the violation is recorded anyway.
	LenientIdentify bool
	// HeartbeatInterval is sent in HELLO; default 41.25s.
	HeartbeatInterval time.Duration
	// HeartbeatGrace is how much later than the interval a heartbeat may
	// arrive before it counts as late (ViolationHeartbeatLate); default
	// HeartbeatInterval/10 + 50ms. Tests that shrink the interval on a
	// loaded machine may widen it to absorb scheduling delays on both
	// sides, which are not the client's fault.
	HeartbeatGrace time.Duration
	// CloseOnMissedHeartbeat closes a connection with 4009 (ending the
	// session) when a heartbeat is overdue. Default off: the lateness is
	// only recorded.
	CloseOnMissedHeartbeat bool
	// SendLimit payloads per SendWindow per connection; default 120 per 60s.
	SendLimit  int
	SendWindow time.Duration
	// GuildsPerShard guilds are listed unavailable in READY and each followed
	// by a GUILD_CREATE; default 0.
	GuildsPerShard int
	// MembersPerGuild members are included in each GUILD_CREATE; default 0.
	MembersPerGuild int
	// Guilds, when set, is the number of guilds the bot is in
	// (UniverseGuildID), and turns on Discord's routing across shard
	// counts: a session identified as [shard, total] holds the guilds with
	// (guild_id >> 22) % total == shard (READY lists them, a GUILD_CREATE
	// follows for each), and every generated dispatch belongs to one guild
	// and reaches every valid session that holds it: one per live shard
	// count, two while a bot reshards. EventRate then counts per guild.
	// GuildsPerShard is unused. Default 0: each session invents
	// GuildsPerShard guilds of its own and generated events reach it only.
	Guilds int
	// MaxGuildsPerShard closes an IDENTIFY whose session would hold more
	// guilds than this with 4011 (Sharding required), after the identify
	// bucket and a session start were taken (the simulator errs on the
	// strict side). Default DefaultMaxGuildsPerShard, Discord's 2500;
	// negative means no limit. SetMaxGuildsPerShard changes it.
	MaxGuildsPerShard int
	// ConnDelay holds every frame written to a connection for a random
	// time up to ConnDelay, drawn per frame and independently for each
	// connection, without ever reordering a connection's frames: two
	// sessions that receive the same guild dispatch see it at slightly
	// different times, as from Discord. It adds to SetWriteDelay. Default
	// 0, or 2ms when Guilds is set; negative means none.
	ConnDelay time.Duration
	// EventRate is the number of generated dispatches per second per session
	// after READY (a realistic mix filtered by the session's intents), or
	// per guild when Guilds is set; 0 disables the generator. Change it at
	// runtime with SetEventRate.
	EventRate float64
	// ReplayLimit is the number of dispatches kept per session for RESUME;
	// default 100000. A RESUME older than the window gets op 9.
	ReplayLimit int
	// SendQueue is the per-connection outbound queue length; when full the
	// connection is dropped like Discord drops slow clients; default 8192.
	SendQueue int
	// SessionTimeout is how long a session without a connection stays
	// resumable; default 5m, negative means forever.
	SessionTimeout time.Duration
	// LedgerLimit caps the number of entries Dispatches() keeps (oldest are
	// forgotten); 0 means unlimited, negative disables the ledger. Long load
	// runs should set it.
	LedgerLimit int
	// DisallowedIntents are intent bits that close IDENTIFY with 4014, to
	// simulate privileged intents that are not enabled; default none.
	DisallowedIntents int64
	// ConnLabel, if set, names the client of each websocket connection
	// (from its request: a remote address, a header) for Record.ShardConns,
	// so that a test running several clients can tell whose connection
	// was whose.
	ConnLabel func(r *http.Request) string
	// Logf, if set, receives debug logs.
	Logf func(format string, args ...any)
}

func (c *Config) setDefaults() {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:0"
	}
	if c.Token == "" {
		c.Token = DefaultToken
	}
	if c.Shards <= 0 {
		c.Shards = 1
	}
	if c.MaxConcurrency <= 0 {
		c.MaxConcurrency = 1
	}
	if c.SessionStartTotal <= 0 {
		c.SessionStartTotal = 1000
	}
	switch {
	case c.SessionStartRemaining == 0:
		c.SessionStartRemaining = c.SessionStartTotal
	case c.SessionStartRemaining < 0:
		c.SessionStartRemaining = 0
	}
	if c.SessionStartResetAfter <= 0 {
		c.SessionStartResetAfter = 24 * time.Hour
	}
	if c.IdentifyWindow <= 0 {
		c.IdentifyWindow = 5 * time.Second
	}
	switch {
	case c.IdentifyTolerance == 0:
		c.IdentifyTolerance = min(c.IdentifyWindow/10, 100*time.Millisecond)
	case c.IdentifyTolerance < 0:
		c.IdentifyTolerance = 0
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 41250 * time.Millisecond
	}
	if c.HeartbeatGrace <= 0 {
		c.HeartbeatGrace = c.HeartbeatInterval/10 + 50*time.Millisecond
	}
	if c.SendLimit <= 0 {
		c.SendLimit = 120
	}
	if c.SendWindow <= 0 {
		c.SendWindow = 60 * time.Second
	}
	if c.ReplayLimit <= 0 {
		c.ReplayLimit = 100000
	}
	if c.SendQueue <= 0 {
		c.SendQueue = 8192
	}
	switch {
	case c.SessionTimeout == 0:
		c.SessionTimeout = 5 * time.Minute
	case c.SessionTimeout < 0:
		c.SessionTimeout = 0 // checked as "> 0" by expiry
	}
	if c.EventRate < 0 || math.IsNaN(c.EventRate) {
		c.EventRate = 0
	}
	if c.MaxGuildsPerShard == 0 {
		c.MaxGuildsPerShard = DefaultMaxGuildsPerShard
	}
	switch {
	case c.ConnDelay == 0 && c.Guilds > 0:
		c.ConnDelay = 2 * time.Millisecond
	case c.ConnDelay < 0:
		c.ConnDelay = 0
	}
}

// Server is a simulated Discord gateway plus the /gateway/bot REST route.
// All methods are safe for concurrent use.
type Server struct {
	cfg      Config
	mux      *http.ServeMux
	upgrader websocket.Upgrader

	botUserID string
	appID     string
	idCounter atomic.Uint64

	// mu guards the fields below. Lock order: mu, then session.mu, then
	// conn.mu; recMu and notifyMu are leaves.
	mu         sync.Mutex
	ln         net.Listener
	httpSrv    *http.Server
	closed     bool
	sessions   map[string]*session
	order      []*session       // sessions in creation order
	current    map[int]*session // latest session identified per shard id
	conns      map[*conn]struct{}
	bucketLast map[int]time.Time
	delays     map[int]time.Duration // SetWriteDelay, per shard
	splits     map[int]int           // SetSplit, per shard
	remaining  int
	resetAt    time.Time // end of the session start window
	revoked    bool
	connSeq    int64

	recMu         sync.Mutex
	rec           Record
	shardConnIdx  map[int64]int // conn id → index in rec.ShardConns; made on first use
	ledger        []*dispatchRec
	ledgerHead    int
	dispatchCount int64
	slowDrops     int

	cmds commandState // commands.go

	framesWritten atomic.Int64
	anyDelay      atomic.Bool // some shard has a write delay
	anySplit      atomic.Bool // some shard has its messages split

	notifyMu sync.Mutex
	notifyCh chan struct{}

	genKey    atomic.Uint64 // the last key of a guild-scoped dispatch (fanOut)
	maxGuilds atomic.Int64  // the 4011 threshold, <= 0 for none

	rateBits atomic.Uint64 // float64 bits of the per-session event rate
	rateCh   chan struct{}
	genMu    sync.Mutex // held while generated events are emitted
	genOnce  sync.Once
	quit     chan struct{}
	wg       sync.WaitGroup

	genJitter jitterHist // the load generator's send-time jitter (loadgen.go)
}

// New returns a Server for cfg; call Start to listen, or mount Handler.
func New(cfg Config) *Server {
	cfg.setDefaults()
	s := &Server{
		cfg:        cfg,
		sessions:   map[string]*session{},
		current:    map[int]*session{},
		conns:      map[*conn]struct{}{},
		bucketLast: map[int]time.Time{},
		delays:     map[int]time.Duration{},
		splits:     map[int]int{},
		remaining:  cfg.SessionStartRemaining,
		resetAt:    time.Now().Add(cfg.SessionStartResetAfter),
		notifyCh:   make(chan struct{}),
		rateCh:     make(chan struct{}, 1),
		quit:       make(chan struct{}),
	}
	// Random ids so several servers in one process do not look alike.
	var b [8]byte
	_, _ = rand.Read(b[:])
	r := binary.LittleEndian.Uint64(b[:])
	s.botUserID = idString(snowflake(userBaseMs+int64(r%1e9), 0, 0, r>>52))
	s.appID = s.botUserID // bot user id equals application id for modern apps
	s.rateBits.Store(math.Float64bits(cfg.EventRate))
	s.maxGuilds.Store(int64(cfg.MaxGuildsPerShard))
	s.upgrader = websocket.Upgrader{
		CheckOrigin:       func(*http.Request) bool { return true },
		EnableCompression: false, // Discord uses its own transport compression
	}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET /api/v10/gateway/bot", s.handleGatewayBot)
	s.mux.HandleFunc("GET /api/v10/gateway", s.handleGateway)
	for _, p := range []string{"/gateway", "/gateway/", "/resume", "/resume/"} {
		s.mux.HandleFunc(p, s.handleWS)
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]any{"message": "404: Not Found", "code": 0})
	})
	return s
}

// Start listens on Config.Addr (default 127.0.0.1:0) and serves Handler.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed || s.ln != nil {
		s.mu.Unlock()
		_ = ln.Close()
		return errors.New("discordsim: server already started or closed")
	}
	s.ln = ln
	s.httpSrv = &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
	srv := s.httpSrv
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = srv.Serve(ln)
	}()
	s.logf("discordsim: listening on %s", s.URL())
	return nil
}

// Close stops the listener, the load generator and every connection, and
// waits for the server's goroutines. It is idempotent.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	close(s.quit)
	srv := s.httpSrv
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
	for _, c := range conns {
		c.kill("", "")
	}
	s.wg.Wait()
	s.notify()
}

// URL returns "http://host:port" of the listener (after Start).
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	addr := s.ln.Addr().(*net.TCPAddr)
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, fmt.Sprint(addr.Port))
}

// APIURL returns the REST base URL, URL()+"/api/v10".
func (s *Server) APIURL() string { return s.URL() + "/api/v10" }

// GatewayURL returns the websocket URL /gateway/bot hands out.
func (s *Server) GatewayURL() string { return wsURL(s.URL()) + "/gateway" }

// ResumeURL returns the resume_gateway_url READY hands out.
func (s *Server) ResumeURL() string { return wsURL(s.URL()) + "/resume" }

func wsURL(httpURL string) string { return "ws" + strings.TrimPrefix(httpURL, "http") }

// Handler returns the HTTP handler (REST and websocket), e.g. to mount it in
// an httptest.Server instead of calling Start. URLs handed to clients are
// built from the request's Host header.
func (s *Server) Handler() http.Handler { return s.mux }

// BotUserID returns the id of the simulated bot user (READY user.id).
func (s *Server) BotUserID() string { return s.botUserID }

// ApplicationID returns READY application.id.
func (s *Server) ApplicationID() string { return s.appID }

func (s *Server) logf(format string, args ...any) {
	if s.cfg.Logf != nil {
		s.cfg.Logf(format, args...)
	}
}

func (s *Server) beatAllowance() time.Duration {
	return s.cfg.HeartbeatInterval + s.cfg.HeartbeatGrace
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) tokenOK(tok string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.revoked && tok == s.cfg.Token
}

// handleGatewayBot serves GET /api/v10/gateway/bot.
func (s *Server) handleGatewayBot(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	if !strings.HasPrefix(auth, "Bot ") || !s.tokenOK(strings.TrimPrefix(auth, "Bot ")) {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"message": "401: Unauthorized", "code": 0})
		return
	}
	s.mu.Lock()
	remaining, resetAfter := s.sessionStartsLocked(time.Now())
	shards := s.cfg.Shards
	s.mu.Unlock()
	w.Header().Set("X-RateLimit-Bucket", "41f9cd5d28af77da04563bcb1d67fdfd")
	w.Header().Set("X-RateLimit-Limit", "2")
	w.Header().Set("X-RateLimit-Remaining", "1")
	w.Header().Set("X-RateLimit-Reset-After", "1.000")
	writeJSON(w, http.StatusOK, map[string]any{
		"url":    "ws://" + r.Host + "/gateway",
		"shards": shards,
		"session_start_limit": map[string]any{
			"total":           s.cfg.SessionStartTotal,
			"remaining":       remaining,
			"reset_after":     resetAfter.Milliseconds(),
			"max_concurrency": s.cfg.MaxConcurrency,
		},
	})
}

// sessionStartsLocked refills the session start budget when its window has
// ended and returns what remains and how long until the next refill. mu is
// held.
func (s *Server) sessionStartsLocked(now time.Time) (remaining int, resetAfter time.Duration) {
	if !now.Before(s.resetAt) {
		window := s.cfg.SessionStartResetAfter
		s.resetAt = s.resetAt.Add((now.Sub(s.resetAt)/window + 1) * window)
		s.remaining = s.cfg.SessionStartTotal
	}
	return s.remaining, s.resetAt.Sub(now)
}

// handleGateway serves the unauthenticated GET /api/v10/gateway.
func (s *Server) handleGateway(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"url": "ws://" + r.Host + "/gateway"})
}

func (s *Server) handleWS(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if enc := q.Get("encoding"); enc != "" && enc != "json" {
		http.Error(w, "discordsim supports encoding=json only", http.StatusBadRequest)
		return
	}
	comp, err := parseCompression(q.Get("compress"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	enc, err := newFrameEncoder(comp)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		enc.close()
		http.Error(w, "closed", http.StatusServiceUnavailable)
		return
	}
	s.mu.Unlock()
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		enc.close()
		return // the upgrader already answered
	}
	ws.SetReadLimit(1 << 20) // the 4096-byte rule is enforced with a close code
	path := "/" + strings.Trim(r.URL.Path, "/")
	// Discord's available gateway versions are 10 and 9 (arikawa v3 still
	// uses 9); anything else is closed with 4012. No v means the default.
	version, versionOK := 10, true
	if v := q.Get("v"); v != "" {
		n, err := strconv.Atoi(v)
		version, versionOK = n, err == nil && (n == 9 || n == 10)
	}
	c := &conn{
		srv:        s,
		ws:         ws,
		path:       path,
		host:       r.Host,
		comp:       comp,
		version:    version,
		versionOK:  versionOK,
		out:        make(chan outItem, s.cfg.SendQueue),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	if s.cfg.ConnLabel != nil {
		c.label = s.cfg.ConnLabel(r)
	}
	ws.SetCloseHandler(c.onCloseFrame)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		enc.close()
		_ = ws.Close()
		return
	}
	s.connSeq++
	c.id = s.connSeq
	s.conns[c] = struct{}{}
	s.wg.Add(2) // released by the read loop below and the write loop
	s.mu.Unlock()
	s.recMu.Lock()
	s.rec.Connections++
	s.recMu.Unlock()
	s.logf("discordsim: conn %d opened on %s compress=%q", c.id, path, comp)
	s.notify()

	go func() {
		defer s.wg.Done()
		c.writeLoop(enc)
	}()
	defer s.wg.Done()
	if !c.versionOK {
		c.protocolError(CloseInvalidAPIVersion, "v="+q.Get("v"))
	} else {
		hello := `{"heartbeat_interval":` + fmt.Sprint(s.cfg.HeartbeatInterval.Milliseconds()) + `,"_trace":` + gatewayTrace + `}`
		c.enqueue(outItem{raw: controlFrame(OpHello, hello), onWritten: c.helloWritten})
	}
	c.readLoop()
}

func (s *Server) removeConn(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.logf("discordsim: conn %d closed", c.id)
	s.notify()
}

func isJSONObject(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && raw[0] == '{' && json.Valid(raw)
}

// identify handles op 2 on c.
func (s *Server) identify(c *conn, raw json.RawMessage, now time.Time) {
	rec := Identify{Shard: -1, At: now, Path: c.path, ConnID: c.id, APIVersion: c.version}
	fail := func(outcome string, code int, detail string) {
		rec.Outcome = outcome
		s.recordIdentify(rec)
		if code == CloseAuthenticationFailed {
			s.recordViolation(Violation{Kind: ViolationAuth, Shard: rec.Shard, ConnID: c.id, Code: code, Detail: detail})
			c.closeWith(code, "", true, detail)
			return
		}
		c.protocolError(code, detail)
	}
	if c.session() != nil {
		fail(IdentifyAlreadyAuthenticated, CloseAlreadyAuthenticated, "second IDENTIFY on an identified connection")
		return
	}
	var d struct {
		Token      *string         `json:"token"`
		Properties json.RawMessage `json:"properties"`
		Intents    json.RawMessage `json:"intents"`
		Shard      json.RawMessage `json:"shard"`
		Presence   json.RawMessage `json:"presence"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		fail(IdentifyDecodeError, CloseDecodeError, "IDENTIFY d: "+err.Error())
		return
	}
	rec.Presence = d.Presence
	if d.Token == nil || !s.tokenOK(*d.Token) {
		fail(IdentifyAuthFailed, CloseAuthenticationFailed, "IDENTIFY with missing, wrong or revoked token")
		return
	}
	// Discord treats a missing shard as [0, 1].
	shard, total := 0, 1
	if len(d.Shard) > 0 && string(d.Shard) != "null" {
		var sh []int
		if err := json.Unmarshal(d.Shard, &sh); err != nil || len(sh) != 2 || sh[1] < 1 || sh[0] < 0 || sh[0] >= sh[1] {
			fail(IdentifyInvalidShard, CloseInvalidShard, "shard "+string(d.Shard))
			return
		}
		shard, total = sh[0], sh[1]
	}
	rec.Shard, rec.Total, rec.Bucket = shard, total, shard%s.cfg.MaxConcurrency
	s.recordClaim(c, shard, "", now)
	var intents int64
	if len(d.Intents) == 0 || string(d.Intents) == "null" || json.Unmarshal(d.Intents, &intents) != nil || intents < 0 || intents >= intentLimit {
		fail(IdentifyInvalidIntents, CloseInvalidIntents, "intents "+string(d.Intents))
		return
	}
	rec.Intents = intents
	if intents&s.cfg.DisallowedIntents != 0 {
		fail(IdentifyDisallowedIntents, CloseDisallowedIntents, fmt.Sprintf("intents %d include disallowed %d", intents, intents&s.cfg.DisallowedIntents))
		return
	}
	if !isJSONObject(d.Properties) {
		fail(IdentifyDecodeError, CloseDecodeError, "IDENTIFY without properties object")
		return
	}

	if !s.admitIdentify(c, &rec, now) {
		return
	}
	if tooMany, detail := s.tooManyGuilds(shard, total); tooMany {
		rec.Outcome = IdentifyShardingRequired
		s.recordIdentify(rec)
		c.closeWith(CloseShardingRequired, "", true, detail)
		return
	}
	s.startSession(c, rec, now)
}

// admitIdentify applies the limits Discord puts on an IDENTIFY that is
// well formed: the identify bucket and the daily session start budget. It
// answers a refused one (op 9, or the token reset) and reports false.
func (s *Server) admitIdentify(c *conn, rec *Identify, now time.Time) bool {
	shard := rec.Shard
	s.mu.Lock()
	if last, ok := s.bucketLast[rec.Bucket]; ok && now.Sub(last) < s.cfg.IdentifyWindow-s.cfg.IdentifyTolerance {
		s.recordViolation(Violation{Kind: ViolationIdentifyBucket, Shard: shard, ConnID: c.id,
			Detail: fmt.Sprintf("shard %d (bucket %d) identified %v after the previous identify of its bucket (window %v)",
				shard, rec.Bucket, now.Sub(last).Round(time.Millisecond), s.cfg.IdentifyWindow)})
		if !s.cfg.LenientIdentify {
			s.mu.Unlock()
			rec.Outcome = IdentifyRateLimited
			s.recordIdentify(*rec)
			s.sendInvalidSession(c, shard, "", false, "identify bucket exceeded")
			return false
		}
	}
	remaining, _ := s.sessionStartsLocked(now) // refills a window that has ended
	if remaining <= 0 && s.cfg.SessionLimitInvalidSession {
		s.mu.Unlock()
		s.recordViolation(Violation{Kind: ViolationSessionStartLimit, Shard: shard, ConnID: c.id,
			Detail: fmt.Sprintf("IDENTIFY with session_start_limit.remaining=0 (total %d); answered with op 9", s.cfg.SessionStartTotal)})
		rec.Outcome = IdentifySessionLimit
		s.recordIdentify(*rec)
		s.sendInvalidSession(c, shard, "", false, "session start limit exhausted")
		return false
	}
	if remaining <= 0 {
		// Discord: all sessions are terminated and the token is reset.
		s.revoked = true
		all := append([]*session(nil), s.order...)
		s.mu.Unlock()
		s.recordViolation(Violation{Kind: ViolationSessionStartLimit, Shard: shard, ConnID: c.id,
			Detail: fmt.Sprintf("IDENTIFY with session_start_limit.remaining=0 (total %d); token revoked", s.cfg.SessionStartTotal)})
		rec.Outcome = IdentifySessionLimit
		s.recordIdentify(*rec)
		for _, ss := range all {
			if lc := ss.invalidate(); lc != nil {
				lc.closeWith(CloseAuthenticationFailed, "", false, "token reset after session start limit")
			}
		}
		c.closeWith(CloseAuthenticationFailed, "", false, "session start limit exhausted")
		return false
	}
	s.remaining--
	s.bucketLast[rec.Bucket] = now
	s.mu.Unlock()
	return true
}

// startSession creates the session an admitted IDENTIFY asked for, queues
// READY and the GUILD_CREATEs, and attaches the connection.
func (s *Server) startSession(c *conn, rec Identify, now time.Time) {
	shard, total, intents := rec.Shard, rec.Total, rec.Intents
	sess := &session{srv: s, id: newSessionID(), shard: shard, total: total, intents: intents, created: now,
		resumeURL: "ws://" + c.host + "/resume"}
	sess.guilds = s.ShardGuilds(shard, total)
	ready := s.readyBody(sess, c.version)
	guildBodies := make([][]byte, len(sess.guilds))
	for i, g := range sess.guilds {
		guildBodies[i] = s.GuildCreateBody(shard, g, s.cfg.MembersPerGuild)
	}

	// Append READY and the GUILD_CREATEs while the session is still private,
	// so they are guaranteed seq 1..n+1.
	sess.mu.Lock()
	batch := make([]*dispatchRec, 0, 1+len(guildBodies))
	r := sess.appendLocked("READY", ready)
	r.notify = true
	sess.readyRec = r
	batch = append(batch, r)
	for _, b := range guildBodies {
		batch = append(batch, sess.appendLocked("GUILD_CREATE", b))
	}
	sess.mu.Unlock()

	// Register (and record) before anything reaches the client, so a test
	// that has seen READY also sees the session and the record.
	s.mu.Lock()
	s.sessions[sess.id] = sess
	s.order = append(s.order, sess)
	s.current[shard] = sess
	s.mu.Unlock()
	rec.Outcome, rec.SessionID = IdentifyReady, sess.id
	s.recordIdentify(rec)
	s.recordClaim(c, shard, sess.id, now)

	// Now attach the connection. Anything dispatched since registration is
	// already in the log and follows the batch, keeping seq order.
	sess.mu.Lock()
	if !sess.invalid {
		lastSeq := batch[len(batch)-1].seq
		for _, lr := range sess.log[sess.head:] {
			if lr.seq > lastSeq {
				batch = append(batch, lr)
			}
		}
		sess.conn = c
		c.setSession(sess)
		c.enqueue(outItem{recs: batch})
	}
	sess.mu.Unlock()
	s.logf("discordsim: shard %d/%d identified, session %s", shard, total, sess.id)
	s.startGenerator()
	s.notify()
}

func (s *Server) readyBody(sess *session, version int) []byte {
	type unavailableGuild struct {
		ID          string `json:"id"`
		Unavailable bool   `json:"unavailable"`
	}
	guilds := make([]unavailableGuild, len(sess.guilds))
	for i, g := range sess.guilds {
		guilds[i] = unavailableGuild{g, true}
	}
	return mustJSON(map[string]any{
		"v":             version,
		"user_settings": map[string]any{},
		"user": map[string]any{
			"verified": true, "username": "shardpool-sim", "mfa_enabled": false, "id": s.botUserID,
			"global_name": nil, "flags": 0, "email": nil, "discriminator": "0000", "bot": true,
			"avatar": nil, "clan": nil, "primary_guild": nil,
		},
		"session_type":            "normal",
		"session_id":              sess.id,
		"resume_gateway_url":      sess.resumeURL,
		"relationships":           []any{},
		"private_channels":        []any{},
		"presences":               []any{},
		"guilds":                  guilds,
		"guild_join_requests":     []any{},
		"geo_ordered_rtc_regions": []string{"us-east", "us-central", "atlanta", "us-south", "us-west"},
		"game_relationships":      []any{},
		"auth":                    map[string]any{},
		"application":             map[string]any{"id": s.appID, "flags": 565248},
		"_trace":                  json.RawMessage(gatewayTrace),
		"shard":                   []int{sess.shard, sess.total},
	})
}

func (s *Server) sendInvalidSession(c *conn, shard int, sid string, resumable bool, detail string) {
	c.enqueue(outItem{raw: controlFrame(OpInvalidSession, fmt.Sprint(resumable))})
	s.recordAction(Action{Kind: ActionInvalidSession, Shard: shard, SessionID: sid, ConnID: c.id, Detail: detail})
}

// resume handles op 6 on c.
func (s *Server) resume(c *conn, raw json.RawMessage, now time.Time) {
	rec := Resume{Shard: -1, Path: c.path, At: now, ConnID: c.id, APIVersion: c.version}
	if cur := c.session(); cur != nil {
		rec.Shard, rec.SessionID, rec.Outcome = cur.shard, cur.id, ResumeAlreadyAuthenticated
		s.recordResume(rec)
		c.protocolError(CloseAlreadyAuthenticated, "RESUME on an authenticated connection")
		return
	}
	var d struct {
		Token     *string `json:"token"`
		SessionID string  `json:"session_id"`
		Seq       *int64  `json:"seq"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		rec.Outcome = ResumeDecodeError
		s.recordResume(rec)
		c.protocolError(CloseDecodeError, "RESUME d: "+err.Error())
		return
	}
	rec.SessionID = d.SessionID
	if d.Seq != nil {
		rec.Seq = *d.Seq
	}
	s.mu.Lock()
	sess := s.sessions[d.SessionID]
	s.mu.Unlock()
	if sess != nil {
		rec.Shard = sess.shard
		s.recordClaim(c, sess.shard, sess.id, now)
	}
	invalid := func(outcome, detail string) {
		rec.Outcome = outcome
		s.recordResume(rec)
		s.sendInvalidSession(c, rec.Shard, d.SessionID, false, detail)
	}
	switch {
	case d.Token == nil || !s.tokenOK(*d.Token):
		invalid(ResumeBadToken, "RESUME with missing, wrong or revoked token")
		return
	case sess == nil:
		invalid(ResumeUnknownSession, "RESUME of unknown session")
		return
	}
	// The record is written under the session lock before the replay is
	// queued, so a client that has seen RESUMED also sees the record.
	old, err := sess.resume(c, rec.Seq, func(replayed int) {
		rec.Outcome, rec.Replayed = ResumeResumed, replayed
		s.recordResume(rec)
	})
	switch {
	case errors.Is(err, errSeqAhead):
		rec.Outcome = ResumeInvalidSeq
		s.recordResume(rec)
		sess.invalidate()
		c.protocolError(CloseInvalidSeq, fmt.Sprintf("RESUME seq %d is ahead of the session", rec.Seq))
	case errors.Is(err, errSeqTrimmed):
		sess.invalidate()
		invalid(ResumeTooOld, fmt.Sprintf("RESUME seq %d is older than the replay window", rec.Seq))
	case err != nil:
		invalid(ResumeInvalidSession, "RESUME of an invalidated or expired session")
	default:
		if old != nil {
			old.kill(ActionSuperseded, "session resumed on another connection")
		}
		s.logf("discordsim: shard %d resumed session %s at seq %d on %s (%d replayed)", sess.shard, sess.id, rec.Seq, c.path, rec.Replayed)
		s.notify()
	}
}

package discordsim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

const allIntents = int64(1<<17 - 1)

func TestGatewayBotREST(t *testing.T) {
	srv := startServer(t, Config{Token: "tok", Shards: 4, MaxConcurrency: 2, SessionStartTotal: 1000, SessionStartRemaining: 990})
	if got, want := srv.APIURL(), srv.URL()+"/api/v10"; got != want {
		t.Fatalf("APIURL = %q, want %q", got, want)
	}
	var gb struct {
		URL               string `json:"url"`
		Shards            int    `json:"shards"`
		SessionStartLimit struct {
			Total          int   `json:"total"`
			Remaining      int   `json:"remaining"`
			ResetAfter     int64 `json:"reset_after"`
			MaxConcurrency int   `json:"max_concurrency"`
		} `json:"session_start_limit"`
	}
	if code := getJSON(t, srv.APIURL()+"/gateway/bot", "Bot tok", &gb); code != 200 {
		t.Fatalf("status %d", code)
	}
	if gb.URL != srv.GatewayURL() || !strings.HasPrefix(gb.URL, "ws://127.0.0.1:") || !strings.HasSuffix(gb.URL, "/gateway") {
		t.Errorf("url = %q", gb.URL)
	}
	l := gb.SessionStartLimit
	if gb.Shards != 4 || l.Total != 1000 || l.Remaining != 990 || l.MaxConcurrency != 2 || l.ResetAfter <= 0 {
		t.Errorf("unexpected body %+v", gb)
	}
	for _, auth := range []string{"", "Bot wrong", "tok", "Bearer tok"} {
		var e struct {
			Message string `json:"message"`
			Code    *int   `json:"code"`
		}
		if code := getJSON(t, srv.APIURL()+"/gateway/bot", auth, &e); code != 401 {
			t.Errorf("auth %q: status %d, want 401", auth, code)
		}
		if e.Message != "401: Unauthorized" || e.Code == nil || *e.Code != 0 {
			t.Errorf("auth %q: body %+v", auth, e)
		}
	}
}

func TestIdentifyReadyGuildCreate(t *testing.T) {
	srv := startServer(t, Config{Shards: 2, GuildsPerShard: 3, MembersPerGuild: 5, HeartbeatInterval: 30 * time.Second})
	c := dial(t, srv, "/gateway", CompressNone)
	hello := c.expectOp(OpHello)
	var h struct {
		HeartbeatInterval int64 `json:"heartbeat_interval"`
	}
	if err := json.Unmarshal(hello.D, &h); err != nil || h.HeartbeatInterval != 30000 {
		t.Fatalf("HELLO d = %s (%v)", hello.D, err)
	}
	c.identify(srv.cfg.Token, 1, 2, allIntents)
	p := c.expectDispatch("READY")
	if p.seq() != 1 {
		t.Errorf("READY s = %d, want 1", p.seq())
	}
	var r readyInfo
	if err := json.Unmarshal(p.D, &r); err != nil {
		t.Fatal(err)
	}
	if r.V != 10 || !r.User.Bot || r.User.ID != srv.BotUserID() || r.Application.ID != srv.ApplicationID() {
		t.Errorf("READY user/app: %+v", r)
	}
	if len(r.SessionID) != 32 {
		t.Errorf("session_id %q", r.SessionID)
	}
	if r.ResumeGatewayURL != srv.ResumeURL() || !strings.HasSuffix(r.ResumeGatewayURL, "/resume") {
		t.Errorf("resume_gateway_url = %q, want %q", r.ResumeGatewayURL, srv.ResumeURL())
	}
	if len(r.Shard) != 2 || r.Shard[0] != 1 || r.Shard[1] != 2 {
		t.Errorf("shard = %v", r.Shard)
	}
	if len(r.Guilds) != 3 {
		t.Fatalf("READY guilds = %d, want 3", len(r.Guilds))
	}
	seen := map[string]bool{}
	for i, g := range r.Guilds {
		if !g.Unavailable {
			t.Errorf("guild %s not unavailable in READY", g.ID)
		}
		if sh, err := ShardForGuild(g.ID, 2); err != nil || sh != 1 {
			t.Errorf("guild %s routes to shard %d (%v), want 1", g.ID, sh, err)
		}
		if seen[g.ID] {
			t.Errorf("duplicate guild %s", g.ID)
		}
		seen[g.ID] = true
		gc := c.expectDispatch("GUILD_CREATE")
		if gc.seq() != int64(i+2) {
			t.Errorf("GUILD_CREATE s = %d, want %d", gc.seq(), i+2)
		}
		var body struct {
			ID          string `json:"id"`
			Name        string `json:"name"`
			OwnerID     string `json:"owner_id"`
			MemberCount int    `json:"member_count"`
			JoinedAt    string `json:"joined_at"`
			Unavailable bool   `json:"unavailable"`
			Members     []struct {
				User struct {
					ID       string `json:"id"`
					Username string `json:"username"`
				} `json:"user"`
				Roles    []string `json:"roles"`
				JoinedAt string   `json:"joined_at"`
			} `json:"members"`
			Roles    []struct{ ID, Name string } `json:"roles"`
			Channels []struct {
				ID   string `json:"id"`
				Type int    `json:"type"`
			} `json:"channels"`
		}
		if err := json.Unmarshal(gc.D, &body); err != nil {
			t.Fatal(err)
		}
		if body.ID != g.ID || body.Name == "" || body.OwnerID == "" || body.Unavailable || body.JoinedAt == "" {
			t.Errorf("GUILD_CREATE header: %+v", body)
		}
		if body.MemberCount != 5 || len(body.Members) != 5 {
			t.Errorf("members: count %d, list %d", body.MemberCount, len(body.Members))
		}
		for _, m := range body.Members {
			if m.User.ID == "" || m.User.Username == "" || m.JoinedAt == "" || m.Roles == nil {
				t.Errorf("member %+v", m)
			}
		}
		if len(body.Roles) == 0 || body.Roles[0].ID != g.ID || len(body.Channels) == 0 {
			t.Errorf("roles/channels: %+v %+v", body.Roles, body.Channels)
		}
	}
	// After READY the connection is live and the session is reported.
	if err := srv.WaitReady(waitCtx(t), 1); err != nil {
		t.Fatal(err)
	}
	ss := srv.Sessions()
	if len(ss) != 1 || ss[0].ID != r.SessionID || ss[0].Shard != 1 || ss[0].Total != 2 || !ss[0].Live || ss[0].Seq != 4 {
		t.Errorf("Sessions() = %+v", ss)
	}
	rec := srv.Record()
	if len(rec.Identifies) != 1 {
		t.Fatalf("identifies: %+v", rec.Identifies)
	}
	id := rec.Identifies[0]
	if id.Shard != 1 || id.Total != 2 || id.Intents != allIntents || id.Bucket != 0 || id.Path != "/gateway" || id.APIVersion != 10 || id.Outcome != IdentifyReady || id.SessionID != r.SessionID {
		t.Errorf("identify record %+v", id)
	}
	if st := srv.Stats(); st.SessionStartRemaining != 999 {
		t.Errorf("remaining = %d, want 999", st.SessionStartRemaining)
	}
	if len(rec.Violations) != 0 {
		t.Errorf("violations: %+v", rec.Violations)
	}
}

func TestHeartbeatAck(t *testing.T) {
	srv := startServer(t, Config{})
	c, _ := connectReady(t, srv, CompressNone, 0, 1, 0)
	c.heartbeat()
	c.expectOp(OpHeartbeatACK)
	if err := srv.RequestHeartbeat(0); err != nil {
		t.Fatal(err)
	}
	c.expectOp(OpHeartbeat)
	c.heartbeat()
	c.expectOp(OpHeartbeatACK)
}

// A heartbeat before IDENTIFY is allowed and acknowledged.
func TestHeartbeatBeforeIdentify(t *testing.T) {
	srv := startServer(t, Config{})
	c := dial(t, srv, "/gateway", CompressNone)
	c.expectOp(OpHello)
	c.heartbeat()
	c.expectOp(OpHeartbeatACK)
}

func TestResumeReplaysMissedDispatches(t *testing.T) {
	srv := startServer(t, Config{GuildsPerShard: 1})
	c, ready := connectReady(t, srv, CompressNone, 0, 1, allIntents)
	c.expectDispatch("GUILD_CREATE")
	guild := ready.Guilds[0].ID
	seq, err := srv.Dispatch(0, "GUILD_MEMBER_ADD", srv.MemberAddBody(guild, "1"))
	if err != nil || seq != 3 {
		t.Fatalf("Dispatch = %d, %v", seq, err)
	}
	if p := c.expectDispatch("GUILD_MEMBER_ADD"); p.seq() != 3 {
		t.Fatalf("s = %d", p.seq())
	}
	if err := srv.Drop(0); err != nil {
		t.Fatal(err)
	}
	if code, _ := c.expectClose(); code != 0 {
		t.Fatalf("Drop sent close code %d, want none", code)
	}
	// Dispatches while disconnected go to the session's log.
	var missed []string
	for i := 0; i < 5; i++ {
		body := srv.MemberUpdateBody(guild, strconv.Itoa(100+i))
		s, err := srv.Dispatch(0, "GUILD_MEMBER_UPDATE", body)
		if err != nil || s != int64(4+i) {
			t.Fatalf("offline Dispatch = %d, %v", s, err)
		}
		missed = append(missed, string(body))
	}

	c2 := dial(t, srv, "/resume", CompressNone)
	c2.expectOp(OpHello)
	c2.resume(srv.cfg.Token, ready.SessionID, 3)
	for i := 0; i < 5; i++ {
		p := c2.expectDispatch("GUILD_MEMBER_UPDATE")
		if p.seq() != int64(4+i) || string(p.D) != missed[i] {
			t.Fatalf("replay %d: s=%d d=%.80s", i, p.seq(), p.D)
		}
	}
	if p := c2.expectDispatch("RESUMED"); p.seq() != 9 {
		t.Fatalf("RESUMED s = %d, want 9", p.seq())
	}
	// Live again.
	if s, err := srv.Dispatch(0, "GUILD_DELETE", srv.GuildDeleteBody(guild, true)); err != nil || s != 10 {
		t.Fatalf("Dispatch = %d, %v", s, err)
	}
	if p := c2.expectDispatch("GUILD_DELETE"); p.seq() != 10 {
		t.Fatalf("s = %d", p.seq())
	}
	rec := srv.Record()
	if len(rec.Resumes) != 1 {
		t.Fatalf("resumes %+v", rec.Resumes)
	}
	r := rec.Resumes[0]
	if r.Shard != 0 || r.SessionID != ready.SessionID || r.Seq != 3 || r.Path != "/resume" || r.Outcome != ResumeResumed || r.Replayed != 5 {
		t.Errorf("resume record %+v", r)
	}
	if len(rec.Identifies) != 1 {
		t.Errorf("identifies %+v", rec.Identifies)
	}
	// The ledger has every dispatch once, all delivered by now.
	if err := srv.WaitFor(waitCtx(t), func() bool {
		for _, d := range srv.Dispatches() {
			if !d.Written {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatalf("ledger not fully written: %+v", srv.Dispatches())
	}
	var types []string
	for i, d := range srv.Dispatches() {
		if d.Seq != int64(i+1) || d.SessionID != ready.SessionID {
			t.Errorf("ledger %d: %+v", i, d)
		}
		types = append(types, d.Type)
	}
	want := "READY GUILD_CREATE GUILD_MEMBER_ADD GUILD_MEMBER_UPDATE GUILD_MEMBER_UPDATE GUILD_MEMBER_UPDATE GUILD_MEMBER_UPDATE GUILD_MEMBER_UPDATE RESUMED GUILD_DELETE"
	if got := strings.Join(types, " "); got != want {
		t.Errorf("ledger types\n got %s\nwant %s", got, want)
	}
}

// Undelivered dispatches are marked unwritten in the ledger until a resume
// delivers them.
func TestLedgerWrittenFlag(t *testing.T) {
	srv := startServer(t, Config{})
	c, ready := connectReady(t, srv, CompressNone, 0, 1, 0)
	c.close()
	// Wait until the server noticed the disconnect.
	if err := srv.WaitFor(waitCtx(t), func() bool { return !srv.Sessions()[0].Live }); err != nil {
		t.Fatal(err)
	}
	seq, err := srv.Dispatch(0, "TYPING_START", srv.TypingStartBody("1", "2", "3"))
	if err != nil {
		t.Fatal(err)
	}
	last := srv.Dispatches()[len(srv.Dispatches())-1]
	if last.Seq != seq || last.Written || last.Type != "TYPING_START" {
		t.Fatalf("ledger entry %+v", last)
	}
	c2 := dial(t, srv, "/resume", CompressNone)
	c2.expectOp(OpHello)
	c2.resume(srv.cfg.Token, ready.SessionID, 1)
	c2.expectDispatch("TYPING_START")
	c2.expectDispatch("RESUMED")
	if err := srv.WaitFor(waitCtx(t), func() bool { return srv.Dispatches()[1].Written }); err != nil {
		t.Fatal(err)
	}
	// A client close frame other than 1000/1001 is recorded with its code.
	found := false
	for _, cl := range srv.Record().ClientCloses {
		if cl.SessionID == ready.SessionID && cl.Code == 1006 {
			found = true
		}
	}
	if !found {
		t.Errorf("abrupt close not recorded: %+v", srv.Record().ClientCloses)
	}
}

func TestResumeInvalidSession(t *testing.T) {
	srv := startServer(t, Config{})
	_, ready := connectReady(t, srv, CompressNone, 0, 1, 0)
	for _, tc := range []struct {
		name, token, session string
		outcome              string
	}{
		{"unknown session", srv.cfg.Token, "0123456789abcdef0123456789abcdef", ResumeUnknownSession},
		{"wrong token", "nope", ready.SessionID, ResumeBadToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, srv, "/resume", CompressNone)
			c.expectOp(OpHello)
			c.resume(tc.token, tc.session, 1)
			p := c.expectOp(OpInvalidSession)
			if string(p.D) != "false" {
				t.Errorf("op 9 d = %s, want false", p.D)
			}
			rec := srv.Record()
			last := rec.Resumes[len(rec.Resumes)-1]
			if last.Outcome != tc.outcome || last.Path != "/resume" {
				t.Errorf("resume record %+v", last)
			}
		})
	}
}

// Discord invalidates the session when the client closes with 1000/1001 but
// keeps it resumable for other codes.
func TestClientCloseCodes(t *testing.T) {
	for _, tc := range []struct {
		code      int
		resumable bool
	}{{1000, false}, {1001, false}, {4000, true}, {3000, true}} {
		t.Run(strconv.Itoa(tc.code), func(t *testing.T) {
			srv := startServer(t, Config{})
			c, ready := connectReady(t, srv, CompressNone, 0, 1, 0)
			c.sendMu.Lock()
			_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(tc.code, "bye"), time.Now().Add(time.Second))
			c.sendMu.Unlock()
			if code, _ := c.expectClose(); code != tc.code {
				t.Errorf("server echoed %d, want %d", code, tc.code)
			}
			if err := srv.WaitFor(waitCtx(t), func() bool { return len(srv.Record().ClientCloses) > 0 }); err != nil {
				t.Fatal(err)
			}
			cl := srv.Record().ClientCloses[0]
			if cl.Code != tc.code || cl.Shard != 0 || cl.SessionID != ready.SessionID || cl.Echo {
				t.Errorf("close record %+v", cl)
			}
			c2 := dial(t, srv, "/resume", CompressNone)
			c2.expectOp(OpHello)
			c2.resume(srv.cfg.Token, ready.SessionID, 1)
			p := c2.next()
			if tc.resumable {
				if p.Op != OpDispatch || p.typ() != "RESUMED" {
					t.Errorf("got op %d %s, want RESUMED", p.Op, p.typ())
				}
			} else if p.Op != OpInvalidSession || string(p.D) != "false" {
				t.Errorf("got op %d d=%s, want op 9 false", p.Op, p.D)
			}
		})
	}
}

func TestResumeSeqAheadCloses4007(t *testing.T) {
	srv := startServer(t, Config{})
	c, ready := connectReady(t, srv, CompressNone, 0, 1, 0)
	c.close()
	c2 := dial(t, srv, "/resume", CompressNone)
	c2.expectOp(OpHello)
	c2.resume(srv.cfg.Token, ready.SessionID, 50)
	if code, _ := c2.expectClose(); code != CloseInvalidSeq {
		t.Fatalf("close %d, want 4007", code)
	}
	if _, err := srv.Dispatch(0, "TYPING_START", []byte(`{}`)); err != ErrNoSession {
		t.Errorf("Dispatch after 4007: %v, want ErrNoSession", err)
	}
}

func TestResumeBeyondReplayWindow(t *testing.T) {
	srv := startServer(t, Config{ReplayLimit: 3})
	c, ready := connectReady(t, srv, CompressNone, 0, 1, 0)
	c.close()
	if err := srv.WaitFor(waitCtx(t), func() bool { return !srv.Sessions()[0].Live }); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if _, err := srv.Dispatch(0, "TYPING_START", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	// Seq 8 is inside the window (9, 10, 11 kept): resumable.
	c2 := dial(t, srv, "/resume", CompressNone)
	c2.expectOp(OpHello)
	c2.resume(srv.cfg.Token, ready.SessionID, 8)
	for want := int64(9); want <= 11; want++ {
		if p := c2.expectDispatch("TYPING_START"); p.seq() != want {
			t.Fatalf("s = %d, want %d", p.seq(), want)
		}
	}
	c2.expectDispatch("RESUMED")
	c2.close()
	if err := srv.WaitFor(waitCtx(t), func() bool { return !srv.Sessions()[0].Live }); err != nil {
		t.Fatal(err)
	}
	// Seq 1 is long gone: op 9.
	c3 := dial(t, srv, "/resume", CompressNone)
	c3.expectOp(OpHello)
	c3.resume(srv.cfg.Token, ready.SessionID, 1)
	if p := c3.expectOp(OpInvalidSession); string(p.D) != "false" {
		t.Fatalf("d = %s", p.D)
	}
}

func TestIdentifyBucketViolation(t *testing.T) {
	// Both shards share bucket 0 (max_concurrency 1) and the window is long,
	// so the second IDENTIFY is certainly inside it.
	srv := startServer(t, Config{Shards: 2, MaxConcurrency: 1, IdentifyWindow: time.Minute})
	connectReady(t, srv, CompressNone, 0, 2, 0)
	c := dial(t, srv, "/gateway", CompressNone)
	c.expectOp(OpHello)
	c.identify(srv.cfg.Token, 1, 2, 0)
	if p := c.expectOp(OpInvalidSession); string(p.D) != "false" {
		t.Fatalf("op 9 d = %s", p.D)
	}
	rec := srv.Record()
	v := rec.ViolationsOf(ViolationIdentifyBucket)
	if len(v) != 1 || v[0].Shard != 1 {
		t.Fatalf("violations %+v", rec.Violations)
	}
	if last := rec.Identifies[len(rec.Identifies)-1]; last.Outcome != IdentifyRateLimited || last.Bucket != 0 {
		t.Errorf("identify record %+v", last)
	}
	// A rejected IDENTIFY does not start a session.
	if st := srv.Stats(); st.Sessions != 1 || st.SessionStartRemaining != 999 {
		t.Errorf("stats %+v", st)
	}
}

func TestIdentifyBucketLenient(t *testing.T) {
	srv := startServer(t, Config{Shards: 2, IdentifyWindow: time.Minute, LenientIdentify: true})
	connectReady(t, srv, CompressNone, 0, 2, 0)
	connectReady(t, srv, CompressNone, 1, 2, 0) // accepted despite the violation
	if v := srv.Record().ViolationsOf(ViolationIdentifyBucket); len(v) != 1 {
		t.Fatalf("violations %+v", v)
	}
}

func TestIdentifyBucketsNoViolation(t *testing.T) {
	t.Run("distinct buckets", func(t *testing.T) {
		srv := startServer(t, Config{Shards: 4, MaxConcurrency: 2, IdentifyWindow: time.Minute})
		connectReady(t, srv, CompressNone, 0, 4, 0)
		connectReady(t, srv, CompressNone, 1, 4, 0)
		if rec := srv.Record(); len(rec.Violations) != 0 {
			t.Fatalf("violations %+v", rec.Violations)
		}
	})
	t.Run("spaced", func(t *testing.T) {
		window := 200 * time.Millisecond
		srv := startServer(t, Config{Shards: 2, MaxConcurrency: 1, IdentifyWindow: window, IdentifyTolerance: -1})
		connectReady(t, srv, CompressNone, 0, 2, 0)
		first := srv.Record().Identifies[0].At
		// Wait (a precondition, not an assertion) until the window has
		// passed since the server saw the first IDENTIFY.
		time.Sleep(time.Until(first.Add(window + 20*time.Millisecond)))
		connectReady(t, srv, CompressNone, 1, 2, 0)
		if rec := srv.Record(); len(rec.Violations) != 0 {
			t.Fatalf("violations %+v", rec.Violations)
		}
	})
}

func TestWrongToken4004(t *testing.T) {
	srv := startServer(t, Config{Token: "right"})
	c := dial(t, srv, "/gateway", CompressNone)
	c.expectOp(OpHello)
	c.identify("wrong", 0, 1, 0)
	code, reason := c.expectClose()
	if code != CloseAuthenticationFailed || reason != "Authentication failed." {
		t.Fatalf("close %d %q", code, reason)
	}
	rec := srv.Record()
	if v := rec.ViolationsOf(ViolationAuth); len(v) != 1 {
		t.Errorf("violations %+v", rec.Violations)
	}
	if rec.Identifies[0].Outcome != IdentifyAuthFailed {
		t.Errorf("identify %+v", rec.Identifies[0])
	}
	if st := srv.Stats(); st.Sessions != 0 || st.SessionStartRemaining != 1000 {
		t.Errorf("stats %+v", st)
	}
}

func TestProtocolErrors(t *testing.T) {
	srv := startServer(t, Config{Shards: 2})
	tok := srv.cfg.Token
	cases := []struct {
		name     string
		identify bool // identify first
		send     string
		code     int
	}{
		{"unknown opcode", false, `{"op":5,"d":null}`, CloseUnknownOpcode},
		{"receive-only opcode", true, `{"op":11,"d":null}`, CloseUnknownOpcode},
		{"invalid json", false, `{"op":`, CloseDecodeError},
		{"no op", false, `{"d":1}`, CloseDecodeError},
		{"too large", false, `{"op":3,"d":"` + strings.Repeat("x", 5000) + `"}`, CloseDecodeError},
		{"presence before identify", false, `{"op":3,"d":{"since":null,"activities":[],"status":"online","afk":false}}`, CloseNotAuthenticated},
		{"second identify", true, mustString(identifyPayload(tok, 0, 2, 0)), CloseAlreadyAuthenticated},
		{"invalid shard", false, mustString(identifyPayload(tok, 2, 2, 0)), CloseInvalidShard},
		{"negative shard", false, mustString(identifyPayload(tok, -1, 2, 0)), CloseInvalidShard},
		{"missing intents", false, `{"op":2,"d":{"token":"` + tok + `","properties":{"os":"linux","browser":"x","device":"x"}}}`, CloseInvalidIntents},
		{"missing properties", false, `{"op":2,"d":{"token":"` + tok + `","intents":0}}`, CloseDecodeError},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, srv, "/gateway", CompressNone)
			c.expectOp(OpHello)
			if tc.identify {
				// Spread shards over distinct buckets' windows: use a
				// fresh server so bucket limits never interfere.
				srv2 := startServer(t, Config{Shards: 2, LenientIdentify: true})
				c = dial(t, srv2, "/gateway", CompressNone)
				c.expectOp(OpHello)
				c.identify(srv2.cfg.Token, 0, 2, 0)
				c.expectDispatch("READY")
			}
			c.sendRaw([]byte(tc.send))
			if code, _ := c.expectClose(); code != tc.code {
				t.Fatalf("case %d: close %d, want %d", i, code, tc.code)
			}
		})
	}
	if v := srv.Record().ViolationsOf(ViolationProtocol); len(v) == 0 {
		t.Errorf("protocol violations not recorded")
	}
}

func mustString(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func TestInvalidAPIVersion(t *testing.T) {
	srv := startServer(t, Config{})
	ws, resp, err := websocket.DefaultDialer.Dial(wsURL(srv.URL())+"/gateway?v=8&encoding=json", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(waitTimeout))
	_, _, err = ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != CloseInvalidAPIVersion {
		t.Fatalf("got %v, want close 4012", err)
	}
}

func TestSendRateViolation(t *testing.T) {
	srv := startServer(t, Config{SendLimit: 5, SendWindow: time.Hour})
	c, _ := connectReady(t, srv, CompressNone, 0, 1, 0) // IDENTIFY is payload 1
	for i := 0; i < 5; i++ {
		c.heartbeat()
	}
	code, _ := c.expectClose()
	if code != CloseRateLimited {
		t.Fatalf("close %d, want 4008", code)
	}
	rec := srv.Record()
	if v := rec.ViolationsOf(ViolationSendRate); len(v) != 1 || v[0].Shard != 0 {
		t.Fatalf("violations %+v", rec.Violations)
	}
	// 4008 leaves the session resumable.
	if ss := srv.Sessions(); ss[0].Invalid {
		t.Errorf("session invalidated by 4008")
	}
}

func TestWithheldAcks(t *testing.T) {
	srv := startServer(t, Config{})
	c, _ := connectReady(t, srv, CompressNone, 0, 1, 0)
	if err := srv.WithholdAcks(0, true); err != nil {
		t.Fatal(err)
	}
	c.heartbeat()
	// Frames are handled in order, so once the presence update (sent after
	// the heartbeat) is recorded, any ACK for the heartbeat would already be
	// queued ahead of the marker dispatched now.
	c.send(map[string]any{"op": OpPresenceUpdate, "d": map[string]any{"since": nil, "activities": []any{}, "status": "online", "afk": false}})
	if err := srv.WaitFor(waitCtx(t), func() bool { return len(srv.Record().Commands) == 1 }); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Dispatch(0, "MARKER", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	_, skipped := c.untilDispatch("MARKER")
	for _, p := range skipped {
		if p.Op == OpHeartbeatACK {
			t.Fatalf("ACK received while withheld")
		}
	}
	if err := srv.WithholdAcks(0, false); err != nil {
		t.Fatal(err)
	}
	c.heartbeat()
	c.expectOp(OpHeartbeatACK)
	if cmd := srv.Record().Commands[0]; cmd.Op != OpPresenceUpdate || cmd.Shard != 0 {
		t.Errorf("command %+v", cmd)
	}
}

func TestHeartbeatLateRecorded(t *testing.T) {
	srv := startServer(t, Config{HeartbeatInterval: 50 * time.Millisecond})
	c := dial(t, srv, "/gateway", CompressNone)
	c.expectOp(OpHello)
	// The client never heartbeats: the violation must be recorded, and the
	// connection is not closed by default.
	if err := srv.WaitFor(waitCtx(t), func() bool { return len(srv.Record().ViolationsOf(ViolationHeartbeatLate)) > 0 }); err != nil {
		t.Fatal(err)
	}
	c.heartbeat()
	c.expectOp(OpHeartbeatACK)
}

func TestHeartbeatLateCloses(t *testing.T) {
	srv := startServer(t, Config{HeartbeatInterval: 50 * time.Millisecond, CloseOnMissedHeartbeat: true})
	c := dial(t, srv, "/gateway", CompressNone)
	c.expectOp(OpHello)
	if code, _ := c.expectClose(); code != CloseSessionTimedOut {
		t.Fatalf("close %d, want 4009", code)
	}
}

func TestControlOpcodes(t *testing.T) {
	srv := startServer(t, Config{})
	c, _ := connectReady(t, srv, CompressNone, 0, 1, 0)
	if err := srv.Reconnect(0); err != nil {
		t.Fatal(err)
	}
	c.expectOp(OpReconnect)
	if err := srv.InvalidSession(0, true); err != nil {
		t.Fatal(err)
	}
	if p := c.expectOp(OpInvalidSession); string(p.D) != "true" {
		t.Fatalf("d = %s", p.D)
	}
	// The session was unbound; the client may resume it on the same socket.
	sid := srv.CurrentSession(0)
	c.resume(srv.cfg.Token, sid, 1)
	c.expectDispatch("RESUMED")
	if err := srv.SendRaw(0, []byte(`{"op":0,"t":"RAW","s":99,"d":{}}`)); err != nil {
		t.Fatal(err)
	}
	if p := c.expectDispatch("RAW"); p.seq() != 99 {
		t.Fatalf("raw s = %d", p.seq())
	}
	if err := srv.CloseWith(0, 4000, "custom"); err != nil {
		t.Fatal(err)
	}
	if code, reason := c.expectClose(); code != 4000 || reason != "custom" {
		t.Fatalf("close %d %q", code, reason)
	}
	if err := srv.Reconnect(7); err != ErrNoSession {
		t.Errorf("Reconnect(unknown shard) = %v", err)
	}
	if _, err := srv.Dispatch(3, "X", []byte(`{}`)); err != ErrNoSession {
		t.Errorf("Dispatch(unknown shard) = %v", err)
	}
}

func TestInvalidSessionNotResumable(t *testing.T) {
	srv := startServer(t, Config{LenientIdentify: true}) // re-IDENTIFY right away
	c, ready := connectReady(t, srv, CompressNone, 0, 1, 0)
	if err := srv.InvalidSession(0, false); err != nil {
		t.Fatal(err)
	}
	c.expectOp(OpInvalidSession)
	c.resume(srv.cfg.Token, ready.SessionID, 1)
	c.expectOp(OpInvalidSession)
	// Re-identifying on the same connection starts a new session.
	c.identify(srv.cfg.Token, 0, 1, 0)
	p := c.expectDispatch("READY")
	if p.seq() != 1 {
		t.Errorf("READY s = %d", p.seq())
	}
	if srv.CurrentSession(0) == ready.SessionID {
		t.Errorf("no new session")
	}
}

func TestSessionStartLimit(t *testing.T) {
	srv := startServer(t, Config{Shards: 2, MaxConcurrency: 2, SessionStartTotal: 1000, SessionStartRemaining: 1})
	c1, _ := connectReady(t, srv, CompressNone, 0, 2, 0)
	c2 := dial(t, srv, "/gateway", CompressNone)
	c2.expectOp(OpHello)
	c2.identify(srv.cfg.Token, 1, 2, 0)
	if code, _ := c2.expectClose(); code != CloseAuthenticationFailed {
		t.Fatalf("close %d, want 4004", code)
	}
	// Like a token reset: every session is terminated.
	if code, _ := c1.expectClose(); code != CloseAuthenticationFailed {
		t.Fatalf("live session closed with %d, want 4004", code)
	}
	if v := srv.Record().ViolationsOf(ViolationSessionStartLimit); len(v) != 1 {
		t.Fatalf("violations %+v", srv.Record().Violations)
	}
	var e map[string]any
	if code := getJSON(t, srv.APIURL()+"/gateway/bot", "Bot "+srv.cfg.Token, &e); code != 401 {
		t.Errorf("REST after token reset: %d", code)
	}
	srv.SetSessionStartRemaining(10)
	connectReady(t, srv, CompressNone, 1, 2, 0)
}

func TestSlowClientDropped(t *testing.T) {
	srv := startServer(t, Config{SendQueue: 4})
	c := dialNoRead(t, srv, "/gateway", CompressNone)
	_, hello, err := c.ws.ReadMessage()
	if err != nil || !bytes.Contains(hello, []byte(`"op":10`)) {
		t.Fatalf("hello %s %v", hello, err)
	}
	c.identify(srv.cfg.Token, 0, 1, 0)
	if err := srv.WaitConnected(waitCtx(t), 0); err != nil {
		t.Fatal(err)
	}
	sid := srv.CurrentSession(0)
	// Never read again: socket buffers fill, then the queue, then the drop.
	body := []byte(`{"blob":"` + strings.Repeat("x", 16<<10) + `"}`)
	for i := 0; srv.Stats().SlowClientDrops == 0; i++ {
		if i > 20000 {
			t.Fatal("client never dropped")
		}
		if _, err := srv.Dispatch(0, "BLOB", body); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.WaitFor(waitCtx(t), func() bool { return !srv.Sessions()[0].Live }); err != nil {
		t.Fatal(err)
	}
	// The session stays resumable and the replay delivers what was missed.
	info := srv.Sessions()[0]
	c2 := dial(t, srv, "/resume", CompressNone)
	c2.expectOp(OpHello)
	c2.resume(srv.cfg.Token, sid, 1)
	for want := int64(2); want <= info.Seq; want++ {
		if p := c2.expectDispatch("BLOB"); p.seq() != want {
			t.Fatalf("replay s = %d, want %d", p.seq(), want)
		}
	}
	c2.expectDispatch("RESUMED")
}

func TestCompressionStreams(t *testing.T) {
	for _, comp := range []Compression{CompressZlib, CompressZstd} {
		t.Run(string(comp), func(t *testing.T) {
			srv := startServer(t, Config{GuildsPerShard: 3, MembersPerGuild: 50})
			c, ready := connectReady(t, srv, comp, 0, 1, allIntents)
			for range ready.Guilds {
				c.expectDispatch("GUILD_CREATE")
			}
			c.heartbeat()
			c.expectOp(OpHeartbeatACK)
			// Similar payloads exercise back-references across messages.
			for i := 0; i < 20; i++ {
				body := srv.MessageCreateBody(ready.Guilds[0].ID, channelID(ready.Guilds[0].ID, 1), memberUserID(ready.Guilds[0].ID, i), true)
				if _, err := srv.Dispatch(0, "MESSAGE_CREATE", body); err != nil {
					t.Fatal(err)
				}
				p := c.expectDispatch("MESSAGE_CREATE")
				if !bytes.Equal(p.D, body) {
					t.Fatalf("body mismatch:\n got %.120s\nwant %.120s", p.D, body)
				}
			}
			if err := srv.SendRaw(0, []byte(`{"op":11,"d":null,"s":null,"t":null}`)); err != nil {
				t.Fatal(err)
			}
			c.expectOp(OpHeartbeatACK)
			c.mu.Lock()
			frames := len(c.frames)
			var total int
			for _, f := range c.frames {
				total += len(f)
			}
			c.mu.Unlock()
			// HELLO, READY, 3 GUILD_CREATE, ACK, 20 messages, raw ACK.
			if frames != 27 {
				t.Errorf("frames = %d, want 27", frames)
			}
			t.Logf("%s: %d frames, %d compressed bytes", comp, frames, total)
		})
	}
}

func TestLoadGenerator(t *testing.T) {
	srv := startServer(t, Config{GuildsPerShard: 2, MembersPerGuild: 10, EventRate: 500})
	c, ready := connectReady(t, srv, CompressZlib, 0, 1, allIntents|IntentMessageContent)
	types := map[string]int{}
	last := int64(1) // READY
	for n := 0; n < 300; {
		p := c.next()
		if p.Op != OpDispatch {
			continue
		}
		if p.seq() != last+1 {
			t.Fatalf("seq jumped from %d to %d", last, p.seq())
		}
		last = p.seq()
		if p.typ() == "READY" || p.typ() == "GUILD_CREATE" {
			continue
		}
		types[p.typ()]++
		n++
		var d struct {
			GuildID string `json:"guild_id"`
		}
		if err := json.Unmarshal(p.D, &d); err != nil || (d.GuildID != ready.Guilds[0].ID && d.GuildID != ready.Guilds[1].ID) {
			t.Fatalf("%s guild_id %q not one of the shard's guilds", p.typ(), d.GuildID)
		}
	}
	if len(types) < 4 {
		t.Errorf("mix too narrow: %v", types)
	}
	t.Logf("mix: %v", types)
	srv.SetEventRate(0)
	if srv.EventRate() != 0 {
		t.Fatal("rate not updated")
	}
}

func TestLoadGeneratorRespectsIntents(t *testing.T) {
	srv := startServer(t, Config{EventRate: 400})
	c, _ := connectReady(t, srv, CompressNone, 0, 1, IntentGuilds) // no message/presence/member intents
	for n := 0; n < 30; n++ {
		p := c.next()
		if p.Op != OpDispatch {
			continue
		}
		if p.typ() != "INTERACTION_CREATE" {
			t.Fatalf("got %s without its intent", p.typ())
		}
	}
}

// Dispatches generated while disconnected land in the log (and the ledger)
// and are replayed on RESUME.
func TestLoadGeneratorWhileDisconnected(t *testing.T) {
	srv := startServer(t, Config{EventRate: 300})
	c, ready := connectReady(t, srv, CompressNone, 0, 1, allIntents)
	c.close()
	if err := srv.WaitFor(waitCtx(t), func() bool { return !srv.Sessions()[0].Live }); err != nil {
		t.Fatal(err)
	}
	base := srv.Sessions()[0].Seq
	if err := srv.WaitFor(waitCtx(t), func() bool { return srv.Sessions()[0].Seq >= base+20 }); err != nil {
		t.Fatal(err)
	}
	srv.SetEventRate(0)
	c2 := dial(t, srv, "/resume", CompressNone)
	c2.expectOp(OpHello)
	c2.resume(srv.cfg.Token, ready.SessionID, base)
	p, replay := c2.untilDispatch("RESUMED")
	if len(replay) < 20 {
		t.Fatalf("replayed %d, want >= 20", len(replay))
	}
	for i, r := range replay {
		if r.seq() != base+1+int64(i) {
			t.Fatalf("replay %d has s=%d", i, r.seq())
		}
	}
	if p.seq() != replay[len(replay)-1].seq()+1 {
		t.Errorf("RESUMED s = %d", p.seq())
	}
}

func TestRequestGuildMembers(t *testing.T) {
	srv := startServer(t, Config{GuildsPerShard: 1, MembersPerGuild: 1500})
	c, ready := connectReady(t, srv, CompressNone, 0, 1, allIntents)
	c.expectDispatch("GUILD_CREATE")
	nonce := "n1"
	c.send(map[string]any{"op": OpRequestGuildMembers, "d": map[string]any{"guild_id": ready.Guilds[0].ID, "query": "", "limit": 0, "nonce": nonce}})
	got := 0
	for i := 0; i < 2; i++ {
		p := c.expectDispatch("GUILD_MEMBERS_CHUNK")
		var d struct {
			GuildID    string            `json:"guild_id"`
			Members    []json.RawMessage `json:"members"`
			ChunkIndex int               `json:"chunk_index"`
			ChunkCount int               `json:"chunk_count"`
			Nonce      string            `json:"nonce"`
		}
		if err := json.Unmarshal(p.D, &d); err != nil {
			t.Fatal(err)
		}
		if d.GuildID != ready.Guilds[0].ID || d.ChunkIndex != i || d.ChunkCount != 2 || d.Nonce != nonce {
			t.Errorf("chunk header %+v", d)
		}
		got += len(d.Members)
	}
	if got != 1500 {
		t.Errorf("members = %d, want 1500", got)
	}
}

func TestGuildIDForShard(t *testing.T) {
	for _, total := range []int{1, 2, 7, 16, 1000} {
		seen := map[string]bool{}
		for shard := 0; shard < min(total, 20); shard++ {
			for n := 0; n < 50; n++ {
				id := GuildIDForShard(shard, total, n)
				if seen[id] {
					t.Fatalf("duplicate id %s (shard %d/%d n %d)", id, shard, total, n)
				}
				seen[id] = true
				if got, err := ShardForGuild(id, total); err != nil || got != shard {
					t.Fatalf("id %s routes to %d, want %d/%d", id, got, shard, total)
				}
				if len(id) < 18 {
					t.Fatalf("id %s too short to look real", id)
				}
			}
		}
	}
}

func TestBodies(t *testing.T) {
	srv := New(Config{})
	g := GuildIDForShard(0, 1, 0)
	u := memberUserID(g, 3)
	bodies := map[string][]byte{
		"GUILD_CREATE":        srv.GuildCreateBody(0, g, 10),
		"GUILD_DELETE":        srv.GuildDeleteBody(g, false),
		"GUILD_MEMBER_ADD":    srv.MemberAddBody(g, u),
		"GUILD_MEMBER_REMOVE": srv.MemberRemoveBody(g, u),
		"GUILD_MEMBER_UPDATE": srv.MemberUpdateBody(g, u),
		"INTERACTION_CREATE":  srv.InteractionCreateBody(g, channelID(g, 1), u),
		"MESSAGE_CREATE":      srv.MessageCreateBody(g, channelID(g, 1), u, true),
		"TYPING_START":        srv.TypingStartBody(g, channelID(g, 1), u),
		"PRESENCE_UPDATE":     srv.PresenceUpdateBody(g, u),
	}
	for typ, b := range bodies {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		if typ != "GUILD_CREATE" && typ != "GUILD_DELETE" && m["guild_id"] != g {
			t.Errorf("%s: guild_id %v", typ, m["guild_id"])
		}
	}
	if string(bodies["GUILD_DELETE"]) != fmt.Sprintf(`{"id":%q}`, g) {
		t.Errorf("GUILD_DELETE removed = %s", bodies["GUILD_DELETE"])
	}
	if b := srv.GuildDeleteBody(g, true); !bytes.Contains(b, []byte(`"unavailable":true`)) {
		t.Errorf("GUILD_DELETE unavailable = %s", b)
	}
	for _, typ := range []string{"GUILD_MEMBER_ADD", "GUILD_MEMBER_UPDATE"} {
		if n := len(bodies[typ]); n < 450 || n > 900 {
			t.Errorf("%s is %d bytes, want ~600: %s", typ, n, bodies[typ])
		}
	}
	var add struct {
		User struct{ ID string } `json:"user"`
	}
	_ = json.Unmarshal(bodies["GUILD_MEMBER_ADD"], &add)
	if add.User.ID != u {
		t.Errorf("member add user %q, want %q", add.User.ID, u)
	}
}

// Two servers in one process are independent.
func TestTwoServers(t *testing.T) {
	a := startServer(t, Config{Token: "a"})
	b := startServer(t, Config{Token: "b"})
	connectReady(t, a, CompressNone, 0, 1, 0)
	connectReady(t, b, CompressNone, 0, 1, 0)
	if a.BotUserID() == b.BotUserID() {
		t.Errorf("servers share a bot id")
	}
	if len(a.Record().Identifies) != 1 || len(b.Record().Identifies) != 1 {
		t.Errorf("records leak between servers")
	}
}

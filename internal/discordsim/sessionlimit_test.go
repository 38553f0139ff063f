package discordsim

import (
	"testing"
	"time"
)

// The session start budget: Discord's daily limit, with a window short
// enough for a test to see it reset.

type startLimit struct {
	Total      int   `json:"total"`
	Remaining  int   `json:"remaining"`
	ResetAfter int64 `json:"reset_after"` // ms
}

func gatewayBotLimit(t *testing.T, srv *Server) startLimit {
	t.Helper()
	var gb struct {
		Limit startLimit `json:"session_start_limit"`
	}
	if code := getJSON(t, srv.APIURL()+"/gateway/bot", "Bot "+srv.cfg.Token, &gb); code != 200 {
		t.Fatalf("GET /gateway/bot: %d", code)
	}
	return gb.Limit
}

func TestSessionStartsRefillToTheTotalWhenTheResetWindowEnds(t *testing.T) {
	const window = 400 * time.Millisecond
	srv := startServer(t, Config{Shards: 2, MaxConcurrency: 2, SessionStartTotal: 5, SessionStartRemaining: 1, SessionStartResetAfter: window})
	l := gatewayBotLimit(t, srv)
	if l.Total != 5 || l.Remaining != 1 || l.ResetAfter <= 0 || l.ResetAfter > window.Milliseconds() {
		t.Fatalf("before the reset: %+v, want 1 of 5 remaining, reset_after in (0, %d]", l, window.Milliseconds())
	}
	connectReady(t, srv, CompressNone, 0, 2, 0)
	if l := gatewayBotLimit(t, srv); l.Remaining != 0 {
		t.Fatalf("after an IDENTIFY: %+v", l)
	}

	time.Sleep(time.Duration(l.ResetAfter)*time.Millisecond + 50*time.Millisecond)
	if l := gatewayBotLimit(t, srv); l.Remaining != 5 || l.ResetAfter <= 0 || l.ResetAfter > window.Milliseconds() {
		t.Fatalf("after the reset: %+v, want 5 remaining and a new window", l)
	}
	connectReady(t, srv, CompressNone, 1, 2, 0)
	if v := srv.Record().ViolationsOf(ViolationSessionStartLimit); len(v) != 0 {
		t.Fatalf("violations %+v", v)
	}
}

func TestSessionStartsRefillOnIdentifyWithoutARestRead(t *testing.T) {
	const window = 200 * time.Millisecond
	srv := startServer(t, Config{Shards: 2, MaxConcurrency: 2, SessionStartTotal: 3, SessionStartRemaining: -1, SessionStartResetAfter: window})
	time.Sleep(window + 50*time.Millisecond)
	connectReady(t, srv, CompressNone, 0, 2, 0)
	if st := srv.Stats(); st.SessionStartRemaining != 2 {
		t.Fatalf("remaining %d, want 2 (refilled to 3, one used)", st.SessionStartRemaining)
	}
}

// With SessionLimitInvalidSession an IDENTIFY over the limit is answered
// with op 9 (d=false) and the token keeps working: a client that does not
// count its session starts loops, and the test can count the loop.
func TestSessionLimitInvalidSessionAnswersOp9AndKeepsTheToken(t *testing.T) {
	srv := startServer(t, Config{Shards: 2, MaxConcurrency: 2, SessionStartRemaining: 1, SessionLimitInvalidSession: true})
	live, _ := connectReady(t, srv, CompressNone, 0, 2, 0)

	c := dial(t, srv, "/gateway", CompressNone)
	c.expectOp(OpHello)
	c.identify(srv.cfg.Token, 1, 2, 0)
	if p := c.expectOp(OpInvalidSession); string(p.D) != "false" {
		t.Fatalf("op 9 d = %s, want false", p.D)
	}
	rec := srv.Record()
	if v := rec.ViolationsOf(ViolationSessionStartLimit); len(v) != 1 {
		t.Fatalf("violations %+v, want one session_start_limit", rec.Violations)
	}
	if last := rec.Identifies[len(rec.Identifies)-1]; last.Outcome != IdentifySessionLimit {
		t.Fatalf("identify outcome %q, want %q", last.Outcome, IdentifySessionLimit)
	}
	if l := gatewayBotLimit(t, srv); l.Remaining != 0 {
		t.Fatalf("token no longer works or budget changed: %+v", l)
	}
	// The live session was not terminated.
	live.heartbeat()
	live.expectOp(OpHeartbeatACK)
}

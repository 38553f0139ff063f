package shard

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/shardpool/gateway/service/event"
)

// The session's rules, each checked without a socket, a goroutine or a
// clock. Quotes are from Discord's gateway documentation
// (discord.com/developers/docs/events/gateway and
// .../topics/opcodes-and-status-codes).

const (
	testGateway  = "wss://gateway.test"
	testResume   = "wss://resume.test"
	testInterval = 40 * time.Second
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newTestSession(resume *Handoff) *Session {
	return NewSession(SessionConfig{
		GatewayURL:          testGateway,
		Backoff:             Backoff{Base: time.Second, Max: 8 * time.Second},
		InvalidSessionDelay: func() time.Duration { return 3 * time.Second },
		Rand:                func() float64 { return 0.5 },
		Resume:              resume,
	})
}

// do feeds inputs and returns the actions of the last one, without Enter.
func do(s *Session, ins ...Input) []Action {
	var out []Action
	for _, in := range ins {
		out = s.Handle(in, nil)
	}
	return withoutEnter(out)
}

func withoutEnter(acts []Action) []Action {
	var out []Action
	for _, a := range acts {
		if _, ok := a.(Enter); !ok {
			out = append(out, a)
		}
	}
	return out
}

func wantActions(t *testing.T, got []Action, want ...Action) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("actions\n got %#v\nwant %#v", got, want)
	}
}

// connect takes a session through Start, Dialed and HELLO.
func connect(s *Session) []Action {
	do(s, Start{}, Dialed{})
	return do(s, Hello{Interval: testInterval})
}

func readyDispatch(seq int64) *Dispatch {
	return &Dispatch{Type: "READY", Seq: seq, Ready: &Ready{SessionID: "sess-1", ResumeGatewayURL: testResume}}
}

// readySession is connected and READY, at seq 1.
func readySession() *Session {
	s := newTestSession(nil)
	connect(s)
	do(s, readyDispatch(1))
	return s
}

func published(seq int64) *Dispatch {
	return &Dispatch{Type: "MESSAGE_CREATE", Seq: seq, Event: &event.Event{Type: "message.create"}}
}

// endOf feeds a close and returns the Dial or Stop that ends the connection.
func endOf(t *testing.T, s *Session, in Input) Action {
	t.Helper()
	acts := do(s, in)
	if len(acts) != 1 {
		t.Fatalf("%T: got %#v, want one Dial or Stop", in, acts)
	}
	return acts[0]
}

func TestStartDialsTheGatewayURLFromGatewayBot(t *testing.T) {
	s := newTestSession(nil)
	wantActions(t, do(s, Start{}), Dial{URL: testGateway})
	if s.State() != StateConnecting {
		t.Fatalf("state %s", s.State())
	}
}

// "heartbeat_interval * jitter, where jitter is any random value between 0
// and 1"; a new session identifies.
func TestHelloStartsHeartbeatingWithJitterThenIdentifies(t *testing.T) {
	s := newTestSession(nil)
	wantActions(t, connect(s), StartHeartbeat{First: testInterval / 2, Interval: testInterval}, SendIdentify{})
	if s.State() != StateIdentifying {
		t.Fatalf("state %s", s.State())
	}
}

// "When resuming, you should connect using the URL in resume_gateway_url",
// and the RESUME carries the session and a sequence: ours is the last one
// whose event JetStream acked, so Discord replays what was not.
func TestHelloResumesAHandedOffSessionOnItsResumeURLFromTheAckedSeq(t *testing.T) {
	s := newTestSession(&Handoff{SessionID: "sess-0", ResumeGatewayURL: testResume, Seq: 41})
	wantActions(t, do(s, Start{}), Dial{URL: testResume, Resume: true})
	do(s, Dialed{})
	wantActions(t, do(s, Hello{Interval: testInterval}),
		StartHeartbeat{First: testInterval / 2, Interval: testInterval}, SendResume{SessionID: "sess-0", Seq: 41})
	if s.State() != StateResuming {
		t.Fatalf("state %s", s.State())
	}
}

func TestASecondHelloOnOneConnectionIsIgnored(t *testing.T) {
	s := newTestSession(nil)
	connect(s)
	wantActions(t, do(s, Hello{Interval: testInterval}))
}

func TestReadyMakesTheSessionResumableAndReady(t *testing.T) {
	s := readySession()
	if s.State() != StateReady || !s.Resumable() {
		t.Fatalf("state %s resumable %v", s.State(), s.Resumable())
	}
	if acked, seen := s.Seqs(); acked != 1 || seen != 1 {
		t.Fatalf("seqs %d/%d, want 1/1", acked, seen)
	}
}

// "The gateway may request a heartbeat from the client in some situations by
// sending an Opcode 1 Heartbeat. When this occurs, the client should
// immediately send an Opcode 1 Heartbeat".
func TestHeartbeatRequestIsAnsweredAtOnceWithTheLastSeq(t *testing.T) {
	s := readySession()
	do(s, published(2), published(3))
	wantActions(t, do(s, HeartbeatRequest{}), SendHeartbeat{Seq: 3})
}

// "d: last sequence number received, or null" before any dispatch.
func TestTimedHeartbeatCarriesTheLastSeqReceived(t *testing.T) {
	s := newTestSession(nil)
	connect(s)
	wantActions(t, do(s, HeartbeatDue{At: t0}), SendHeartbeat{Seq: 0})
	do(s, HeartbeatAck{At: t0.Add(time.Millisecond)}, readyDispatch(1), published(7))
	wantActions(t, do(s, HeartbeatDue{At: t0.Add(testInterval)}), SendHeartbeat{Seq: 7})
	if lat := s.Latency(); lat != time.Millisecond {
		t.Fatalf("latency %v", lat)
	}
}

// "If a client does not receive a heartbeat ACK between its attempts at
// sending heartbeats, this may be due to a failed or 'zombied' connection.
// The client should immediately terminate the connection with any close code
// besides 1000 and 1001, then reconnect and attempt to Resume."
func TestNoAckBetweenTimedHeartbeatsClosesAZombieAndResumes(t *testing.T) {
	s := readySession()
	do(s, HeartbeatDue{At: t0})
	wantActions(t, do(s, HeartbeatDue{At: t0.Add(testInterval)}), Close{closeResumable, "heartbeat not acknowledged"})
	d := endOf(t, s, Closed{Code: -1}).(Dial)
	if d.URL != testResume || !d.Resume || d.Reason != "zombie" {
		t.Fatalf("after a zombie: %+v", d)
	}
}

// Fault 4: a heartbeat sent because Discord asked (op 1) just before the
// timer tick is still unacked at the tick; the tick's own beat was acked, so
// the connection is alive.
func TestHeartbeatRequestedJustBeforeTheTickIsNotAZombie(t *testing.T) {
	s := readySession()
	do(s, HeartbeatDue{At: t0}, HeartbeatAck{At: t0})
	do(s, HeartbeatRequest{})
	wantActions(t, do(s, HeartbeatDue{At: t0.Add(testInterval)}), SendHeartbeat{Seq: 1})
	// Both outstanding beats acked in time: still alive at the next tick.
	do(s, HeartbeatAck{At: t0.Add(testInterval)}, HeartbeatAck{At: t0.Add(testInterval)})
	wantActions(t, do(s, HeartbeatDue{At: t0.Add(2 * testInterval)}), SendHeartbeat{Seq: 1})
}

// Backpressure pauses the socket reads: an ACK may be sitting unread, so a
// missing one is not a zombie while reads were paused.
func TestMissingAckWhileReadsWerePausedIsNotAZombie(t *testing.T) {
	s := readySession()
	do(s, HeartbeatDue{At: t0})
	wantActions(t, do(s, HeartbeatDue{At: t0.Add(testInterval), ReadsPaused: true}), SendHeartbeat{Seq: 1})
}

// "Opcode 7 Reconnect: You should attempt to reconnect and resume
// immediately."
func TestReconnectRequestClosesResumablyAndResumes(t *testing.T) {
	s := readySession()
	wantActions(t, do(s, ReconnectRequest{}), Close{closeResumable, "reconnect requested"})
	d := endOf(t, s, Closed{Code: closeResumable}).(Dial)
	if !d.Resume || d.URL != testResume || d.Reason != "op7_reconnect" || d.After >= time.Second {
		t.Fatalf("after op 7: %+v", d)
	}
}

// "If d is true, attempt to resume."
func TestInvalidSessionResumableResumes(t *testing.T) {
	s := readySession()
	do(s, InvalidSession{Resumable: true})
	d := endOf(t, s, Closed{Code: closeResumable}).(Dial)
	if !d.Resume || d.URL != testResume || d.Reason != "op9_resumable" {
		t.Fatalf("after op 9 true: %+v", d)
	}
}

// "If d is false, the client should ... wait a random amount of time—between
// 1 and 5 seconds—then send a fresh Opcode 2 Identify"; the resume URL
// belonged to the dead session and is dropped with it.
func TestInvalidSessionNotResumableIdentifiesAfterAPauseOnTheMainURL(t *testing.T) {
	s := readySession()
	do(s, published(2))
	do(s, InvalidSession{Resumable: false})
	d := endOf(t, s, Closed{Code: closeResumable}).(Dial)
	if d.Resume || d.URL != testGateway || d.After != 3*time.Second || d.Reason != "op9_invalid_session" {
		t.Fatalf("after op 9 false: %+v", d)
	}
	if s.Resumable() || s.Handoff(t0) != nil {
		t.Fatal("the invalidated session is still resumable")
	}
	do(s, Dialed{})
	wantActions(t, do(s, Hello{Interval: testInterval}), StartHeartbeat{First: testInterval / 2, Interval: testInterval}, SendIdentify{})
	wantActions(t, do(s, HeartbeatDue{At: t0}), SendHeartbeat{Seq: 0})
}

// Discord's close code table: "Reconnect" true or false, and 4007/4009 ask
// for a new session.
func TestEveryCloseCode(t *testing.T) {
	type outcome int
	const (
		resume outcome = iota
		identify
		fatal
	)
	for _, tc := range []struct {
		code int
		want outcome
		msg  string // in the fatal error
	}{
		{4000, resume, ""},
		{4001, resume, ""},
		{4002, resume, ""},
		{4003, resume, ""},
		{4004, fatal, "DISCORD_TOKEN"},
		{4005, resume, ""},
		{4007, identify, ""},
		{4008, resume, ""},
		{4009, identify, ""},
		{4010, fatal, "TOTAL_SHARDS"},
		{4011, fatal, "sharding required"},
		{4012, fatal, "API version"},
		{4013, fatal, "invalid intents"},
		{4014, fatal, "Server Members intent"},
		{1000, resume, ""}, // if Discord ended the session, the RESUME gets op 9
		{1001, resume, ""},
		{1006, resume, ""},
		{-1, resume, ""}, // TCP dropped, no close frame
	} {
		s := readySession()
		end := endOf(t, s, Closed{Code: tc.code, Err: errors.New("closed")})
		switch tc.want {
		case fatal:
			stop, ok := end.(Stop)
			if !ok || stop.Err == nil || !strings.Contains(stop.Err.Error(), tc.msg) {
				t.Errorf("%d: got %#v, want a fatal Stop naming %q", tc.code, end, tc.msg)
			}
			if s.State() != StateFailed {
				t.Errorf("%d: state %s", tc.code, s.State())
			}
		case identify:
			d, ok := end.(Dial)
			if !ok || d.Resume || d.URL != testGateway || d.After < 3*time.Second {
				t.Errorf("%d: got %#v, want IDENTIFY on the main URL after the pause", tc.code, end)
			}
		case resume:
			d, ok := end.(Dial)
			if !ok || !d.Resume || d.URL != testResume {
				t.Errorf("%d: got %#v, want RESUME on the resume URL", tc.code, end)
			}
		}
	}
}

// Fault 5: "Resuming uses resume_gateway_url"; when that host cannot be
// dialed the same session is resumed on the main gateway URL instead of
// retrying a dead host forever.
func TestDeadResumeURLFallsBackToTheMainURLForTheSameSession(t *testing.T) {
	s := readySession()
	d := endOf(t, s, Closed{Code: -1}).(Dial)
	if d.URL != testResume {
		t.Fatalf("first resume goes to %s", d.URL)
	}
	d = endOf(t, s, DialFailed{Err: errors.New("connection refused")}).(Dial)
	if d.URL != testGateway || !d.Resume || d.Reason != "dial" {
		t.Fatalf("after the resume URL failed: %+v", d)
	}
	do(s, Dialed{})
	wantActions(t, do(s, Hello{Interval: testInterval}), StartHeartbeat{First: testInterval / 2, Interval: testInterval}, SendResume{SessionID: "sess-1", Seq: 1})
}

func TestMissingHelloOnTheResumeURLAlsoFallsBack(t *testing.T) {
	s := readySession()
	endOf(t, s, Closed{Code: -1})
	do(s, Dialed{})
	wantActions(t, do(s, HelloTimeout{}), Close{closeResumable, "no HELLO"})
	d := endOf(t, s, Closed{Code: -1}).(Dial)
	if d.URL != testGateway || !d.Resume || d.Reason != "hello_timeout" {
		t.Fatalf("after no HELLO: %+v", d)
	}
}

// The resume point is the last contiguous sequence whose event JetStream
// acked (or that needed no publishing); only from there does a RESUME make
// Discord replay everything not yet stored.
func TestResumePointIsTheLastContiguousAckedSeq(t *testing.T) {
	s := readySession()
	var pubs []Publish
	for seq := int64(2); seq <= 6; seq++ {
		for _, a := range do(s, published(seq)) {
			pubs = append(pubs, a.(Publish))
		}
	}
	do(s, &Dispatch{Type: "TYPING_START", Seq: 7}) // not published
	if len(pubs) != 5 {
		t.Fatalf("%d publishes", len(pubs))
	}
	ack := func(p Publish) { do(s, Acked{Gen: p.Gen, Seq: p.Seq}) }
	check := func(want int64) {
		t.Helper()
		if acked, _ := s.Seqs(); acked != want {
			t.Fatalf("resume point %d, want %d", acked, want)
		}
	}
	check(1)
	ack(pubs[0]) // 2
	ack(pubs[2]) // 4
	check(2)
	ack(pubs[1]) // 3
	check(4)
	ack(pubs[4]) // 6
	check(4)
	ack(pubs[3]) // 5: 5, 6 and the unpublished 7
	check(7)
}

// Fault 2: a dispatch too large to read is skipped; the gap it leaves must
// not pin the resume point, or Discord would replay it after every RESUME.
func TestSkippedDispatchDoesNotPinTheResumePoint(t *testing.T) {
	s := readySession()
	do(s, Skipped{Seq: 2})
	p := do(s, published(3))[0].(Publish)
	do(s, Acked{Gen: p.Gen, Seq: p.Seq})
	if acked, seen := s.Seqs(); acked != 3 || seen != 3 {
		t.Fatalf("seqs %d/%d, want 3/3", acked, seen)
	}
}

func TestAcksOfAnEarlierSessionAreIgnored(t *testing.T) {
	s := readySession()
	p := do(s, published(2))[0].(Publish)
	do(s, InvalidSession{Resumable: false}, Closed{Code: closeResumable}, Dialed{}, Hello{Interval: testInterval})
	do(s, &Dispatch{Type: "READY", Seq: 1, Ready: &Ready{SessionID: "sess-2", ResumeGatewayURL: testResume}})
	do(s, published(2)) // the new session's seq 2, not acked
	do(s, Acked{Gen: p.Gen, Seq: p.Seq})
	if acked, _ := s.Seqs(); acked != 1 {
		t.Fatalf("resume point %d: an old session's ack moved the new one", acked)
	}
}

// A RESUME is answered by a replay from our resume point and then RESUMED.
func TestResumedIsReadyAndKeepsTheResumePoint(t *testing.T) {
	s := readySession()
	do(s, published(2))
	endOf(t, s, Closed{Code: -1})
	do(s, Dialed{})
	wantActions(t, do(s, Hello{Interval: testInterval}), StartHeartbeat{First: testInterval / 2, Interval: testInterval}, SendResume{SessionID: "sess-1", Seq: 1})
	do(s, published(2), &Dispatch{Type: "RESUMED", Seq: 3})
	if s.State() != StateReady {
		t.Fatalf("state %s", s.State())
	}
}

func TestHandoffRecordsTheSessionItsResumeURLAndTheAckedSeq(t *testing.T) {
	s := readySession()
	do(s, published(2))
	h := s.Handoff(t0)
	want := &Handoff{SessionID: "sess-1", ResumeGatewayURL: testResume, Seq: 1, Time: t0}
	if !reflect.DeepEqual(h, want) {
		t.Fatalf("handoff %+v, want %+v", h, want)
	}
}

// A drain leaves the session resumable for a successor: "any close code
// besides 1000 and 1001" (those would invalidate it).
func TestShutdownClosesWithAResumableCodeThenStops(t *testing.T) {
	s := readySession()
	wantActions(t, do(s, Shutdown{}), Close{closeResumable, "draining"})
	wantActions(t, do(s, Closed{Code: -1}), Stop{})
	if s.State() != StateDrained || !s.Resumable() {
		t.Fatalf("state %s resumable %v", s.State(), s.Resumable())
	}
}

func TestShutdownBetweenConnectionsStopsAtOnce(t *testing.T) {
	s := readySession()
	endOf(t, s, Closed{Code: -1})
	wantActions(t, do(s, Shutdown{}), Stop{})
}

// The drain's goroutine may hand in Shutdown just after a connection ended
// on its own; the driver, waiting to redial, hands it in again and must get
// its Stop (it used to get nothing and spin).
func TestShutdownAfterTheConnectionEndedStopsEveryTimeItIsAsked(t *testing.T) {
	s := readySession()
	endOf(t, s, Closed{Code: -1})
	wantActions(t, do(s, Shutdown{}), Stop{})
	wantActions(t, do(s, Shutdown{}), Stop{})
}

func TestShutdownDuringASessionCloseStopsWhenTheCloseCompletes(t *testing.T) {
	s := readySession()
	do(s, ReconnectRequest{})
	wantActions(t, do(s, Shutdown{}))
	wantActions(t, do(s, Closed{Code: closeResumable}), Stop{})
}

func TestBackoffGrowsWhileConnectionsFailAndResetsOnceOneIsHealthy(t *testing.T) {
	s := readySession()
	var delays []time.Duration
	for i := 0; i < 4; i++ {
		delays = append(delays, endOf(t, s, DialFailed{Err: errors.New("refused")}).(Dial).After)
	}
	// Rand is 0.5: attempt 0 → Base/2, then d/2 + d/4 for d = 2, 4, 8 s.
	want := []time.Duration{500 * time.Millisecond, 1500 * time.Millisecond, 3 * time.Second, 6 * time.Second}
	for i := range want {
		if delays[i] < want[i]-time.Millisecond || delays[i] > want[i]+time.Millisecond {
			t.Fatalf("delays %v, want %v", delays, want)
		}
	}
	do(s, Dialed{}, Hello{Interval: testInterval}, &Dispatch{Type: "RESUMED", Seq: 2})
	if d := endOf(t, s, Closed{Code: -1}).(Dial).After; d != 500*time.Millisecond {
		t.Fatalf("delay after a healthy connection %v", d)
	}
}

func TestMalformedReadyStartsANewSession(t *testing.T) {
	s := newTestSession(nil)
	connect(s)
	wantActions(t, do(s, &Dispatch{Type: "READY", Seq: 1, Err: errors.New("bad READY")}), Close{closeResumable, "malformed READY"})
	if d := endOf(t, s, Closed{Code: closeResumable}).(Dial); d.Resume {
		t.Fatalf("resuming a session it never learnt: %+v", d)
	}
}

func TestUnroutableDispatchIsNotPublishedButPassed(t *testing.T) {
	s := readySession()
	wantActions(t, do(s, &Dispatch{Type: "MESSAGE_CREATE", Seq: 2, Err: errors.New("bad d")}))
	if acked, _ := s.Seqs(); acked != 2 {
		t.Fatalf("resume point %d", acked)
	}
}

// The daily session start budget (session_start_limit): "Upon hitting this
// limit, all active sessions for the bot will be terminated, the bot's token
// will be reset". The driver refuses a Dial that would IDENTIFY while the
// budget is at its reserve (SessionLimited); the session then waits, with no
// connection, and asks for the same Dial after the reset.
func TestSessionLimitedPutsOffTheIdentifyingDialUntilTheReset(t *testing.T) {
	const wait = 3 * time.Hour
	for _, c := range []struct {
		name string
		// refused takes a session to a Dial that would IDENTIFY.
		refused func() (*Session, Dial)
	}{
		{"startup", func() (*Session, Dial) {
			s := newTestSession(nil)
			return s, do(s, Start{})[0].(Dial)
		}},
		{"op 9 d=false", func() (*Session, Dial) {
			s := readySession()
			do(s, InvalidSession{Resumable: false})
			return s, endOf(t, s, Closed{Code: closeResumable}).(Dial)
		}},
		{"close 4009", func() (*Session, Dial) {
			s := readySession()
			return s, endOf(t, s, Closed{Code: 4009}).(Dial)
		}},
		{"close 4007", func() (*Session, Dial) {
			s := readySession()
			return s, endOf(t, s, Closed{Code: 4007}).(Dial)
		}},
		{"a RESUME answered with op 9", func() (*Session, Dial) {
			s := newTestSession(&Handoff{SessionID: "sess-0", ResumeGatewayURL: testResume, Seq: 4})
			do(s, Start{}, Dialed{}, Hello{Interval: testInterval}, InvalidSession{Resumable: false})
			return s, endOf(t, s, Closed{Code: closeResumable}).(Dial)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, refused := c.refused()
			if refused.Resume || refused.URL != testGateway {
				t.Fatalf("refused dial %+v: want an IDENTIFY on the gateway URL", refused)
			}
			got := s.Handle(SessionLimited{Wait: wait}, nil)
			wantActions(t, got, Enter{StateSessionLimit}, Dial{After: wait, URL: testGateway, Reason: reasonSessionLimit})
			if s.State() != StateSessionLimit || s.Resumable() {
				t.Fatalf("state %s, resumable %v", s.State(), s.Resumable())
			}
		})
	}
}

func TestSessionLimitedAgainStaysInSessionLimit(t *testing.T) {
	s := newTestSession(nil)
	do(s, Start{}, SessionLimited{Wait: time.Minute})
	wantActions(t, s.Handle(SessionLimited{Wait: time.Second}, nil), Dial{After: time.Second, URL: testGateway, Reason: reasonSessionLimit})
}

// Once the budget allows the Dial, the connection identifies as usual.
func TestAfterTheResetTheDialedConnectionIdentifies(t *testing.T) {
	s := newTestSession(nil)
	do(s, Start{}, SessionLimited{Wait: time.Minute})
	wantActions(t, s.Handle(Dialed{}, nil), Enter{StateConnecting})
	wantActions(t, do(s, Hello{Interval: testInterval}), StartHeartbeat{First: testInterval / 2, Interval: testInterval}, SendIdentify{})
	do(s, readyDispatch(1))
	if s.State() != StateReady {
		t.Fatalf("state %s", s.State())
	}
}

// The wait holds no connection: a drain or shutdown ends it at once.
func TestShutdownWhileWaitingForTheResetStopsAtOnce(t *testing.T) {
	s := newTestSession(nil)
	do(s, Start{}, SessionLimited{Wait: time.Hour})
	wantActions(t, do(s, Shutdown{}), Stop{})
	if s.State() != StateDrained || s.Handoff(t0) != nil {
		t.Fatalf("state %s, handoff %+v", s.State(), s.Handoff(t0))
	}
}

package discovery

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"

	"github.com/shardpool/gateway/service"
	"github.com/shardpool/gateway/service/event"
	"github.com/shardpool/gateway/service/publish"
	"github.com/shardpool/gateway/service/shard"
)

// The Member's state machine against fakes of the discovery service; the
// Consul side has its own tests, the whole program cmd/gateway's.

type fakeSession struct {
	id       string
	lost     chan struct{}
	loseOnce sync.Once
	f        *fakeFleet
}

func (s *fakeSession) ID() string            { return s.id }
func (s *fakeSession) Lost() <-chan struct{} { return s.lost }
func (s *fakeSession) Err() error            { return errors.New("fake session lost") }
func (s *fakeSession) lose()                 { s.loseOnce.Do(func() { close(s.lost) }) }
func (s *fakeSession) Abandon()              { s.f.event("abandon " + s.id) }
func (s *fakeSession) Close(context.Context) error {
	s.f.event("close " + s.id)
	return nil
}

// fakeFleet implements Registry and Coordinator and records the calls.
type fakeFleet struct {
	mu       sync.Mutex
	events   []string
	sessions []*fakeSession
	grant    chan int // ClaimPool returns what is sent here
	records  map[int]*shard.Handoff
	handoffs []service.ShardHandoff
	onTake   func() // called in TakeHandoffs
	plan     *Plan  // the stored plan
}

func (f *fakeFleet) AgreePlan(_ context.Context, want Plan) (Plan, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.plan == nil {
		f.plan = &want
	}
	return *f.plan, nil
}

func (f *fakeFleet) PlanKey() string { return "fake/plan" }

func (f *fakeFleet) event(e string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, e)
}

func (f *fakeFleet) log() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.events, "; ")
}

func (f *fakeFleet) session(i int) *fakeSession {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i < len(f.sessions) {
		return f.sessions[i]
	}
	return nil
}

func (f *fakeFleet) Register(_ context.Context, in Instance) error {
	f.event(fmt.Sprintf("register %s %d", in.Role, in.PoolID))
	return nil
}

func (f *fakeFleet) Deregister(context.Context) error { f.event("deregister"); return nil }

func (f *fakeFleet) NewSession(context.Context) (Session, error) {
	f.mu.Lock()
	s := &fakeSession{id: fmt.Sprintf("s%d", len(f.sessions)), lost: make(chan struct{}), f: f}
	f.sessions = append(f.sessions, s)
	f.events = append(f.events, "session "+s.id)
	f.mu.Unlock()
	return s, nil
}

func (f *fakeFleet) ClaimPool(ctx context.Context, s Session, ids []int) (int, error) {
	f.event(fmt.Sprintf("wait for %v", ids))
	select {
	case id := <-f.grant:
		f.event(fmt.Sprintf("claim %d", id))
		return id, nil
	case <-s.Lost():
		return -1, s.Err()
	case <-ctx.Done():
		return -1, ctx.Err()
	}
}

func (f *fakeFleet) TakeHandoffs(context.Context, Session, int) (map[int]*shard.Handoff, error) {
	f.event("take")
	if f.onTake != nil {
		f.onTake()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.records
	f.records = nil
	return r, nil
}

func (f *fakeFleet) HandOff(_ context.Context, s Session, pool int, recs []service.ShardHandoff) error {
	f.event(fmt.Sprintf("handoff %d by %s (%d records)", pool, s.ID(), len(recs)))
	f.mu.Lock()
	f.handoffs = recs
	f.mu.Unlock()
	return nil
}

type nopPath struct{}

func (nopPath) Publish(_ context.Context, _ *event.Event, done publish.Done) error {
	done(nil)
	return nil
}
func (nopPath) Flush(context.Context) error { return nil }
func (nopPath) Len() (int, int64)           { return 0, 0 }

// memberUnderTest runs a Member of a 2-pool fleet whose pools have no shards:
// what is tested is the membership, not the shards.
type memberUnderTest struct {
	*Member
	f       *fakeFleet
	resumes chan map[int]*shard.Handoff
	cancel  context.CancelFunc
	done    chan error
}

// testPlan is the plan of the member under test: 2 pools of 5 shards.
var testPlan = Plan{TotalShards: 10, ShardsPerPool: 5, Generation: 1}

func startMember(t *testing.T, fixed int) *memberUnderTest {
	t.Helper()
	return startMemberIn(t, &fakeFleet{grant: make(chan int, 1)}, fixed, log.NewNopLogger())
}

func startMemberIn(t *testing.T, f *fakeFleet, fixed int, logger log.Logger) *memberUnderTest {
	t.Helper()
	mt := &memberUnderTest{f: f, resumes: make(chan map[int]*shard.Handoff, 4), done: make(chan error, 1)}
	mt.Member = NewMember(MemberConfig{
		InstanceID: "i-1", FixedPool: fixed, Plan: testPlan,
		NewPool: func(id int, resume map[int]*shard.Handoff) *service.Pool {
			mt.resumes <- resume
			return service.NewPool(service.PoolConfig{PoolID: id, FirstShard: id * 5, Count: 0, TotalShards: 10,
				Publish: nopPath{}, Logger: log.NewNopLogger(), DrainTimeout: 5 * time.Second})
		},
		Registry: f, Coordinator: f, HandoffMaxAge: time.Minute, Publish: nopPath{},
		Logger: logger,
	})
	ctx, cancel := context.WithCancel(context.Background())
	mt.cancel = cancel
	go func() { mt.done <- mt.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-mt.done:
		case <-time.After(10 * time.Second):
			t.Error("member did not stop")
		}
	})
	return mt
}

func (mt *memberUnderTest) waitRole(t *testing.T, role string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for mt.Role() != role {
		if time.Now().After(deadline) {
			t.Fatalf("role %s, want %s; calls: %s", mt.Role(), role, mt.f.log())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitCalls waits until the calls include each of want.
func (mt *memberUnderTest) waitCalls(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, w := range want {
		for !strings.Contains(mt.f.log(), w) {
			if time.Now().After(deadline) {
				t.Fatalf("calls %q lack %q", mt.f.log(), w)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func TestMemberIsASpareUntilItClaimsAPool(t *testing.T) {
	mt := startMember(t, -1)
	mt.waitRole(t, RoleSpare)
	st, _ := mt.Status(context.Background())
	if r := mt.Readiness(context.Background()); r.Ready || r.PoolID != -1 {
		t.Fatalf("spare readiness %+v", r)
	}
	if st.State != RoleSpare || st.PoolID != -1 || st.Discovery.Role != RoleSpare || st.Discovery.Session != "s0" {
		t.Fatalf("spare status %+v %+v", st, st.Discovery)
	}
	mt.f.grant <- 1
	mt.waitRole(t, RoleOwner)
	st, _ = mt.Status(context.Background())
	if st.PoolID != 1 || st.FirstShard != 5 || st.Discovery.Role != RoleOwner {
		t.Fatalf("owner status %+v", st)
	}
	mt.waitCalls(t, "register owner 1") // registered just after the role is set
	if got := mt.f.log(); got != "register spare -1; session s0; wait for [0 1]; claim 1; take; register owner 1" {
		t.Fatalf("calls: %s", got)
	}
}

func TestMemberResumesOnlyFreshRecordsOfItsShards(t *testing.T) {
	mt := startMember(t, -1)
	now := time.Now()
	mt.f.records = map[int]*shard.Handoff{
		5: {SessionID: "a", Time: now.Add(-10 * time.Second)},
		6: {SessionID: "b", Time: now.Add(-2 * time.Minute)}, // older than HandoffMaxAge
		7: {SessionID: "", Time: now},
		2: {SessionID: "c", Time: now}, // another pool's shard
	}
	mt.f.grant <- 1
	mt.waitRole(t, RoleOwner)
	got := <-mt.resumes
	if len(got) != 1 || got[5] == nil || got[5].SessionID != "a" {
		t.Fatalf("resumed %v, want only shard 5", got)
	}
	st, _ := mt.Status(context.Background())
	if fmt.Sprint(st.Discovery.ResumedShards) != "[5]" {
		t.Fatalf("resumed_shards %v", st.Discovery.ResumedShards)
	}
}

func TestMemberFencesWhenItsSessionIsLostThenBecomesASpareAgain(t *testing.T) {
	mt := startMember(t, -1)
	mt.f.grant <- 0
	mt.waitRole(t, RoleOwner)
	pool := mt.Pool()
	mt.f.session(0).lose()
	mt.waitRole(t, RoleSpare) // after fenced, with a new session
	st, _ := mt.Status(context.Background())
	if st.Discovery.LastFence == nil || st.Discovery.LastFence.PoolID != 0 || st.Discovery.Session != "s1" {
		t.Fatalf("status after the fence %+v", st.Discovery)
	}
	select {
	case <-pool.Started():
	default:
		t.Fatal("pool never started")
	}
	// The lost session's close runs in the background and may come
	// anywhere after the fence, so the order is checked without it.
	mt.waitCalls(t, "close s0")
	log := mt.f.log()
	for _, want := range []string{"claim 0; take; register owner 0; ", "register fenced -1; session s1"} {
		if !strings.Contains(strings.ReplaceAll(log, "close s0; ", ""), want) {
			t.Fatalf("calls %q lack %q", log, want)
		}
	}
	if strings.Contains(log, "handoff") {
		t.Fatalf("a fenced instance handed off: %s", log)
	}
}

func TestMemberDrainHandsOffThenEndsItsSessionThenDeregisters(t *testing.T) {
	mt := startMember(t, -1)
	mt.f.grant <- 1
	mt.waitRole(t, RoleOwner)
	res, err := mt.Drain(context.Background())
	if err != nil || res.PoolID != 1 {
		t.Fatalf("drain %+v %v", res, err)
	}
	if r := mt.Readiness(context.Background()); r.Ready {
		t.Fatal("ready after a drain")
	}
	if got := mt.f.log(); !strings.HasSuffix(got, "register owner 1; handoff 1 by s0 (0 records); close s0; deregister") {
		t.Fatalf("calls: %s", got)
	}
	if again, _ := mt.Drain(context.Background()); again.PoolID != 1 {
		t.Fatalf("second drain %+v", again)
	}
	mt.waitRole(t, RoleDrained)
}

func TestMemberDrainedAsASpareLeavesWithoutAHandOff(t *testing.T) {
	mt := startMember(t, -1)
	mt.waitRole(t, RoleSpare)
	res, err := mt.Drain(context.Background())
	if err != nil || res.PoolID != -1 {
		t.Fatalf("drain %+v %v", res, err)
	}
	if got := mt.f.log(); got != "register spare -1; session s0; wait for [0 1]; close s0; deregister" {
		t.Fatalf("calls: %s", got)
	}
}

func TestMemberWithAFixedPoolWaitsAsItsStandbyThenRunsItUnderItsLock(t *testing.T) {
	mt := startMember(t, 1)
	mt.waitRole(t, RoleStandby)
	if r := mt.Readiness(context.Background()); r.Ready || r.PoolID != -1 {
		t.Fatalf("standby readiness %+v, want not ready without a pool", r)
	}
	st, _ := mt.Status(context.Background())
	if st.State != RoleStandby || st.PoolID != -1 || st.Discovery.Role != RoleStandby || mt.Pool() != nil {
		t.Fatalf("standby status %+v %+v", st, st.Discovery)
	}
	mt.f.grant <- 1
	mt.waitRole(t, RoleStatic)
	if p := mt.Pool(); p == nil {
		t.Fatal("no pool")
	}
	mt.waitCalls(t, "register static 1") // registered just after the role is set
	if got := mt.f.log(); got != "register standby -1; session s0; wait for [1]; claim 1; take; register static 1" {
		t.Fatalf("calls: %s", got)
	}
	if _, err := mt.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := mt.f.log(); !strings.HasSuffix(got, "register static 1; handoff 1 by s0 (0 records); close s0; deregister") {
		t.Fatalf("a static pool's drain must hand off and release its lock: %s", got)
	}
}

func TestMemberWithAFixedPoolFencesWhenItsSessionIsLostThenStandsByForTheSamePool(t *testing.T) {
	mt := startMember(t, 1)
	mt.f.grant <- 1
	mt.waitRole(t, RoleStatic)
	mt.f.session(0).lose()
	mt.waitRole(t, RoleStandby) // after fenced, with a new session
	st, _ := mt.Status(context.Background())
	if st.Discovery.LastFence == nil || st.Discovery.LastFence.PoolID != 1 || st.Discovery.Session != "s1" {
		t.Fatalf("status after the fence %+v", st.Discovery)
	}
	// Fenced, a new session, standby again for pool 1; the lost session
	// is closed in the background.
	// The lost session's close runs in the background, so it may come
	// anywhere after the fence: check the order of the rest without it.
	mt.waitCalls(t, "register fenced -1", "session s1", "close s0", "register standby -1", "static 1; ")
	inOrder := strings.ReplaceAll(mt.f.log(), "close s0; ", "")
	if !strings.Contains(inOrder, "register static 1; register fenced -1; session s1; register standby -1") {
		t.Fatalf("calls %q: want fenced, then a new session, then standby", mt.f.log())
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(mt.f.log(), "wait for [1]") != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("calls %q: not waiting for pool 1 again", mt.f.log())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMemberEndsWithoutRunningAPoolWhenTheStoredPlanDiffers(t *testing.T) {
	stored := Plan{TotalShards: 12, ShardsPerPool: 4, Generation: 1}
	var logs lockedBuffer
	mt := startMemberIn(t, &fakeFleet{grant: make(chan int, 1), plan: &stored}, -1, log.NewLogfmtLogger(&logs))
	var err error
	select {
	case err = <-mt.done:
	case <-time.After(10 * time.Second):
		t.Fatal("member still running with another plan")
	}
	var mismatch *PlanMismatchError
	if !errors.As(err, &mismatch) || len(mismatch.Mismatches) != 2 {
		t.Fatalf("Run = %v, want a *PlanMismatchError on TOTAL_SHARDS and SHARDS_PER_POOL", err)
	}
	if got := mt.f.log(); got != "deregister" {
		t.Fatalf("calls: %s; want nothing but the deregistration", got)
	}
	for _, want := range []string{
		"variable=TOTAL_SHARDS configured=10 plan=12 plan_key=fake/plan",
		"variable=SHARDS_PER_POOL configured=5 plan=4 plan_key=fake/plan",
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	mt.done <- nil // for the cleanup
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestSessionIDWaitsForALiveSession(t *testing.T) {
	m := NewMember(MemberConfig{InstanceID: "i", FixedPool: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := m.SessionID(ctx); err == nil {
		t.Fatal("SessionID returned without a session")
	}
	f := &fakeFleet{}
	s, _ := f.NewSession(context.Background())
	go func() {
		time.Sleep(50 * time.Millisecond)
		m.setSession(s)
	}()
	id, err := m.SessionID(context.Background())
	if err != nil || id != "s0" {
		t.Fatalf("SessionID = %q %v", id, err)
	}
}

func TestFreshHandoffs(t *testing.T) {
	now := time.Now()
	recs := map[int]*shard.Handoff{
		0: {SessionID: "young", Time: now.Add(-time.Second)},
		1: {SessionID: "old", Time: now.Add(-10 * time.Minute)},
		2: {SessionID: "", Time: now},
		3: {SessionID: "foreign", Time: now},
		4: {SessionID: "edge", Time: now.Add(-3 * time.Minute)},
	}
	got := freshHandoffs(recs, 0, 2, 3*time.Minute, now, log.NewNopLogger())
	if len(got) != 1 || got[0] == nil {
		t.Fatalf("kept %v, want only shard 0", got)
	}
	got = freshHandoffs(recs, 0, 4, 3*time.Minute, now, log.NewNopLogger())
	if len(got) != 3 || got[3] == nil || got[4] == nil {
		t.Fatalf("kept %v, want shards 0, 3 and 4 (exactly max age is still fresh)", got)
	}
}

func TestAdvertiseAddress(t *testing.T) {
	cases := []struct{ host, consul, want string }{
		{"10.1.2.3", "127.0.0.1:8500", "10.1.2.3"},
		{"gateway.internal", "127.0.0.1:8500", "gateway.internal"},
		{"0.0.0.0", "127.0.0.1:8500", "127.0.0.1"},
		{"", "http://127.0.0.1:8500", "127.0.0.1"},
		{"::", "unix:///run/consul.sock", "127.0.0.1"},
	}
	for _, c := range cases {
		if got := AdvertiseAddress(c.host, c.consul); got != c.want {
			t.Errorf("AdvertiseAddress(%q, %q) = %q, want %q", c.host, c.consul, got, c.want)
		}
	}
}

func TestMemberDrainedWhileTakingOverGivesThePoolBackWithItsRecords(t *testing.T) {
	mt := startMember(t, -1)
	mt.waitRole(t, RoleSpare)
	mt.f.records = map[int]*shard.Handoff{5: {SessionID: "a", Time: time.Now()}}
	drained := make(chan service.DrainResult, 1)
	mt.f.onTake = func() {
		go func() {
			res, _ := mt.Drain(context.Background())
			drained <- res
		}()
		for !mt.draining.Load() {
			time.Sleep(time.Millisecond)
		}
	}
	mt.f.grant <- 1
	res := <-drained
	if res.PoolID != -1 {
		t.Fatalf("drain %+v: the pool never ran", res)
	}
	got := mt.f.log()
	if !strings.Contains(got, "take; handoff 1 by s0 (1 records); close s0; deregister") || strings.Contains(got, "register owner") {
		t.Fatalf("calls: %s", got)
	}
	if len(mt.f.handoffs) != 1 || mt.f.handoffs[0].ShardID != 5 {
		t.Fatalf("records given back: %+v", mt.f.handoffs)
	}
}

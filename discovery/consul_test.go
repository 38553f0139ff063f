package discovery

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/shardpool/gateway/discovery/consultest"
)

// One agent serves the package's tests (each test has its own KV prefix and
// instance ids); tests that stop Consul start their own.
var (
	agentOnce sync.Once
	agent     *consultest.Agent
	agentErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if agent != nil {
		agent.Stop()
	}
	os.Exit(code)
}

func sharedAgent(t *testing.T) *consultest.Agent {
	t.Helper()
	agentOnce.Do(func() { agent, agentErr = consultest.StartAgent() })
	if agentErr != nil {
		t.Fatal(agentErr)
	}
	return agent
}

// instance is one registered test instance: a Consul client and the HTTP
// server its checks probe.
type instance struct {
	*Consul
	healthy    atomic.Bool
	failProbes atomic.Int32 // the next /health probes that fail
	passed     atomic.Int32 // /health probes answered 200
	notReady   atomic.Bool
	srv        *httptest.Server
	mu         sync.Mutex
	probed     map[string]bool // paths the agent's checks requested
}

var instanceSeq atomic.Int64

// newInstance registers an instance whose /health answers 200 while healthy.
func newInstance(t *testing.T, a *consultest.Agent, prefix string, checkInterval time.Duration) *instance {
	t.Helper()
	in := &instance{probed: map[string]bool{}}
	in.healthy.Store(true)
	in.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in.mu.Lock()
		in.probed[r.URL.Path] = true
		in.mu.Unlock()
		if r.URL.Path == "/health" && (!in.healthy.Load() || in.failProbe()) {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		if r.URL.Path == "/health" {
			in.passed.Add(1)
		}
		if r.URL.Path == "/ready" && in.notReady.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(in.srv.Close)
	host, port, _ := net.SplitHostPort(in.srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	c, err := NewConsul(ConsulConfig{
		Address: a.Addr, ServiceName: "gw-unit", InstanceID: fmt.Sprintf("gw-unit-%d", instanceSeq.Add(1)),
		ServiceAddress: host, ServicePort: p, Version: "test", KVPrefix: prefix,
		SessionTTL: 10 * time.Second, CheckInterval: checkInterval,
	})
	if err != nil {
		t.Fatal(err)
	}
	in.Consul = c
	if err := c.Register(context.Background(), Instance{Role: RoleSpare, PoolID: -1, TotalShards: 4}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Deregister(context.Background()) })
	return in
}

// failProbe reports whether this /health probe is one of the failProbes.
func (in *instance) failProbe() bool {
	for {
		n := in.failProbes.Load()
		if n <= 0 {
			return false
		}
		if in.failProbes.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

func (in *instance) session(t *testing.T) Session {
	t.Helper()
	s, err := in.NewSession(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

func prefix(t *testing.T) string { return "unit/" + strings.ToLower(t.Name()) }

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func waitLost(t *testing.T, s Session, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case <-s.Lost():
		return time.Since(start)
	case <-time.After(within):
		t.Fatalf("session not lost within %v", within)
		return 0
	}
}

func TestRegisterPublishesTheInstanceWithMetaTagsAndChecks(t *testing.T) {
	a := sharedAgent(t)
	in := newInstance(t, a, prefix(t), time.Second)
	ctx := ctxTimeout(t, 30*time.Second)
	if err := in.Register(ctx, Instance{Role: RoleOwner, PoolID: 2, FirstShard: 50, LastShard: 74, TotalShards: 80}); err != nil {
		t.Fatal(err)
	}
	svcs, err := in.client.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	s := svcs[in.cfg.InstanceID]
	if s == nil {
		t.Fatalf("instance %s not registered", in.cfg.InstanceID)
	}
	want := map[string]string{"role": "owner", "pool_id": "2", "shard_range": "50-74", "first_shard": "50", "last_shard": "74", "total_shards": "80", "version": "test"}
	for k, v := range want {
		if s.Meta[k] != v {
			t.Errorf("meta %s = %q, want %q (meta %v)", k, s.Meta[k], v, s.Meta)
		}
	}
	if s.Service != "gw-unit" || s.Port != in.cfg.ServicePort || s.Address != in.cfg.ServiceAddress {
		t.Errorf("service %s at %s:%d", s.Service, s.Address, s.Port)
	}
	if strings.Join(s.Tags, ",") != "owner,pool-2" {
		t.Errorf("tags %v", s.Tags)
	}
	checks, err := in.client.Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	health, ready := checks[in.healthCheckID()], checks[in.readyCheckID()]
	if health == nil || ready == nil {
		t.Fatalf("checks %v, want %s and %s", checks, in.healthCheckID(), in.readyCheckID())
	}
	if health.ServiceID != in.cfg.InstanceID || health.Status != api.HealthPassing {
		t.Errorf("health check %+v", health)
	}
	// The agent probes both endpoints.
	deadline := time.Now().Add(15 * time.Second)
	for {
		in.mu.Lock()
		both := in.probed["/health"] && in.probed["/ready"]
		in.mu.Unlock()
		if both {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent probed %v, want /health and /ready", in.probed)
		}
		time.Sleep(20 * time.Millisecond)
	}

	if err := in.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	svcs, _ = in.client.Agent().Services()
	if svcs[in.cfg.InstanceID] != nil {
		t.Fatal("still registered after Deregister")
	}
}

func TestSessionIsTiedToTheHealthCheckAndReleasesItsLocks(t *testing.T) {
	a := sharedAgent(t)
	in := newInstance(t, a, prefix(t), 10*time.Second)
	s := in.session(t)
	e, _, err := in.client.Session().Info(s.ID(), nil)
	if err != nil || e == nil {
		t.Fatalf("session info %v %v", e, err)
	}
	if e.Behavior != api.SessionBehaviorRelease || e.TTL != "10s" || e.LockDelay != 0 {
		t.Errorf("session %+v, want behaviour release, TTL 10s, no lock-delay", e)
	}
	if len(e.ServiceChecks) != 1 || e.ServiceChecks[0].ID != in.healthCheckID() || strings.Join(e.NodeChecks, ",") != "serfHealth" {
		t.Errorf("session checks: node %v service %v, want serfHealth and %s", e.NodeChecks, e.ServiceChecks, in.healthCheckID())
	}
}

func TestSessionIsLostAtOnceWhenConsulDestroysIt(t *testing.T) {
	a := sharedAgent(t)
	in := newInstance(t, a, prefix(t), 10*time.Second)
	s := in.session(t)
	if _, err := in.client.Session().Destroy(s.ID(), nil); err != nil {
		t.Fatal(err)
	}
	// Well before the next renewal (TTL/5 = 2 s) would notice.
	if d := waitLost(t, s, 10*time.Second); d > 1500*time.Millisecond {
		t.Errorf("lost %v after the destroy; the watch should notice at once", d)
	}
	if s.Err() == nil || !strings.Contains(s.Err().Error(), "invalidated") {
		t.Errorf("Err = %v", s.Err())
	}
}

func TestSessionIsLostWhenItsHealthCheckFails(t *testing.T) {
	a := sharedAgent(t)
	in := newInstance(t, a, prefix(t), time.Second)
	s := in.session(t)
	in.healthy.Store(false)
	waitLost(t, s, 15*time.Second)
}

func TestSessionIsLostWithinHalfTheTTLWhenConsulIsUnreachable(t *testing.T) {
	a := consultest.Start(t) // this one is stopped
	in := newInstance(t, a, prefix(t), 10*time.Second)
	s, err := in.NewSession(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Abandon()
	a.Stop()
	d := waitLost(t, s, 30*time.Second)
	if d > 6*time.Second {
		t.Errorf("lost %v after Consul went away; want by half the TTL (5 s) after the last renewal", d)
	}
	if !strings.Contains(s.Err().Error(), "not renewed") {
		t.Errorf("Err = %v", s.Err())
	}
}

func TestSessionCloseEndsItWithoutReportingItLost(t *testing.T) {
	a := sharedAgent(t)
	in := newInstance(t, a, prefix(t), 10*time.Second)
	s, err := in.NewSession(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	e, _, err := in.client.Session().Info(s.ID(), nil)
	if err != nil || e != nil {
		t.Fatalf("session still in consul after Close: %+v %v", e, err)
	}
	select {
	case <-s.Lost():
		t.Fatal("Close reported the session lost")
	default:
	}
}

func TestSessionSurvivesFewerFailedHealthProbesThanCheckFailures(t *testing.T) {
	a := sharedAgent(t)
	in := newInstance(t, a, prefix(t), time.Second) // CheckFailures: the default, 3
	s := in.session(t)
	// Consul starts counting at the threshold when a check is registered:
	// only failures after a passing probe are tolerated.
	deadline := time.Now().Add(15 * time.Second)
	for in.passed.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	in.failProbes.Store(DefaultCheckFailures - 1)
	for in.failProbes.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if in.failProbes.Load() > 0 {
		t.Fatal("the agent did not probe /health")
	}
	// Consul acts on a probe's result at once; give it a moment.
	select {
	case <-s.Lost():
		t.Fatalf("%d failed /health probes in a row fenced the session (%v); want %d before critical", DefaultCheckFailures-1, s.Err(), DefaultCheckFailures)
	case <-time.After(1500 * time.Millisecond):
	}
	checks, err := in.client.Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	if c := checks[in.healthCheckID()]; c == nil || c.Status != "passing" {
		t.Fatalf("health check %+v, want passing after the probes recovered", c)
	}
}

func TestSessionSurvivesAFailingReadyCheck(t *testing.T) {
	a := sharedAgent(t)
	in := newInstance(t, a, prefix(t), time.Second)
	s := in.session(t)
	in.notReady.Store(true)
	deadline := time.Now().Add(15 * time.Second)
	for {
		checks, err := in.client.Agent().Checks()
		if err != nil {
			t.Fatal(err)
		}
		if c := checks[in.readyCheckID()]; c != nil && c.Status == "critical" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the /ready check never turned critical")
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case <-s.Lost():
		t.Fatalf("a failing /ready check fenced the session: %v", s.Err())
	case <-time.After(2 * time.Second):
	}
}

func TestRegisteringAgainKeepsTheHealthChecksCountOfFailures(t *testing.T) {
	a := sharedAgent(t)
	in := newInstance(t, a, prefix(t), time.Second)
	s := in.session(t)
	deadline := time.Now().Add(15 * time.Second)
	for in.passed.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	// A new role (a claimed pool): registered again, then one probe fails.
	if err := in.Register(context.Background(), Instance{Role: RoleOwner, PoolID: 0, FirstShard: 0, LastShard: 1, TotalShards: 2}); err != nil {
		t.Fatal(err)
	}
	in.failProbes.Store(1)
	for in.failProbes.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-s.Lost():
		t.Fatalf("the first failed probe after a registration fenced the session: %v", s.Err())
	case <-time.After(1500 * time.Millisecond):
	}
	svcs, err := in.client.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	if svc := svcs[in.cfg.InstanceID]; svc == nil || svc.Meta["role"] != RoleOwner || svc.Meta["pool_id"] != "0" {
		t.Fatalf("registration not updated: %+v", svc)
	}
}

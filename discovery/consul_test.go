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
	healthy atomic.Bool
	srv     *httptest.Server
	mu      sync.Mutex
	probed  map[string]bool // paths the agent's checks requested
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
		if r.URL.Path == "/health" && !in.healthy.Load() {
			w.WriteHeader(http.StatusInternalServerError)
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

package deploy_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/shardpool/gateway/discovery"
	"github.com/shardpool/gateway/discovery/consultest"
	"github.com/shardpool/gateway/service"
	"github.com/shardpool/gateway/service/shard"
)

const managementToken = "c0ffee00-0000-4000-8000-000000000001"

// lockedLog collects the agent's output for a failure message.
type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freeTCPPorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// startACLAgent runs consul agent -dev with ACLs on and denying by default,
// and returns its address, node name and a management client.
func startACLAgent(t *testing.T) (addr, node string, root *api.Client) {
	t.Helper()
	bin, err := consultest.Binary()
	if err != nil {
		t.Fatal(err)
	}
	p := freeTCPPorts(t, 4)
	addr = "127.0.0.1:" + strconv.Itoa(p[0])
	node = "gateway-acl-" + strconv.Itoa(p[0])
	acl := `acl { enabled = true, default_policy = "deny", tokens { initial_management = "` + managementToken + `", agent = "` + managementToken + `" } }`
	var out lockedLog
	cmd := exec.Command(bin, "agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-http-port", strconv.Itoa(p[0]), "-serf-lan-port", strconv.Itoa(p[1]), "-serf-wan-port", strconv.Itoa(p[2]),
		"-server-port", strconv.Itoa(p[3]), "-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1",
		"-node", node, "-disable-host-node-id", "-log-level", "warn", "-hcl", acl)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("consul output:\n%s", out.String())
		}
	})
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token = addr, managementToken
	root, err = api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Ready: a leader, and the node's serfHealth passing (sessions need it).
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		select {
		case <-exited:
			t.Fatalf("consul exited:\n%s", out.String())
		default:
		}
		if leader, err := root.Status().Leader(); err == nil && leader != "" {
			checks, _, err := root.Health().Node(node, nil)
			if err == nil && len(checks) > 0 && checks[0].Status == api.HealthPassing {
				return addr, node, root
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("consul not ready:\n%s", out.String())
		}
	}
}

// sessionSource hands the identify limiter a fixed session.
type sessionSource struct{ s discovery.Session }

func (s sessionSource) SessionID(context.Context) (string, error) { return s.s.ID(), nil }

func forbidden(err error) bool {
	var se api.StatusError
	return err != nil && (errors.As(err, &se) && se.Code == http.StatusForbidden || strings.Contains(err.Error(), "Permission denied"))
}

// TestConsulPolicyIsEnoughForTheWholeLifecycleAndNoMore runs the discovery
// package's every Consul operation with a token holding only the policy of
// deploy/consul, on an agent that denies by default: shard plan, register,
// session, pool claim, identify lock, checkpoint, hand-off, take-over,
// deregister. Then it checks the token can do nothing beyond its service and
// KV prefix.
func TestConsulPolicyIsEnoughForTheWholeLifecycleAndNoMore(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a Consul agent")
	}
	addr, _, root := startACLAgent(t)
	env := loadJob(t).env(t)
	serviceName, prefix := env["SERVICE_NAME"], env["KV_PREFIX"]

	policy, _, err := root.ACL().PolicyCreate(&api.ACLPolicy{Name: "discord-gateway", Rules: string(readFile(t, policyPath))}, nil)
	if err != nil {
		t.Fatalf("Consul refuses %s: %v", policyPath, err)
	}
	tok, _, err := root.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: policy.ID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}

	health := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer health.Close()
	port := health.Listener.Addr().(*net.TCPAddr).Port
	newConsul := func(instance string) *discovery.Consul {
		c, err := discovery.NewConsul(discovery.ConsulConfig{
			Address: addr, Token: tok.SecretID, ServiceName: serviceName, InstanceID: instance,
			ServiceAddress: "127.0.0.1", ServicePort: port, Version: "test", KVPrefix: prefix,
			SessionTTL: 10 * time.Second, CheckInterval: time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s with the policy's token: %v", what, err)
		}
	}

	// The first owner.
	a := newConsul("gw-a")
	plan, err := a.AgreePlan(ctx, discovery.Plan{TotalShards: 1, ShardsPerPool: 1})
	must("store the shard plan", err)
	must("register", a.Register(ctx, discovery.Instance{Role: discovery.RoleStarting, PoolID: -1}))
	sa, err := a.NewSession(ctx)
	must("create a session", err)
	pool, err := a.ClaimPool(ctx, sa, []int{0})
	must("claim a pool", err)
	must("register as owner", a.Register(ctx, discovery.Instance{Role: discovery.RoleOwner, PoolID: pool, FirstShard: 0, LastShard: 0, TotalShards: 1}))
	limiter := a.NewIdentifyLimiter(sessionSource{sa}, 1, 10*time.Millisecond)
	limiter.Expect(0)
	permit, err := limiter.Acquire(ctx, 0)
	must("take the identify bucket lock", err)
	permit.Release(time.Now())
	must("checkpoint", a.SaveCheckpoints(ctx, sa, pool, []service.ShardHandoff{{ShardID: 0, Handoff: &shard.Handoff{
		SessionID: "s", ResumeGatewayURL: "wss://resume.example", Seq: 5, Time: time.Now()}}}))
	must("hand off", a.HandOff(ctx, sa, pool, []service.ShardHandoff{{ShardID: 0, Handoff: &shard.Handoff{
		SessionID: "s", ResumeGatewayURL: "wss://resume.example", Seq: 7, Time: time.Now()}}}))

	// The keys are the layout deploy/README.md documents.
	keys, _, err := root.KV().Keys(prefix+"/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	p, g := strconv.Itoa(pool), strconv.Itoa(plan.Generation)
	want := []string{prefix + "/handoff/" + g + "/" + p + "/0", prefix + "/identify/0", prefix + "/plan", prefix + "/pools/" + g + "/" + p}
	if strings.Join(keys, " ") != strings.Join(want, " ") {
		t.Errorf("keys after a drain: %v; deploy/README.md documents %v (<KV_PREFIX>/handoff/<generation>/<pool>/<shard>, /identify/<bucket>, /plan, /pools/<generation>/<id>)", keys, want)
	}
	must("destroy the session", sa.Close(ctx))
	must("deregister", a.Deregister(ctx))

	// Its successor.
	b := newConsul("gw-b")
	if adopted, err := b.AgreePlan(ctx, discovery.Plan{TotalShards: 1, ShardsPerPool: 1}); err != nil || !adopted.Same(plan) {
		t.Fatalf("read the shard plan with the policy's token: %+v, %v", adopted, err)
	}
	must("register", b.Register(ctx, discovery.Instance{Role: discovery.RoleStarting, PoolID: -1}))
	// Registering again keeps the checks when the token can read them back.
	if checks, err := b.Client().Agent().ChecksWithFilter(`ServiceID == "gw-b"`); err != nil || len(checks) != 2 {
		t.Fatalf("the policy's token reads %d of its instance's checks (err %v), want 2 (/health and /ready)", len(checks), err)
	}
	must("register again, as owner", b.Register(ctx, discovery.Instance{Role: discovery.RoleOwner, PoolID: 0, TotalShards: 1}))
	sb, err := b.NewSession(ctx)
	must("create a session", err)
	if _, err := b.ClaimPool(ctx, sb, []int{0}); err != nil {
		t.Fatalf("claim the released pool: %v", err)
	}
	recs, err := b.TakeHandoffs(ctx, sb, pool)
	must("take the hand-off records", err)
	if recs[0] == nil || recs[0].Seq != 7 {
		t.Errorf("hand-off records %v; want shard 0 at seq 7", recs)
	}
	must("destroy the session", sb.Close(ctx))
	must("deregister", b.Deregister(ctx))

	// And no more.
	c := b.Client()
	for what, err := range map[string]error{
		"write a key outside KV_PREFIX": func() error { _, err := c.KV().Put(&api.KVPair{Key: "other/x", Value: []byte("1")}, nil); return err }(),
		"write a sibling prefix": func() error {
			_, err := c.KV().Put(&api.KVPair{Key: prefix + "-staging/x", Value: []byte("1")}, nil)
			return err
		}(),
		"register another service": c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "x", Name: "other-service", Port: 1}),
		"create a policy": func() error {
			_, _, err := c.ACL().PolicyCreate(&api.ACLPolicy{Name: "x", Rules: `key_prefix "" { policy = "write" }`}, nil)
			return err
		}(),
	} {
		if !forbidden(err) {
			t.Errorf("the policy's token can %s (err %v)", what, err)
		}
	}
}

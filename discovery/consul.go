package discovery

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"
)

// ConsulConfig configures Consul.
type ConsulConfig struct {
	// Address of the Consul agent's HTTP API: host:port, or a URL with
	// scheme http, https or unix. Token is the ACL token (may be empty).
	// The other CONSUL_* variables of the consul CLI (CONSUL_HTTP_SSL,
	// CONSUL_CACERT, CONSUL_HTTP_TOKEN_FILE, ...) are read from the
	// process environment by the api package.
	Address string
	Token   string

	ServiceName string // catalog name of the service
	InstanceID  string // unique per process
	// ServiceAddress and ServicePort are where the agent reaches the HTTP
	// server for its checks and where the catalog says the instance is.
	ServiceAddress string
	ServicePort    int
	Version        string

	// KVPrefix roots every key: <KVPrefix>/plan,
	// <KVPrefix>/pools/<generation>/<id>,
	// <KVPrefix>/handoff/<generation>/<pool>/<shard>,
	// <KVPrefix>/identify/<bucket>.
	KVPrefix string
	// PlanGeneration is the generation of the fleet's shard plan (see
	// AgreePlan): part of the pool lock and hand-off keys. 0 means
	// FirstGeneration.
	PlanGeneration int
	// SessionTTL is the session's TTL (Consul accepts 10s to 24h). The
	// instance fences itself when it could not renew for half of it.
	SessionTTL time.Duration
	// LockDelay is how long Consul keeps a lock of an invalidated session
	// from being taken again (0 = none).
	LockDelay time.Duration
	// CheckInterval is the interval of the /health and /ready checks.
	CheckInterval time.Duration
	// CheckFailures is how many consecutive failed /health probes turn the
	// check critical, which invalidates the session (a fence). 0 means 3:
	// one slow probe must not fence a whole pool.
	CheckFailures int
	// DeregisterAfter removes an instance whose /health check stays
	// critical that long (Consul's minimum is 1m).
	DeregisterAfter time.Duration

	Metrics *Metrics
	Logger  log.Logger
}

// Consul implements Registry and Coordinator, and builds identify limiters,
// over a Consul agent.
type Consul struct {
	cfg       ConsulConfig
	client    *api.Client
	transport *http.Transport
	logger    log.Logger
}

var (
	_ Registry    = (*Consul)(nil)
	_ Coordinator = (*Consul)(nil)
)

// NewConsul returns a Consul client; it does not contact the agent.
func NewConsul(cfg ConsulConfig) (*Consul, error) {
	ac := api.DefaultConfig()
	ac.Address = cfg.Address
	if cfg.Token != "" {
		ac.Token = cfg.Token
	}
	client, err := api.NewClient(ac)
	if err != nil {
		return nil, fmt.Errorf("consul client: %w", err)
	}
	if cfg.KVPrefix == "" {
		cfg.KVPrefix = "discord-gateway"
	}
	cfg.KVPrefix = strings.Trim(cfg.KVPrefix, "/")
	if cfg.SessionTTL < 10*time.Second {
		cfg.SessionTTL = 10 * time.Second
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = 10 * time.Second
	}
	if cfg.CheckFailures < 1 {
		cfg.CheckFailures = DefaultCheckFailures
	}
	if cfg.PlanGeneration < 1 {
		cfg.PlanGeneration = FirstGeneration
	}
	if cfg.DeregisterAfter < time.Minute {
		cfg.DeregisterAfter = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = log.NewNopLogger()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	return &Consul{cfg: cfg, client: client, transport: ac.Transport, logger: cfg.Logger}, nil
}

// Client returns the underlying Consul API client.
func (c *Consul) Client() *api.Client { return c.client }

// CloseIdleConnections closes the client's idle connections to the agent,
// for a Consul that is no longer used.
func (c *Consul) CloseIdleConnections() {
	if c.transport != nil {
		c.transport.CloseIdleConnections()
	}
}

// DefaultCheckFailures is ConsulConfig.CheckFailures when unset.
const DefaultCheckFailures = 3

// The pool lock and hand-off keys carry the plan's generation: pool p is
// only the same shards under the same plan.

func (c *Consul) poolsPrefix() string {
	return c.cfg.KVPrefix + "/pools/" + strconv.Itoa(c.cfg.PlanGeneration) + "/"
}

func (c *Consul) poolKey(id int) string { return c.poolsPrefix() + strconv.Itoa(id) }

func (c *Consul) handoffPrefix(pool int) string {
	return c.cfg.KVPrefix + "/handoff/" + strconv.Itoa(c.cfg.PlanGeneration) + "/" + strconv.Itoa(pool) + "/"
}

func (c *Consul) identifyKey(bucket int) string {
	return c.cfg.KVPrefix + "/identify/" + strconv.Itoa(bucket)
}

func (c *Consul) healthCheckID() string { return c.cfg.InstanceID + ":health" }

func (c *Consul) readyCheckID() string { return c.cfg.InstanceID + ":ready" }

// txn runs KV operations atomically; ok is false when Consul rolled them
// back (a check failed or a lock was not granted).
func (c *Consul) txn(ctx context.Context, ops api.KVTxnOps) (bool, *api.TxnResponse, error) {
	txn := make(api.TxnOps, 0, len(ops))
	for _, op := range ops {
		txn = append(txn, &api.TxnOp{KV: op})
	}
	ok, resp, _, err := c.client.Txn().Txn(txn, (&api.QueryOptions{}).WithContext(ctx))
	return ok, resp, err
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// nextIndex follows Consul's advice for blocking queries: an index that went
// backwards (a snapshot restore, a new cluster) restarts from 0.
func nextIndex(prev, got uint64) uint64 {
	if got < prev || got == 0 {
		return 0
	}
	return got
}

// AdvertiseAddress returns the address the Consul agent should use to reach
// an HTTP server bound to host: host itself unless it is unspecified
// (0.0.0.0, ::, empty), else this machine's address on the route to the
// agent, else 127.0.0.1.
func AdvertiseAddress(host, consulAddr string) string {
	if ip := net.ParseIP(strings.Trim(host, "[]")); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return strings.Trim(host, "[]")
	}
	target := consulAddr
	if strings.Contains(target, "://") {
		u, err := url.Parse(target)
		if err != nil || u.Scheme == "unix" {
			return "127.0.0.1"
		}
		target = u.Host
	}
	if _, _, err := net.SplitHostPort(target); err != nil {
		target = net.JoinHostPort(target, "8500")
	}
	// A UDP "connection" sends nothing; it only picks the route.
	conn, err := net.Dial("udp", target)
	if err != nil {
		return "127.0.0.1"
	}
	defer conn.Close()
	if a, ok := conn.LocalAddr().(*net.UDPAddr); ok && !a.IP.IsUnspecified() {
		return a.IP.String()
	}
	return "127.0.0.1"
}

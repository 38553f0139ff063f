package discovery

import (
	"context"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"
)

// Register implements Registry: the service, its meta and tags, a liveness
// check on /health (passing from the start, critical only after
// CheckFailures failed probes in a row, deregistering the instance after
// DeregisterAfter critical) and a readiness check on /ready. The session is
// tied to the /health check alone: a failing /ready (a spare, a pool with no
// READY shard, NATS down) never fences. A spare is registered too: its
// /ready check is critical, so it gets no traffic, but the catalog shows it.
//
// The checks are registered once: when the agent has them already (a new
// role, a new pool) only the service is updated. Registering a check anew
// restarts Consul's count of failures at the threshold, so the first probe
// after it would fence on its own.
func (c *Consul) Register(ctx context.Context, in Instance) error {
	reg := &api.AgentServiceRegistration{
		ID:      c.cfg.InstanceID,
		Name:    c.cfg.ServiceName,
		Address: c.cfg.ServiceAddress,
		Port:    c.cfg.ServicePort,
		Tags:    tags(in),
		Meta:    c.meta(in),
	}
	registered, err := c.hasChecks(ctx)
	if err != nil {
		return err
	}
	if !registered {
		reg.Checks = c.checks()
	}
	return c.client.Agent().ServiceRegisterOpts(reg, api.ServiceRegisterOpts{}.WithContext(ctx))
}

// hasChecks reports whether the agent runs this instance's checks.
func (c *Consul) hasChecks(ctx context.Context) (bool, error) {
	checks, err := c.client.Agent().ChecksWithFilterOpts(`ServiceID == "`+c.cfg.InstanceID+`"`, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return false, err
	}
	return checks[c.healthCheckID()] != nil && checks[c.readyCheckID()] != nil, nil
}

func (c *Consul) checks() api.AgentServiceChecks {
	base := "http://" + net.JoinHostPort(c.cfg.ServiceAddress, strconv.Itoa(c.cfg.ServicePort))
	timeout := min(max(c.cfg.CheckInterval/2, time.Second), c.cfg.CheckInterval)
	return api.AgentServiceChecks{
		{
			CheckID:  c.healthCheckID(),
			Name:     "liveness: GET /health",
			HTTP:     base + "/health",
			Interval: c.cfg.CheckInterval.String(),
			Timeout:  timeout.String(),
			// The session is tied to this check, and Consul refuses
			// to create a session on a critical check.
			Status: api.HealthPassing,
			// A critical check invalidates the session and fences
			// the pool: one slow probe (a GC pause, a busy node)
			// must not.
			FailuresBeforeCritical:         c.cfg.CheckFailures,
			DeregisterCriticalServiceAfter: c.cfg.DeregisterAfter.String(),
		},
		{
			CheckID:  c.readyCheckID(),
			Name:     "readiness: GET /ready",
			HTTP:     base + "/ready",
			Interval: c.cfg.CheckInterval.String(),
			Timeout:  timeout.String(),
		},
	}
}

// Deregister implements Registry.
func (c *Consul) Deregister(ctx context.Context) error {
	return c.client.Agent().ServiceDeregisterOpts(c.cfg.InstanceID, (&api.QueryOptions{}).WithContext(ctx))
}

func tags(in Instance) []string {
	t := []string{in.Role}
	if in.PoolID >= 0 {
		t = append(t, "pool-"+strconv.Itoa(in.PoolID))
	}
	return t
}

func (c *Consul) meta(in Instance) map[string]string {
	m := map[string]string{
		"role":         in.Role,
		"total_shards": strconv.Itoa(in.TotalShards),
		"version":      c.cfg.Version,
	}
	if in.PoolID >= 0 {
		m["pool_id"] = strconv.Itoa(in.PoolID)
		m["shard_range"] = strconv.Itoa(in.FirstShard) + "-" + strconv.Itoa(in.LastShard)
		m["first_shard"] = strconv.Itoa(in.FirstShard)
		m["last_shard"] = strconv.Itoa(in.LastShard)
	}
	return m
}

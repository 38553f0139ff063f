package discovery

import (
	"context"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"
)

// Register implements Registry: the service, its meta and tags, a liveness
// check on /health (passing from the start, deregistering the instance after
// DeregisterAfter critical) and a readiness check on /ready. A spare is
// registered too: its /ready check is critical, so it gets no traffic, but
// the catalog shows it.
func (c *Consul) Register(ctx context.Context, in Instance) error {
	base := "http://" + net.JoinHostPort(c.cfg.ServiceAddress, strconv.Itoa(c.cfg.ServicePort))
	timeout := min(max(c.cfg.CheckInterval/2, time.Second), c.cfg.CheckInterval)
	reg := &api.AgentServiceRegistration{
		ID:      c.cfg.InstanceID,
		Name:    c.cfg.ServiceName,
		Address: c.cfg.ServiceAddress,
		Port:    c.cfg.ServicePort,
		Tags:    tags(in),
		Meta:    c.meta(in),
		Checks: api.AgentServiceChecks{
			{
				CheckID:  c.healthCheckID(),
				Name:     "liveness: GET /health",
				HTTP:     base + "/health",
				Interval: c.cfg.CheckInterval.String(),
				Timeout:  timeout.String(),
				// The session is tied to this check, and Consul refuses
				// to create a session on a critical check.
				Status:                         api.HealthPassing,
				DeregisterCriticalServiceAfter: c.cfg.DeregisterAfter.String(),
			},
			{
				CheckID:  c.readyCheckID(),
				Name:     "readiness: GET /ready",
				HTTP:     base + "/ready",
				Interval: c.cfg.CheckInterval.String(),
				Timeout:  timeout.String(),
			},
		},
	}
	return c.client.Agent().ServiceRegisterOpts(reg, api.ServiceRegisterOpts{}.WithContext(ctx))
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

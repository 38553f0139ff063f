package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/shardpool/gateway/discovery"
	"github.com/shardpool/gateway/service"
	"github.com/shardpool/gateway/service/shard"
)

// openFleet joins the fleet in Consul as a member that registers the
// instance, then claims a pool (or runs POOL_ID) and hands its sessions off
// when it drains.
func (m *Main) openFleet() error {
	cfg := m.Config
	// Part of the drain budget goes to the hand-off, the session and the
	// deregistration.
	drain := drainBudget(cfg.DrainTimeout)
	consulTimeout := min(max(drain/12, 250*time.Millisecond), 2*time.Second)
	m.poolDrain = max(drain-3*consulTimeout, drain/2)
	metrics := discovery.NewMetrics(m.reg)
	consul, err := discovery.NewConsul(discovery.ConsulConfig{
		Address: cfg.ConsulHTTPAddr, Token: cfg.ConsulHTTPToken,
		ServiceName: cfg.ServiceName, InstanceID: m.plan.instanceID,
		ServiceAddress: advertiseAddress(cfg), ServicePort: m.listener.Addr().(*net.TCPAddr).Port,
		Version: version, KVPrefix: cfg.KVPrefix,
		SessionTTL: cfg.SessionTTL, LockDelay: cfg.LockDelay,
		CheckInterval: cfg.CheckInterval, DeregisterAfter: cfg.DeregisterAfter,
		Metrics: metrics, Logger: m.logger,
	})
	if err != nil {
		return fmt.Errorf("invalid CONSUL_HTTP_ADDR: %w", err)
	}
	m.consul = consul

	fixed := -1
	if !m.plan.claim {
		fixed = cfg.PoolID
	}
	member := discovery.NewMember(discovery.MemberConfig{
		InstanceID: m.plan.instanceID, FixedPool: fixed, Pools: m.plan.pools, ShardsPerPool: cfg.ShardsPerPool, TotalShards: m.plan.total,
		NewPool: m.newPool, Registry: consul, Coordinator: consul,
		HandoffMaxAge: cfg.HandoffMaxAge, ConsulTimeout: consulTimeout,
		Publish: m.buffer, Broker: m.broker(), Breaker: m.breakerState(),
		Metrics: metrics, Logger: m.logger,
	})
	m.mu.Lock()
	m.member = member
	m.mu.Unlock()
	return nil
}

// openStaticPool builds the pool POOL_ID, run without Consul.
func (m *Main) openStaticPool() {
	m.poolDrain = drainBudget(m.Config.DrainTimeout)
	pool := m.newPool(m.Config.PoolID, nil)
	m.mu.Lock()
	m.pool = pool
	m.mu.Unlock()
}

// newPool builds pool id; a shard with a hand-off record RESUMEs it. Each
// pool gets its own identify limiter: its shards are the ones the limiter
// expects, in order.
func (m *Main) newPool(id int, resume map[int]*shard.Handoff) *service.Pool {
	cfg, total := m.Config, m.plan.total
	first, count := m.plan.shards(id, cfg.ShardsPerPool)
	// NewShard runs later, on the pool's goroutines: it takes copies, not
	// Main's fields, which release clears.
	gatewayURL, buffer, metrics, logger := m.plan.gatewayURL, m.buffer, m.shardMetrics, m.logger
	commands := m.shardCommands()
	var identify interface {
		shard.IdentifyLimiter
		Expect(shardIDs ...int)
	}
	if m.consul != nil {
		identify = m.consul.NewIdentifyLimiter(m.member, m.plan.maxConcurrency, cfg.IdentifyWindow)
	} else {
		identify = shard.NewBucketLimiter(m.plan.maxConcurrency, cfg.IdentifyWindow)
	}
	for sid := first; sid < first+count; sid++ {
		if resume[sid] == nil { // a resuming shard never asks to identify
			identify.Expect(sid)
		}
	}
	return service.NewPool(service.PoolConfig{
		PoolID: id, FirstShard: first, Count: count, TotalShards: total,
		NewShard: func(sid int) *shard.Shard {
			return shard.New(shard.Config{
				ID: sid, Total: total, Token: cfg.DiscordToken, GatewayURL: gatewayURL,
				Compression: cfg.Compression,
				Backoff:     shard.Backoff{Base: cfg.BackoffBase, Max: cfg.BackoffMax},
				Identify:    identify,
				Publisher:   buffer,
				Metrics:     metrics,
				Logger:      logger,
				Resume:      resume[sid],
				Commands:    commands,
			})
		},
		Publish:      buffer,
		Broker:       m.broker(),
		Breaker:      m.breakerState(),
		Logger:       logger,
		DrainTimeout: m.poolDrain,
	})
}

// drainBudget leaves part of DRAIN_TIMEOUT for closing HTTP and NATS, so the
// process exits within DRAIN_TIMEOUT.
func drainBudget(d time.Duration) time.Duration {
	margin := min(d/10, 3*time.Second)
	return d - margin
}

// newInstanceID names this process in Consul: unique, readable.
func newInstanceID(service string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "host"
	}
	var b [4]byte
	rand.Read(b[:])
	return service + "-" + host + "-" + hex.EncodeToString(b[:])
}

// advertiseAddress is SERVICE_ADDRESS, else what discovery.AdvertiseAddress
// finds for HTTP_HOST.
func advertiseAddress(cfg Config) string {
	if cfg.ServiceAddress != "" {
		return cfg.ServiceAddress
	}
	return discovery.AdvertiseAddress(cfg.HTTPHost, cfg.ConsulHTTPAddr)
}

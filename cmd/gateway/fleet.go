package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/go-kit/log/level"

	"github.com/shardpool/gateway/discovery"
	"github.com/shardpool/gateway/service"
	"github.com/shardpool/gateway/service/shard"
)

// openFleet joins the fleet in Consul as a member that registers the
// instance, then claims a pool (or POOL_ID's, as its standby until it is
// free) under the fleet's shard plan, and hands its sessions off when it
// drains.
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
		Version: version, KVPrefix: cfg.KVPrefix, PlanGeneration: m.plan.fleet.Generation,
		SessionTTL: cfg.SessionTTL, LockDelay: cfg.LockDelay,
		CheckInterval: cfg.CheckInterval, CheckFailures: cfg.CheckFailures, DeregisterAfter: cfg.DeregisterAfter,
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
	m.memberConfig = discovery.MemberConfig{
		InstanceID: m.plan.instanceID, FixedPool: fixed, Plan: m.plan.fleet,
		NewPool: m.newPool, Registry: consul, Coordinator: consul,
		HandoffMaxAge: cfg.HandoffMaxAge, ConsulTimeout: consulTimeout,
		Publish: m.buffer, Broker: m.broker(), Breaker: m.breakerState(),
		Metrics: metrics, Logger: m.logger,
	}
	m.memberConfig = m.withCheckpoints(m.memberConfig) // checkpoint.go
	member := discovery.NewMember(m.memberConfig)
	m.mu.Lock()
	m.member = member
	m.mu.Unlock()
	m.openGenerations(member)
	return nil
}

// agreeFleetPlan returns the fleet's shard plan from Consul: the stored one,
// or this instance's (total: TOTAL_SHARDS, or Discord's recommendation for
// auto; SHARDS_PER_POOL) stored as the first. It waits while Consul cannot
// be reached. An explicit TOTAL_SHARDS or a SHARDS_PER_POOL that differs
// from the stored plan is an error, logged naming the variable and both
// values: the instance exits non-zero without connecting any shard.
func (m *Main) agreeFleetPlan(ctx context.Context, total int, instanceID string) (discovery.Plan, error) {
	cfg := m.Config
	consul, err := discovery.NewConsul(discovery.ConsulConfig{
		Address: cfg.ConsulHTTPAddr, Token: cfg.ConsulHTTPToken, InstanceID: instanceID, KVPrefix: cfg.KVPrefix, Logger: m.logger,
	})
	if err != nil {
		return discovery.Plan{}, fmt.Errorf("invalid CONSUL_HTTP_ADDR: %w", err)
	}
	defer consul.CloseIdleConnections()
	want := discovery.Plan{TotalShards: total, ShardsPerPool: cfg.ShardsPerPool}
	var stored discovery.Plan
	for delay := 500 * time.Millisecond; ; delay = min(delay*2, 10*time.Second) {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		stored, err = consul.AgreePlan(actx, want)
		cancel()
		if err == nil {
			break
		}
		level.Warn(m.logger).Log("msg", "cannot read or store the fleet's shard plan in consul; retrying", "key", consul.PlanKey(), "err", err, "in", delay)
		if sleepCtx(ctx, delay) != nil {
			return discovery.Plan{}, fmt.Errorf("stopped before the fleet's shard plan could be read from consul: %w", err)
		}
	}
	checkTotal, checkPerPool := m.reshardedSettings(stored) // reshard_status.go
	if err := discovery.CheckPlan(consul.PlanKey(), stored, checkTotal, checkPerPool, 0); err != nil {
		var mismatch *discovery.PlanMismatchError
		if errors.As(err, &mismatch) {
			mismatch.Log(m.logger)
		}
		return discovery.Plan{}, err
	}
	how := "adopted the fleet's shard plan"
	if stored.CreatedBy == instanceID {
		how = "stored the fleet's shard plan: the first instance"
	}
	level.Info(m.logger).Log("msg", how, "key", consul.PlanKey(), "total_shards", stored.TotalShards, "shards_per_pool", stored.ShardsPerPool,
		"generation", stored.Generation, "created_at", stored.CreatedAt.Format(time.RFC3339), "created_by", stored.CreatedBy)
	if cfg.TotalShards == 0 && stored.TotalShards != total {
		level.Info(m.logger).Log("msg", "TOTAL_SHARDS=auto: running the fleet's plan, not Discord's current recommendation (changing it is resharding)",
			"total_shards", stored.TotalShards, "recommended", total)
	}
	return stored, nil
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fencingMargin refuses a lock-delay shorter than half the session TTL. An
// owner cut off from Consul stops its shards once no renewal has succeeded
// for TTL/2; Consul may invalidate its session sooner than the TTL (its
// /health check failing, its node's serfHealth), right after the last
// renewal, and another instance may take the pool lock once the lock-delay
// has passed since. So only a lock-delay of at least TTL/2 keeps the owner's
// shards closed before anyone else identifies them.
func fencingMargin(c Config) error {
	if c.LockDelay >= c.SessionTTL/2 {
		return nil
	}
	half := shortDuration(c.SessionTTL / 2)
	return fmt.Errorf("invalid CONSUL_LOCK_DELAY: %s is less than half of CONSUL_SESSION_TTL (%s): an owner cut off from Consul stops its shards only %s after its last renewal, and another instance may take its pool a lock-delay after Consul ends the session; set CONSUL_LOCK_DELAY to at least %s",
		shortDuration(c.LockDelay), shortDuration(c.SessionTTL), half, half)
}

// openStaticPool builds the pool POOL_ID, run without Consul.
func (m *Main) openStaticPool() {
	m.poolDrain = drainBudget(m.Config.DrainTimeout)
	pool := m.newPool(m.Config.PoolID, m.stateFileRecords())
	m.mu.Lock()
	m.pool = pool
	m.mu.Unlock()
	m.startStateCheckpoints(pool) // checkpoint.go: SESSION_STATE_FILE
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
	commands, rewrite := m.shardCommandsOf(m.plan.fleet.Generation), m.rewriteEvent() // reshard_commands.go, reshard_ids.go
	starts, renewDelay := m.starts, invalidSessionDelay(cfg)
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
				SessionStarts: starts, InvalidSessionDelay: renewDelay,
				Compression: cfg.Compression,
				Backoff:     shard.Backoff{Base: cfg.BackoffBase, Max: cfg.BackoffMax},
				Identify:    identify,
				Publisher:   buffer,
				Metrics:     metrics,
				Logger:      logger,
				Resume:      resume[sid],
				Commands:    commands,
				// A resharding's overlap: content-derived event ids.
				RewriteEvent: rewrite,
			})
		},
		Publish:      buffer,
		Broker:       m.broker(),
		Breaker:      m.breakerState(),
		Logger:       logger,
		DrainTimeout: m.poolDrain,
	})
}

// invalidSessionDelay is the pause before a new IDENTIFY: Discord's 1–5 s
// (nil), or the one a test set.
func invalidSessionDelay(cfg Config) func() time.Duration {
	if d := cfg.InvalidSessionDelay; d > 0 {
		return func() time.Duration { return d }
	}
	return nil
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

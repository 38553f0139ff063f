package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-kit/log/level"

	"github.com/shardpool/gateway/discovery"
	"github.com/shardpool/gateway/service/shard"
	"github.com/shardpool/gateway/transport"
)

// shardPlan is what Discord's /gateway/bot and the configuration decide
// before anything opens: how many shards there are, which pools they form,
// and how fast this instance may identify.
type shardPlan struct {
	gatewayURL string
	// total is TOTAL_SHARDS, else Discord's recommendation; with Consul,
	// the fleet's plan (which an explicit TOTAL_SHARDS must match).
	total int
	pools int
	// fleet is the fleet's shard plan stored in Consul (with Consul only).
	fleet           discovery.Plan
	useConsul       bool
	claim           bool // with Consul and no POOL_ID: the pool is claimed later
	first, count    int  // the shards of POOL_ID, or of pool 0 when claiming
	maxConcurrency  int
	startsRemaining int // session_start_limit.remaining at startup
	// startLimit is session_start_limit as read at startsReadAt;
	// startCounter keeps the count of session starts: in Consul with a
	// fleet, nil for in memory.
	startLimit   shard.StartLimit
	startsReadAt time.Time
	startCounter shard.StartCounter
	instanceID   string
}

// shards returns the first shard of pool id and how many it has.
func (p shardPlan) shards(id, perPool int) (first, count int) {
	first = id * perPool
	return first, min(perPool, p.total-first)
}

// planShards asks Discord first: the shard count and the identify budget
// decide everything else. It refuses a pool without shards, and a reserve
// that leaves no session start; a budget too low for the pool makes shards
// wait for Discord's reset instead (openSessionStarts).
func (m *Main) planShards(ctx context.Context) error {
	cfg := m.Config
	if cfg.DiscordToken == "" {
		return errors.New("invalid DISCORD_TOKEN: is required")
	}
	bot, err := shard.FetchGatewayBot(ctx, cfg.DiscordAPIURL, cfg.DiscordToken)
	if err != nil {
		return err
	}
	readAt := time.Now()
	p := shardPlan{gatewayURL: bot.URL, total: cfg.TotalShards, useConsul: cfg.ConsulHTTPAddr != "", instanceID: newInstanceID(cfg.ServiceName)}
	if p.total == 0 {
		p.total = max(bot.Shards, 1)
	}
	if p.useConsul {
		if p.fleet, err = m.agreeFleetPlan(ctx, p.total, p.instanceID); err != nil {
			return err
		}
		p.total = p.fleet.TotalShards
		cfg.ShardsPerPool, m.Config.ShardsPerPool = p.fleet.ShardsPerPool, p.fleet.ShardsPerPool // a resharded fleet's (reshard_status.go)
	}
	// With Consul and no POOL_ID the pool is claimed later; pool 0 is the
	// largest, so its size is what the identify budget must cover.
	p.claim = p.useConsul && !cfg.PoolIDSet
	p.pools = (p.total + cfg.ShardsPerPool - 1) / cfg.ShardsPerPool
	poolID := cfg.PoolID
	if p.claim {
		poolID = 0
	}
	if poolID*cfg.ShardsPerPool >= p.total {
		return fmt.Errorf("invalid POOL_ID: pool %d has no shards (TOTAL_SHARDS=%d, SHARDS_PER_POOL=%d: pools 0..%d)",
			cfg.PoolID, p.total, cfg.ShardsPerPool, (p.total-1)/cfg.ShardsPerPool)
	}
	p.first, p.count = p.shards(poolID, cfg.ShardsPerPool)
	limit := bot.StartLimit
	if cfg.SessionStartReserve >= limit.Total {
		return fmt.Errorf("invalid SESSION_START_RESERVE: %d keeps all of the bot's %d daily session starts in reserve: no shard could ever identify",
			cfg.SessionStartReserve, limit.Total)
	}
	p.maxConcurrency = max(limit.MaxConcurrency, 1)
	p.startsRemaining = limit.Remaining
	p.startLimit, p.startsReadAt = shard.StartLimitOf(bot, readAt), readAt
	if p.useConsul {
		if p.startCounter, err = m.sessionStartCounter(p.instanceID); err != nil {
			return err
		}
	}
	m.plan = p
	return nil
}

// logStarting logs the plan, and warns when anyone may drain the pool.
func (m *Main) logStarting() {
	cfg, p := m.Config, m.plan
	if p.claim {
		level.Info(m.logger).Log("msg", "starting", "version", version, "pool_id", "claimed from consul", "pools", p.pools, "shards_per_pool", cfg.ShardsPerPool,
			"total_shards", p.total, "max_concurrency", p.maxConcurrency, "session_starts_remaining", p.startsRemaining, "session_start_reserve", m.startReserve(),
			"nats", cfg.NATSURL != "", "compression", cfg.Compression, "consul", true, "instance_id", p.instanceID)
	} else {
		level.Info(m.logger).Log("msg", "starting", "version", version, "pool_id", cfg.PoolID, "first_shard", p.first, "shards", p.count,
			"total_shards", p.total, "max_concurrency", p.maxConcurrency, "session_starts_remaining", p.startsRemaining, "session_start_reserve", m.startReserve(),
			"nats", cfg.NATSURL != "", "compression", cfg.Compression, "consul", p.useConsul)
	}
	if cfg.DrainToken == "" && !transport.IsLoopback(cfg.HTTPHost) {
		level.Warn(m.logger).Log("msg", "DRAIN_TOKEN is unset and the HTTP server is not bound to loopback: anyone who reaches it can drain the pool")
	}
}

// openSessionStarts builds the session start budget that the shards of
// every pool of this process take from before each IDENTIFY (counted in
// Consul with a fleet), and keeps it fresh until ctx ends: every 10 minutes,
// as other processes of the bot spend the same budget, and right after each
// reset.
func (m *Main) openSessionStarts(ctx context.Context) {
	cfg := m.Config
	m.starts = shard.NewSessionStarts(shard.SessionStartsConfig{
		Counter: m.plan.startCounter, Fetch: shard.StartLimitReader(cfg.DiscordAPIURL, cfg.DiscordToken),
		Initial: m.plan.startLimit, FetchedAt: m.plan.startsReadAt, Reserve: cfg.SessionStartReserve,
		Metrics: m.shardMetrics, Logger: m.logger,
	})
	go m.starts.KeepFresh(ctx, 10*time.Minute)
}

// sessionStartCounter is the fleet's count of session starts in Consul. It
// has a client of its own: the fleet's is made later, once the HTTP port it
// registers is known.
func (m *Main) sessionStartCounter(instanceID string) (shard.StartCounter, error) {
	cfg := m.Config
	consul, err := discovery.NewConsul(discovery.ConsulConfig{
		Address: cfg.ConsulHTTPAddr, Token: cfg.ConsulHTTPToken, InstanceID: instanceID, KVPrefix: cfg.KVPrefix, Logger: m.logger,
	})
	if err != nil {
		return nil, fmt.Errorf("invalid CONSUL_HTTP_ADDR: %w", err)
	}
	return consul.NewSessionStartCounter(), nil
}

// startReserve is SESSION_START_RESERVE, or its default for the bot's total.
func (m *Main) startReserve() int {
	if r := m.Config.SessionStartReserve; r > 0 {
		return r
	}
	return shard.DefaultStartReserve(m.plan.startLimit.Total)
}

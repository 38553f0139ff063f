package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"

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
	instanceID      string
}

// shards returns the first shard of pool id and how many it has.
func (p shardPlan) shards(id, perPool int) (first, count int) {
	first = id * perPool
	return first, min(perPool, p.total-first)
}

// planShards asks Discord first: the shard count and the identify budget
// decide everything else. It refuses a pool without shards, and a start
// that would run out of session starts.
func (m *Main) planShards(ctx context.Context) error {
	cfg := m.Config
	if cfg.DiscordToken == "" {
		return errors.New("invalid DISCORD_TOKEN: is required")
	}
	bot, err := shard.FetchGatewayBot(ctx, cfg.DiscordAPIURL, cfg.DiscordToken)
	if err != nil {
		return err
	}
	p := shardPlan{gatewayURL: bot.URL, total: cfg.TotalShards, useConsul: cfg.ConsulHTTPAddr != "", instanceID: newInstanceID(cfg.ServiceName)}
	if p.total == 0 {
		p.total = max(bot.Shards, 1)
	}
	if p.useConsul {
		if p.fleet, err = m.agreeFleetPlan(ctx, p.total, p.instanceID); err != nil {
			return err
		}
		p.total = p.fleet.TotalShards
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
	if limit.Remaining < p.count {
		return fmt.Errorf("session start limit too low: %d identifies remaining (of %d, resets in %s) but this pool must identify %d shards; running out resets the bot token, so refusing to start",
			limit.Remaining, limit.Total, limit.ResetAfter.Duration().Round(time.Second), p.count)
	}
	p.maxConcurrency = max(limit.MaxConcurrency, 1)
	p.startsRemaining = limit.Remaining
	m.plan = p
	return nil
}

// logStarting logs the plan, and warns when anyone may drain the pool.
func (m *Main) logStarting() {
	cfg, p := m.Config, m.plan
	if p.claim {
		level.Info(m.logger).Log("msg", "starting", "version", version, "pool_id", "claimed from consul", "pools", p.pools, "shards_per_pool", cfg.ShardsPerPool,
			"total_shards", p.total, "max_concurrency", p.maxConcurrency, "session_starts_remaining", p.startsRemaining,
			"nats", cfg.NATSURL != "", "compression", cfg.Compression, "consul", true, "instance_id", p.instanceID)
	} else {
		level.Info(m.logger).Log("msg", "starting", "version", version, "pool_id", cfg.PoolID, "first_shard", p.first, "shards", p.count,
			"total_shards", p.total, "max_concurrency", p.maxConcurrency, "session_starts_remaining", p.startsRemaining,
			"nats", cfg.NATSURL != "", "compression", cfg.Compression, "consul", p.useConsul)
	}
	if cfg.DrainToken == "" && !transport.IsLoopback(cfg.HTTPHost) {
		level.Warn(m.logger).Log("msg", "DRAIN_TOKEN is unset and the HTTP server is not bound to loopback: anyone who reaches it can drain the pool")
	}
}

// refreshSessionStarts re-reads session_start_limit now and then: other
// pools of the bot spend the same budget.
func refreshSessionStarts(ctx context.Context, cfg Config, g prometheus.Gauge, logger log.Logger) {
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		bot, err := shard.FetchGatewayBot(ctx, cfg.DiscordAPIURL, cfg.DiscordToken)
		if err != nil {
			level.Warn(logger).Log("msg", "cannot refresh the session start limit", "err", err)
			continue
		}
		g.Set(float64(bot.StartLimit.Remaining))
	}
}

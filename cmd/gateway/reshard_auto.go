package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-kit/log/level"

	"github.com/shardpool/gateway/service/shard"
)

// RESHARD's values.
const (
	// ReshardManual (the default): a close 4011 stops the shard, as it
	// always did, and its error names the command to run.
	ReshardManual = "manual"
	// ReshardAuto: the fleet reshards itself (autoReshard).
	ReshardAuto = "auto"
)

func reshardSetter(c *Config, v string) error {
	switch v = strings.TrimSpace(strings.ToLower(v)); v {
	case ReshardManual, ReshardAuto:
		c.Reshard = v
		return nil
	}
	return fmt.Errorf("%q must be manual or auto", v)
}

// reshardSettings refuses RESHARD=auto without Consul: there is no fleet
// plan to change, and the setting would do nothing.
func reshardSettings(c Config) error {
	if c.Reshard == ReshardAuto && c.ConsulHTTPAddr == "" {
		return errors.New("invalid RESHARD: auto reshards a fleet's plan in Consul and needs CONSUL_HTTP_ADDR; without Consul set TOTAL_SHARDS (or auto) and restart the pool to change it")
	}
	return nil
}

// autoReshard runs with RESHARD=auto: every RESHARD_CHECK_INTERVAL, and
// within a second of a shard of this instance stopping on close 4011, it
// compares /gateway/bot's recommended shard count with the plan in force;
// when the recommendation is higher (or a shard got 4011), it starts a
// resharding to the recommendation rounded up to a multiple of
// max_concurrency, so that the new generation's identify buckets fill
// evenly. Discord's recommendation may lag behind a 4011: then the target is
// twice the plan's total, rounded the same way. Every instance checks; the
// one holding <KV_PREFIX>/reshard-lock starts it.
func (g *fleetGens) autoReshard(ctx context.Context) {
	cfg := g.m.Config
	next := time.Now().Add(cfg.ReshardCheckInterval)
	seen4011 := map[int]bool{}
	for sleepCtx(ctx, time.Second) == nil {
		got4011 := g.closed4011(seen4011)
		if !got4011 && time.Now().Before(next) {
			continue
		}
		next = time.Now().Add(cfg.ReshardCheckInterval)
		g.checkRecommendation(ctx, got4011)
	}
}

// closed4011 reports whether a shard of this instance's pool stopped on
// close 4011 since the last call.
func (g *fleetGens) closed4011(seen map[int]bool) bool {
	pool := g.current().Pool()
	if pool == nil {
		return false
	}
	found := false
	for _, s := range pool.Shards() {
		st := s.Status()
		if strings.Contains(st.LastError, "close code 4011") && !seen[st.ID] {
			seen[st.ID], found = true, true
		}
	}
	return found
}

// checkRecommendation starts a resharding when Discord recommends more
// shards than the plan has, or a shard got 4011.
func (g *fleetGens) checkRecommendation(ctx context.Context, got4011 bool) {
	cfg, logger := g.m.Config, g.m.logger
	bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	plans, err := g.consul.ReadPlans(bctx)
	if err != nil || plans.Next != nil {
		return
	}
	bot, err := shard.FetchGatewayBot(bctx, cfg.DiscordAPIURL, cfg.DiscordToken)
	if err != nil {
		level.Warn(logger).Log("msg", "RESHARD=auto: cannot read /gateway/bot", "err", err)
		return
	}
	target := reshardTarget(plans.Current.TotalShards, bot.Shards, max(bot.StartLimit.MaxConcurrency, 1), got4011)
	if target <= plans.Current.TotalShards {
		return
	}
	sid, err := g.current().SessionID(bctx)
	if err != nil {
		return
	}
	p, started, err := g.consul.AutoReshard(bctx, sid, target)
	switch {
	case err != nil:
		level.Warn(logger).Log("msg", "RESHARD=auto: cannot start the resharding", "err", err)
	case started:
		level.Info(logger).Log("msg", "RESHARD=auto: resharding", "from", plans.Current.TotalShards, "to", p.TotalShards,
			"recommended", bot.Shards, "close_4011", got4011, "generation", p.Generation)
	}
}

// reshardTarget is the shard count to reshard to: the recommendation, or
// twice the current total after a 4011 the recommendation does not
// explain, rounded up to a multiple of maxConcurrency.
func reshardTarget(current, recommended, maxConcurrency int, got4011 bool) int {
	target := recommended
	if got4011 && target <= current {
		target = 2 * current
	}
	return (target + maxConcurrency - 1) / maxConcurrency * maxConcurrency
}

package main

// What the generations show: /status, the plan answer, the reshard
// requests (POST and DELETE /reshard).

import (
	"context"
	"errors"
	"fmt"

	"github.com/go-kit/log/level"

	"github.com/shardpool/gateway/discovery"
	"github.com/shardpool/gateway/service"
)

// Status implements service.Service: the member's, with the generations.
func (g *fleetGens) Status(ctx context.Context) (service.Status, error) {
	g.mu.Lock()
	member, gen := g.member, g.plan.Generation
	g.mu.Unlock()
	st, err := member.Status(ctx)
	if err == nil && st.Discovery != nil {
		st.Discovery.Generation = gen
		st.Discovery.Generations = g.generations()
	}
	return st, err
}

// Readiness implements service.Service.
func (g *fleetGens) Readiness(ctx context.Context) service.Readiness {
	return g.current().Readiness(ctx)
}

// Drain implements service.Service: the current member drains, and no
// switch starts another.
func (g *fleetGens) Drain(ctx context.Context) (service.DrainResult, error) {
	g.mu.Lock()
	g.closing = true
	member := g.member
	g.mu.Unlock()
	return member.Drain(ctx)
}

// generations is the plan in force and the next one, with their progress.
func (g *fleetGens) generations() []service.GenerationStatus {
	g.mu.Lock()
	defer g.mu.Unlock()
	plans := []discovery.Plan{g.plans.Current}
	if g.plans.Next != nil {
		plans = append(plans, *g.plans.Next)
	}
	var out []service.GenerationStatus
	for i, p := range plans {
		if p.TotalShards < 1 {
			continue
		}
		st := service.GenerationStatus{Generation: p.Generation, State: service.GenerationInForce, TotalShards: p.TotalShards,
			ShardsPerPool: p.ShardsPerPool, Pools: p.Pools(), CreatedAt: p.CreatedAt}
		if i == 1 {
			st.State = service.GenerationNext
		}
		if i < len(g.progress) && g.progress[i].Generation == p.Generation {
			st.PoolsClaimed, st.ShardsReady = g.progress[i].PoolsClaimed, g.progress[i].ShardsReady
		}
		out = append(out, st)
	}
	return out
}

// reshardRequest starts (or, with abort, drops) a next generation: POST
// /reshard and DELETE /reshard.
func (m *Main) reshardRequest(ctx context.Context, total, perPool int, abort bool) (service.Plan, error) {
	if m.gens == nil {
		return service.Plan{}, service.ErrReshardUnavailable
	}
	consul := m.gens.consul
	var err error
	var p discovery.Plan
	if abort {
		p, err = consul.AbortReshard(ctx)
		if err == nil {
			level.Info(m.logger).Log("msg", "reshard: aborted", "generation", p.Generation, "total_shards", p.TotalShards)
		}
	} else {
		p, err = consul.StartReshard(ctx, total, perPool, m.plan.instanceID)
		if err == nil {
			level.Info(m.logger).Log("msg", "reshard: next generation written", "generation", p.Generation, "total_shards", p.TotalShards, "shards_per_pool", p.ShardsPerPool)
		}
	}
	switch {
	case errors.Is(err, discovery.ErrNoReshard):
		return service.Plan{}, fmt.Errorf("%w", service.ErrNoReshard)
	case errors.Is(err, discovery.ErrReshardInProgress), errors.Is(err, discovery.ErrSamePlan):
		return service.Plan{}, fmt.Errorf("%w: %v", service.ErrReshardConflict, err)
	case err != nil:
		return service.Plan{}, err
	}
	// The answer shows the generations as Consul has them now.
	if plans, err := consul.ReadPlans(ctx); err == nil {
		m.gens.observePlans(plans)
		m.gens.readProgress(ctx, plans)
	}
	return m.currentPlan(), nil
}

// currentPlan is the answer to gateway.plan and the reshard requests: the
// plan this instance runs, and the fleet's generations.
func (m *Main) currentPlan() service.Plan {
	m.mu.Lock()
	p := service.Plan{TotalShards: m.plan.total, ShardsPerPool: m.Config.ShardsPerPool, Pools: m.plan.pools}
	gens := m.gens
	m.mu.Unlock()
	if gens != nil {
		p.Generations = gens.generations()
		if len(p.Generations) > 0 {
			inForce := p.Generations[0]
			p.TotalShards, p.ShardsPerPool, p.Pools = inForce.TotalShards, inForce.ShardsPerPool, inForce.Pools
		}
	}
	return p
}

// reshardedSettings returns the TOTAL_SHARDS and SHARDS_PER_POOL a
// starting instance's settings are checked against the fleet's stored plan
// with. Once the fleet has resharded (a generation past
// the first), the plan in Consul is the truth and the job's settings (the
// first plan's) only differ from it: the instance runs the plan, with a
// warning, rather than exiting on every restart until the job is changed.
func (m *Main) reshardedSettings(stored discovery.Plan) (total, perPool int) {
	total, perPool = m.Config.TotalShards, m.Config.ShardsPerPool
	differs := (total != 0 && total != stored.TotalShards) || perPool != stored.ShardsPerPool
	if stored.Generation > discovery.FirstGeneration && differs {
		level.Warn(m.logger).Log("msg", "the fleet was resharded: this instance runs the plan in consul, not its TOTAL_SHARDS and SHARDS_PER_POOL; set them to the plan's (or TOTAL_SHARDS=auto)",
			"generation", stored.Generation, "total_shards", stored.TotalShards, "shards_per_pool", stored.ShardsPerPool,
			"configured_total_shards", total, "configured_shards_per_pool", perPool)
		return 0, stored.ShardsPerPool
	}
	return total, perPool
}

package main

// Resharding without downtime, as one instance lives it (README:
// "Resharding without downtime"). The fleet's plan in Consul has a generation; a resharding
// writes the next generation beside it (discovery/reshard.go). Every
// instance watches both (watch, observe) and runs one generation's Member
// at a time (runFleet):
//
//  1. A next generation appears: while it has unclaimed pools, spares (and
//     instances that start now) leave the generation in force and join it,
//     claiming its pools; its shards IDENTIFY with [shard, N_next] through
//     the shared identify buckets and daily budget. Owners of the
//     generation in force keep serving (and any spare left over stays
//     theirs). From now on both generations publish with content-derived
//     event ids, so JetStream stores one copy of what both receive
//     (reshard_ids.go); only the generation in force takes workers'
//     commands (reshard_commands.go).
//  2. Every pool of the next generation is claimed and every shard of it
//     READY (the owners report it in their pool locks): one instance, under
//     a Consul lock, writes the hand-over instant into the next plan, two
//     seconds ahead (scheduleHandover); at that instant one instance makes
//     the next generation the plan in force (cutOver).
//  3. The old generation's owners see it: once each of their sessions has
//     passed every guild's hand-over point (or at the deadline) their
//     shards close with 1000 (the session ends for good at Discord; no
//     hand-off record), and they join the new plan in-process as spares
//     (leave, join).
//  4. An abort deletes the next generation instead: its owners close their
//     shards the same way and become spares of the plan in force, which
//     never stopped.
//
// Content ids stay on until RESHARD_ID_MARGIN after the overlap ended, for
// events still in flight from the closed generation. Which generation
// publishes a dispatch without a content key is reshard_ids.go's.

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/go-kit/log/level"

	"github.com/shardpool/gateway/discovery"
	"github.com/shardpool/gateway/service"
)

// fleetGens is the instance's place in the fleet's generations: the member
// it runs, and what it last read of the plans. It implements service.Service
// for the HTTP server by answering for the current member.
type fleetGens struct {
	m        *Main
	consul   *discovery.Consul // for the plans and the progress of any generation
	switches chan genSwitch
	metrics  *reshardMetrics
	fixed    bool // POOL_ID set: never joins a next generation early

	mu       sync.Mutex
	member   *discovery.Member
	plan     discovery.Plan // the member's
	plans    discovery.Plans
	progress []discovery.GenerationProgress // in force, then next
	closing  bool                           // draining: no more switches
	reported poolReport                     // the watch goroutine's own
	overlap  overlapClock
	handover *handover // the hand-over of keyless dispatches (reshard_ids.go)
}

var _ service.Service = (*fleetGens)(nil)

// genSwitch asks runFleet to leave the current member for one of plan;
// retire closes the member's shards for good first.
type genSwitch struct {
	plan   discovery.Plan
	retire bool
	why    string
}

// poolReport is the last READY count written to the pool lock.
type poolReport struct {
	generation, pool, shards, ready int
	at                              time.Time
}

func (m *Main) openGenerations(member *discovery.Member) {
	m.gens = &fleetGens{
		m: m, consul: m.consul, switches: make(chan genSwitch, 1),
		metrics: newReshardMetrics(m.reg), fixed: !m.plan.claim,
		member: member, plan: m.plan.fleet,
	}
	m.gens.metrics.watch(m.gens)
}

// runFleet runs the current member, and switches members when the
// generations ask for it, until ctx ends.
func (m *Main) runFleet(ctx context.Context) error {
	g := m.gens
	g.joinNextAtStart(ctx)
	go g.watch(ctx)
	if m.Config.Reshard == ReshardAuto {
		go g.autoReshard(ctx)
	}
	for {
		sw, err := g.runMember(ctx, g.current())
		if sw == nil {
			return err
		}
		if !g.join(sw.plan) {
			<-ctx.Done() // draining: the drained member answers until the end
			return nil
		}
	}
}

// runMember runs member until a switch is due (returned, once the member
// left), it ends, or ctx ends.
func (g *fleetGens) runMember(ctx context.Context, member *discovery.Member) (*genSwitch, error) {
	mctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- member.Run(mctx) }()
	for {
		select {
		case err := <-done:
			var mismatch *discovery.PlanMismatchError
			if !errors.As(err, &mismatch) {
				return nil, err
			}
			if plan, ok := g.followPlan(ctx); ok {
				return &genSwitch{plan: plan, why: "the plan moved on"}, nil
			}
			return nil, err
		case sw := <-g.switches:
			if !g.stillDue(sw) {
				continue // decided before the last switch: stale
			}
			g.leave(member, sw)
			stop()
			<-done
			return &sw, nil
		case <-ctx.Done():
			stop()
			return nil, <-done
		}
	}
}

// joinNextAtStart makes an instance that starts while a next generation is
// open, and needs instances, a member of that one: it claims the next
// generation's pools before any old one.
func (g *fleetGens) joinNextAtStart(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	plans, err := g.consul.ReadPlans(rctx)
	if err != nil || plans.Next == nil || g.fixed || !plans.Current.Same(g.plan) {
		return
	}
	g.readProgress(rctx, plans)
	if !g.nextNeedsInstances(*plans.Next) {
		return
	}
	level.Info(g.m.logger).Log("msg", "reshard: a next generation is open; joining it", "generation", plans.Next.Generation, "total_shards", plans.Next.TotalShards)
	g.observePlans(plans)
	g.join(*plans.Next)
}

// followPlan handles a member that found the fleet's plan is no longer its
// own (a cut-over or abort it missed while it had no session): the plan in
// force to join, false when the plan did not move (a real mismatch).
func (g *fleetGens) followPlan(ctx context.Context) (discovery.Plan, bool) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	plans, err := g.consul.ReadPlans(rctx)
	g.mu.Lock()
	mine := g.plan
	g.mu.Unlock()
	if err != nil || plans.Current.Same(mine) || plans.Current.ShardsPerPool < 1 {
		return discovery.Plan{}, false
	}
	return plans.Current, true
}

// leave ends member: a spare just leaves; an owner whose generation is
// over closes its shards with 1000 and writes no hand-off record.
func (g *fleetGens) leave(member *discovery.Member, sw genSwitch) {
	logger := g.m.logger
	pool := member.Pool()
	if sw.retire && pool != nil {
		if sw.why == "cut over" {
			g.awaitHandover(pool)
		}
		for _, s := range pool.Shards() {
			s.EndForGood()
		}
		level.Info(logger).Log("msg", "reshard: closing this generation's sessions for good (close 1000, no hand-off)",
			"why", sw.why, "generation", g.plan.Generation, "shards", len(pool.Shards()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.m.Config.DrainTimeout)
	defer cancel()
	if _, err := member.Drain(ctx); err != nil && !errors.Is(err, service.ErrNotRunning) {
		level.Warn(logger).Log("msg", "reshard: leaving the generation's membership failed", "err", err)
	}
	if sw.retire && pool != nil {
		g.overlap.closed(time.Now(), g.m.Config.ReshardIDMargin)
		level.Info(logger).Log("msg", "reshard: old sessions closed", "generation", g.plan.Generation)
	}
}

// join makes the instance a member of plan's generation. false when the
// instance is draining.
func (g *fleetGens) join(plan discovery.Plan) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		return false
	}
	member := g.m.joinGeneration(g.consul.ForPlan(plan), plan)
	g.member, g.plan = member, plan
	level.Info(g.m.logger).Log("msg", "reshard: joined generation", "generation", plan.Generation, "total_shards", plan.TotalShards, "shards_per_pool", plan.ShardsPerPool)
	return true
}

// joinGeneration builds the member of plan's generation and points the
// fields newPool reads at it (no member runs while they change).
func (m *Main) joinGeneration(coord *discovery.PlanCoordinator, plan discovery.Plan) *discovery.Member {
	cfg := m.memberConfig
	cfg.Plan, cfg.Registry, cfg.Coordinator = plan, coord, coord
	member := discovery.NewMember(cfg)
	m.mu.Lock()
	m.member, m.consul = member, coord.Consul
	m.plan.fleet, m.plan.total, m.plan.pools = plan, plan.TotalShards, plan.Pools()
	m.Config.ShardsPerPool = plan.ShardsPerPool
	m.mu.Unlock()
	return member
}

// stillDue reports whether sw is still what decide would say: a switch
// queued while the previous one ran may be stale.
func (g *fleetGens) stillDue(sw genSwitch) bool {
	g.mu.Lock()
	plans := g.plans
	g.mu.Unlock()
	now, ok := g.decide(plans)
	return ok && now.plan.Same(sw.plan)
}

func (g *fleetGens) current() *discovery.Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.member
}

// watch follows the plans in Consul (a blocking query, at least every 2 s)
// and acts on each reading.
func (g *fleetGens) watch(ctx context.Context) {
	var index uint64
	var warned time.Time
	for ctx.Err() == nil {
		plans, next, err := g.consul.WatchPlans(ctx, index, 2*time.Second)
		if err != nil {
			if ctx.Err() == nil && time.Since(warned) > time.Minute {
				warned = time.Now()
				level.Warn(g.m.logger).Log("msg", "reshard: cannot read the fleet's plans; retrying", "err", err)
			}
			index = 0
			sleepCtx(ctx, time.Second)
			continue
		}
		index = next
		g.observe(ctx, plans)
	}
}

// observe is one round: progress and metrics, this pool's READY count,
// the event id policy, then a switch or the cut-over when due.
func (g *fleetGens) observe(ctx context.Context, plans discovery.Plans) {
	g.observePlans(plans)
	g.readProgress(ctx, plans)
	g.reportPool(ctx)
	if sw, ok := g.decide(plans); ok {
		select {
		case g.switches <- sw:
		default: // one is pending; the next round decides again
		}
	}
	g.advance(ctx, plans)
}

// advance moves a next generation whose shards are all READY on: first
// the hand-over instant, a moment ahead, written into its plan; at that
// instant, the cut-over.
func (g *fleetGens) advance(ctx context.Context, plans discovery.Plans) {
	switch {
	case plans.Next == nil:
	case plans.Next.HandoverAt.IsZero():
		if g.nextComplete() {
			g.scheduleHandover(ctx, plans)
		}
	case !time.Now().Before(plans.Next.HandoverAt):
		g.cutOver(ctx, plans)
	}
}

// scheduleHandover writes the hand-over instant: tried by every instance
// that sees the next generation complete, done by the one holding the lock.
func (g *fleetGens) scheduleHandover(ctx context.Context, plans discovery.Plans) {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	sid, err := g.current().SessionID(sctx)
	if err != nil {
		return
	}
	at := time.Now().Add(handoverLead)
	if ok, err := g.consul.ScheduleHandover(sctx, sid, plans, at); err != nil {
		level.Warn(g.m.logger).Log("msg", "reshard: cannot schedule the hand-over; retrying", "err", err)
	} else if ok {
		level.Info(g.m.logger).Log("msg", "reshard: every shard of the next generation READY; hand-over written", "at", at.Format(time.RFC3339Nano))
	}
}

// observePlans keeps the plans and starts or ends the overlap clock.
func (g *fleetGens) observePlans(plans discovery.Plans) {
	g.observeHandover(plans.Next)
	g.mu.Lock()
	prev := g.plans
	g.plans = plans
	g.mu.Unlock()
	now := time.Now()
	switch {
	case plans.Next != nil && prev.Next == nil:
		g.overlap.begin(plans.Next.CreatedAt, now)
		level.Info(g.m.logger).Log("msg", "reshard: next generation written", "generation", plans.Next.Generation,
			"total_shards", plans.Next.TotalShards, "created_at", plans.Next.CreatedAt.Format(time.RFC3339Nano), "created_by", plans.Next.CreatedBy)
	case plans.Next == nil && prev.Next != nil:
		cut := plans.Current.Same(*prev.Next)
		margin := g.m.Config.ReshardIDMargin
		if cut {
			margin += g.m.Config.ReshardHandoverTimeout // the old sessions may serve that much longer
		} else {
			g.dropHandover(plans.Current.Generation)
		}
		g.overlap.end(now, cut, margin)
		level.Info(g.m.logger).Log("msg", "reshard: overlap over", "cut_over", cut, "generation_in_force", plans.Current.Generation)
	}
	g.settleContentIDs(now, g.runningSessions) // reshard_ids.go: which seqs carry content ids
}

// decide says whether this instance must change generations: a member of
// a generation that is neither in force nor next leaves it (its owner
// closes its shards for good); a spare of the generation in force joins
// the next one.
func (g *fleetGens) decide(plans discovery.Plans) (genSwitch, bool) {
	g.mu.Lock()
	member, mine, closing := g.member, g.plan, g.closing
	g.mu.Unlock()
	if closing || plans.Current.ShardsPerPool < 1 {
		return genSwitch{}, false
	}
	pooled := member.Pool() != nil && member.Role() != discovery.RoleDrained
	isNext := plans.Next != nil && plans.Next.Same(mine)
	switch {
	case !mine.Same(plans.Current) && !isNext:
		why := "aborted"
		if mine.Generation < plans.Current.Generation {
			why = "cut over"
		}
		return genSwitch{plan: plans.Current, retire: pooled, why: why}, true
	case plans.Next != nil && !isNext && !pooled && !g.fixed && g.nextNeedsInstances(*plans.Next):
		return genSwitch{plan: *plans.Next, why: "spare joins the next generation"}, true
	}
	return genSwitch{}, false
}

// nextNeedsInstances reports whether the next generation has unclaimed
// pools (or its progress is not known yet). Spares beyond its needs stay
// spares of the plan in force, ready to take over an old pool whose owner
// dies during the overlap; they join the new plan at the cut-over.
func (g *fleetGens) nextNeedsInstances(next discovery.Plan) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, pr := range g.progress {
		if pr.Generation == next.Generation {
			return pr.PoolsClaimed < pr.Pools
		}
	}
	return true
}

// cutOver makes the next generation the plan in force: tried by every
// instance that sees it complete, done by the one that holds the lock.
func (g *fleetGens) cutOver(ctx context.Context, plans discovery.Plans) {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	sid, err := g.current().SessionID(sctx)
	if err != nil {
		return
	}
	ok, err := g.consul.CutOver(sctx, sid, plans)
	if err != nil {
		level.Warn(g.m.logger).Log("msg", "reshard: cut-over failed; retrying", "err", err)
		return
	}
	if ok {
		level.Info(g.m.logger).Log("msg", "reshard: cut over: the next generation is the plan in force",
			"generation", plans.Next.Generation, "total_shards", plans.Next.TotalShards)
	}
}

// readProgress reads how far each generation is, for the cut-over, the
// metrics and /status.
func (g *fleetGens) readProgress(ctx context.Context, plans discovery.Plans) {
	gens := []discovery.Plan{plans.Current}
	if plans.Next != nil {
		gens = append(gens, *plans.Next)
	}
	var out []discovery.GenerationProgress
	for _, p := range gens {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		pr, err := g.consul.Progress(pctx, p)
		cancel()
		if err != nil {
			return // keep the last reading
		}
		out = append(out, pr)
	}
	g.mu.Lock()
	prev := g.progress
	g.progress = out
	g.mu.Unlock()
	if len(out) == 2 {
		g.logProgress(prev, out[1])
	}
}

// logProgress logs the first and the last READY shard of the next
// generation, for the timeline.
func (g *fleetGens) logProgress(prev []discovery.GenerationProgress, next discovery.GenerationProgress) {
	before := 0
	if len(prev) == 2 && prev[1].Generation == next.Generation {
		before = prev[1].ShardsReady
	}
	if before == 0 && next.ShardsReady > 0 {
		level.Info(g.m.logger).Log("msg", "reshard: first shards of the next generation READY", "generation", next.Generation, "shards_ready", next.ShardsReady)
	}
	if before < next.TotalShards && next.Complete() {
		level.Info(g.m.logger).Log("msg", "reshard: every shard of the next generation READY", "generation", next.Generation, "shards_ready", next.ShardsReady)
	}
}

func (g *fleetGens) nextComplete() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.plans.Next != nil && len(g.progress) == 2 && g.progress[1].Generation == g.plans.Next.Generation && g.progress[1].Complete()
}

// reportPool writes this instance's READY count into its pool lock when it
// changed (or every 30 s).
func (g *fleetGens) reportPool(ctx context.Context) {
	g.mu.Lock()
	member, gen := g.member, g.plan.Generation
	g.mu.Unlock()
	pool := member.Pool()
	if pool == nil || member.Role() == discovery.RoleDrained {
		return
	}
	r := pool.Readiness(ctx)
	now := poolReport{generation: gen, pool: r.PoolID, shards: r.ShardsTotal, ready: r.ShardsReady}
	last := g.reported
	now.at = last.at
	if now == last && time.Since(last.at) < 30*time.Second {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	sid, err := member.SessionID(rctx)
	if err != nil {
		return
	}
	if err := g.consul.ForGeneration(gen).ReportPool(rctx, sid, r.PoolID, r.ShardsTotal, r.ShardsReady); err != nil {
		return // fenced, or Consul unreachable: the next round tries again
	}
	now.at = time.Now()
	g.reported = now
}

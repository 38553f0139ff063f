package discovery

// Resharding: the fleet's next shard plan, written beside the current one.
//
//	<KV_PREFIX>/plan        the plan in force (generation g)
//	<KV_PREFIX>/plan-next   the next plan (generation g+1), while resharding
//	<KV_PREFIX>/pools/<generation>/<id>   pool locks; the owner keeps
//	                        {shards, shards_ready} in the value (ReportPool)
//	<KV_PREFIX>/reshard-lock  held by the instance that cuts over
//
// StartReshard writes plan-next; instances claim its pools beside the
// generation in force; once every pool of the next generation is claimed
// and every shard of it READY, one instance (CutOver, under reshard-lock)
// makes it the plan and deletes plan-next in one transaction. AbortReshard
// deletes plan-next before that.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// Errors of the reshard commands, for their callers to map (HTTP 409, 404).
var (
	// ErrReshardInProgress: a next generation exists already.
	ErrReshardInProgress = errors.New("a resharding is in progress already (abort it first)")
	// ErrNoReshard: there is no next generation to abort or cut over to.
	ErrNoReshard = errors.New("no resharding in progress")
	// ErrSamePlan: the requested plan is the one in force.
	ErrSamePlan = errors.New("the requested shard plan is the one in force")
	// ErrNoPlan: the fleet has no plan yet (no instance ever started).
	ErrNoPlan = errors.New("the fleet has no shard plan yet")
)

// Plans is the plan in force and, while resharding, the next one.
type Plans struct {
	Current Plan
	Next    *Plan
	// The keys' ModifyIndex, for check-and-set.
	currentIndex, nextIndex uint64
}

// NextPlanKey is where the next generation's plan is stored while resharding.
func (c *Consul) NextPlanKey() string { return c.cfg.KVPrefix + "/plan-next" }

func (c *Consul) reshardLockKey() string { return c.cfg.KVPrefix + "/reshard-lock" }

// ForGeneration returns a Consul for the pools and hand-off records of
// generation gen, sharing this one's client and settings.
func (c *Consul) ForGeneration(gen int) *Consul {
	cp := *c
	cp.cfg.PlanGeneration = gen
	return &cp
}

// Generation returns the plan generation whose pools this Consul claims.
func (c *Consul) Generation() int { return c.cfg.PlanGeneration }

// ReadPlans reads the plan in force and the next one (consistent read).
func (c *Consul) ReadPlans(ctx context.Context) (Plans, error) {
	p, _, err := c.readPlans(ctx, 0, 0)
	return p, err
}

// WatchPlans returns the plans once they differ from what index saw (a
// Consul blocking query of at most wait), and the index to pass next time.
func (c *Consul) WatchPlans(ctx context.Context, index uint64, wait time.Duration) (Plans, uint64, error) {
	return c.readPlans(ctx, index, wait)
}

func (c *Consul) readPlans(ctx context.Context, index uint64, wait time.Duration) (Plans, uint64, error) {
	q := &api.QueryOptions{RequireConsistent: index == 0, WaitIndex: index, WaitTime: wait}
	// The prefix "plan" lists both plan and plan-next.
	pairs, meta, err := c.client.KV().List(c.PlanKey(), q.WithContext(ctx))
	if err != nil {
		return Plans{}, index, fmt.Errorf("read the shard plans %s: %w", c.PlanKey(), err)
	}
	var out Plans
	found := false
	for _, kv := range pairs {
		var p Plan
		if kv.Key != c.PlanKey() && kv.Key != c.NextPlanKey() {
			continue
		}
		if err := json.Unmarshal(kv.Value, &p); err != nil || p.TotalShards < 1 || p.ShardsPerPool < 1 || p.Generation < 1 {
			return Plans{}, index, fmt.Errorf("the shard plan %s is malformed (%q)", kv.Key, kv.Value)
		}
		if kv.Key == c.PlanKey() {
			out.Current, out.currentIndex, found = p, kv.ModifyIndex, true
		} else {
			out.Next, out.nextIndex = &p, kv.ModifyIndex
		}
	}
	if !found {
		return Plans{}, nextIndex(index, meta.LastIndex), ErrNoPlan
	}
	return out, nextIndex(index, meta.LastIndex), nil
}

// StartReshard writes the next generation's plan: total shards, and
// perPool shards per pool (0: the current plan's). It refuses while another
// resharding is in progress and when nothing would change. by names who
// asked, for operators.
func (c *Consul) StartReshard(ctx context.Context, total, perPool int, by string) (Plan, error) {
	if total < 1 || perPool < 0 {
		return Plan{}, fmt.Errorf("total_shards must be at least 1 and shards_per_pool not negative (got %d, %d)", total, perPool)
	}
	plans, err := c.ReadPlans(ctx)
	if err != nil {
		return Plan{}, err
	}
	if plans.Next != nil {
		return Plan{}, fmt.Errorf("%w: generation %d, total_shards %d", ErrReshardInProgress, plans.Next.Generation, plans.Next.TotalShards)
	}
	if perPool == 0 {
		perPool = plans.Current.ShardsPerPool
	}
	if total == plans.Current.TotalShards && perPool == plans.Current.ShardsPerPool {
		return Plan{}, fmt.Errorf("%w: total_shards %d", ErrSamePlan, total)
	}
	used, err := c.lastUsedGeneration(ctx)
	if err != nil {
		return Plan{}, err
	}
	next := Plan{
		TotalShards: total, ShardsPerPool: perPool, Generation: max(plans.Current.Generation, used) + 1,
		CreatedAt: time.Now().UTC(), CreatedBy: by,
	}
	value, _ := json.Marshal(next)
	// Written only if plan-next is absent and the plan in force unchanged.
	ok, resp, err := c.txn(ctx, api.KVTxnOps{
		{Verb: api.KVCheckIndex, Key: c.PlanKey(), Index: plans.currentIndex},
		{Verb: api.KVCheckNotExists, Key: c.NextPlanKey()},
		{Verb: api.KVSet, Key: c.NextPlanKey(), Value: value},
	})
	if err != nil {
		return Plan{}, fmt.Errorf("store the next shard plan %s: %w", c.NextPlanKey(), err)
	}
	if !ok {
		return Plan{}, fmt.Errorf("%w (%s)", ErrReshardInProgress, txnErrors(resp))
	}
	return next, nil
}

// lastUsedGeneration is the highest generation that has pool locks or
// hand-off records in Consul. A next generation is numbered past it, never
// reusing an aborted one's number: its owners' records (checkpoints of
// sessions with another shard count) would otherwise be resumed.
func (c *Consul) lastUsedGeneration(ctx context.Context) (int, error) {
	last := 0
	for _, dir := range []string{"/pools/", "/handoff/"} {
		prefix := c.cfg.KVPrefix + dir
		keys, _, err := c.client.KV().Keys(prefix, "/", (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return 0, fmt.Errorf("list the generations under %s: %w", prefix, err)
		}
		for _, k := range keys {
			if g, err := strconv.Atoi(strings.Trim(strings.TrimPrefix(k, prefix), "/")); err == nil {
				last = max(last, g)
			}
		}
	}
	return last, nil
}

// AbortReshard deletes the next generation's plan, unless the cut-over
// made it the plan in force already. It returns the aborted plan.
func (c *Consul) AbortReshard(ctx context.Context) (Plan, error) {
	plans, err := c.ReadPlans(ctx)
	if err != nil {
		return Plan{}, err
	}
	if plans.Next == nil {
		return Plan{}, ErrNoReshard
	}
	ok, _, err := c.client.KV().DeleteCAS(&api.KVPair{Key: c.NextPlanKey(), ModifyIndex: plans.nextIndex}, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return Plan{}, fmt.Errorf("delete the next shard plan %s: %w", c.NextPlanKey(), err)
	}
	if !ok {
		return Plan{}, fmt.Errorf("%w: it changed while aborting (cut over?)", ErrNoReshard)
	}
	return *plans.Next, nil
}

// CutOver makes next the plan in force, holding reshard-lock with session
// (a session id) for the while: one transaction checks that the plan in force and
// plan-next are still the ones plans read, writes plan and deletes
// plan-next. ok is false when another instance cut over (or aborted) first.
func (c *Consul) CutOver(ctx context.Context, sessionID string, plans Plans) (ok bool, err error) {
	if plans.Next == nil {
		return false, ErrNoReshard
	}
	release, err := c.reshardLock(ctx, sessionID)
	if err != nil || release == nil {
		return false, err
	}
	defer release()
	value, _ := json.Marshal(*plans.Next)
	ok, _, err = c.txn(ctx, api.KVTxnOps{
		{Verb: api.KVCheckSession, Key: c.reshardLockKey(), Session: sessionID},
		{Verb: api.KVCheckIndex, Key: c.PlanKey(), Index: plans.currentIndex},
		{Verb: api.KVCheckIndex, Key: c.NextPlanKey(), Index: plans.nextIndex},
		{Verb: api.KVSet, Key: c.PlanKey(), Value: value},
		{Verb: api.KVDelete, Key: c.NextPlanKey()},
	})
	if err != nil {
		return false, fmt.Errorf("cut over to generation %d: %w", plans.Next.Generation, err)
	}
	return ok, nil
}

// ScheduleHandover writes at as the next generation's HandoverAt, holding
// <KV_PREFIX>/reshard-lock with session sessionID, unless plan-next changed
// since plans read it. ok is false when another instance did it first.
func (c *Consul) ScheduleHandover(ctx context.Context, sessionID string, plans Plans, at time.Time) (ok bool, err error) {
	if plans.Next == nil {
		return false, ErrNoReshard
	}
	release, err := c.reshardLock(ctx, sessionID)
	if err != nil || release == nil {
		return false, err
	}
	defer release()
	next := *plans.Next
	next.HandoverAt = at.UTC()
	value, _ := json.Marshal(next)
	ok, _, err = c.txn(ctx, api.KVTxnOps{
		{Verb: api.KVCheckSession, Key: c.reshardLockKey(), Session: sessionID},
		{Verb: api.KVCheckIndex, Key: c.NextPlanKey(), Index: plans.nextIndex},
		{Verb: api.KVSet, Key: c.NextPlanKey(), Value: value},
	})
	if err != nil {
		return false, fmt.Errorf("schedule the hand-over to generation %d: %w", next.Generation, err)
	}
	return ok, nil
}

// reshardLock takes <KV_PREFIX>/reshard-lock with session sessionID: a nil
// release without an error means another instance holds it.
func (c *Consul) reshardLock(ctx context.Context, sessionID string) (release func(), err error) {
	lock := &api.KVPair{Key: c.reshardLockKey(), Value: []byte(c.cfg.InstanceID), Session: sessionID}
	held, _, err := c.client.KV().Acquire(lock, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil || !held {
		return nil, err
	}
	return func() { c.client.KV().Release(lock, (&api.WriteOptions{}).WithContext(context.WithoutCancel(ctx))) }, nil
}

// AutoReshard starts a resharding to total shards, as StartReshard, while
// holding <KV_PREFIX>/reshard-lock with session sessionID, so that of the
// instances that all saw the need one acts. started is false when another
// instance holds the lock or a resharding is in progress.
func (c *Consul) AutoReshard(ctx context.Context, sessionID string, total int) (next Plan, started bool, err error) {
	release, err := c.reshardLock(ctx, sessionID)
	if err != nil || release == nil {
		return Plan{}, false, err
	}
	defer release()
	next, err = c.StartReshard(ctx, total, 0, c.cfg.InstanceID+" (RESHARD=auto)")
	if errors.Is(err, ErrReshardInProgress) || errors.Is(err, ErrSamePlan) {
		return Plan{}, false, nil
	}
	return next, err == nil, err
}

// GenerationProgress is how far a generation's pools are claimed and its
// shards READY, as their owners report them in the pool locks.
type GenerationProgress struct {
	Generation   int `json:"generation"`
	TotalShards  int `json:"total_shards"`
	Pools        int `json:"pools"`
	PoolsClaimed int `json:"pools_claimed"`
	ShardsReady  int `json:"shards_ready"`
}

// Complete reports whether every pool is claimed and every shard READY.
func (g GenerationProgress) Complete() bool {
	return g.Pools > 0 && g.PoolsClaimed == g.Pools && g.ShardsReady == g.TotalShards
}

// poolReport is a pool lock's value: who holds it, and the owner's count of
// its READY shards.
type poolReport struct {
	lockValue
	Shards      int       `json:"shards,omitempty"`
	ShardsReady int       `json:"shards_ready"`
	ReportedAt  time.Time `json:"reported_at,omitzero"`
}

// Progress reads plan p's pool locks: which are held, and how many READY
// shards their owners reported.
func (c *Consul) Progress(ctx context.Context, p Plan) (GenerationProgress, error) {
	g := GenerationProgress{Generation: p.Generation, TotalShards: p.TotalShards, Pools: p.Pools()}
	prefix := c.ForGeneration(p.Generation).poolsPrefix()
	pairs, _, err := c.client.KV().List(prefix, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return g, fmt.Errorf("read the pool locks of generation %d: %w", p.Generation, err)
	}
	for _, kv := range pairs {
		id, err := strconv.Atoi(strings.TrimPrefix(kv.Key, prefix))
		if err != nil || id < 0 || id >= g.Pools || kv.Session == "" {
			continue
		}
		g.PoolsClaimed++
		var r poolReport
		if json.Unmarshal(kv.Value, &r) == nil {
			g.ShardsReady += min(r.ShardsReady, p.ShardsPerPool)
		}
	}
	return g, nil
}

// ReportPool writes the count of the pool's READY shards into its lock's
// value, only while session sessionID still holds the lock (a fenced owner writes
// nothing, and never takes the lock back).
func (c *Consul) ReportPool(ctx context.Context, sessionID string, pool, shards, ready int) error {
	key := c.poolKey(pool)
	kv, _, err := c.client.KV().Get(key, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("read pool lock %s: %w", key, err)
	}
	if kv == nil || kv.Session != sessionID {
		return ErrLockLost
	}
	var r poolReport
	_ = json.Unmarshal(kv.Value, &r) // a value from an older version: counts only
	r.Shards, r.ShardsReady, r.ReportedAt = shards, ready, time.Now().UTC()
	value, _ := json.Marshal(r)
	ok, _, err := c.txn(ctx, api.KVTxnOps{
		{Verb: api.KVCheckSession, Key: key, Session: sessionID},
		{Verb: api.KVLock, Key: key, Value: value, Session: sessionID},
	})
	if err != nil {
		return fmt.Errorf("report pool %d: %w", pool, err)
	}
	if !ok {
		return ErrLockLost
	}
	return nil
}

// PlanCoordinator is the Registry and Coordinator of a member that runs
// one generation's plan, which may be the next one: its plan check accepts
// the plan while it is in force or next. Once the plan is neither (the
// resharding was aborted, or a later cut-over retired it), the member's
// check sees the plan in force and ends with a *PlanMismatchError.
type PlanCoordinator struct {
	*Consul
	plan Plan
}

// ForPlan returns the PlanCoordinator of plan: its pools, hand-off records
// and plan check.
func (c *Consul) ForPlan(plan Plan) *PlanCoordinator {
	return &PlanCoordinator{Consul: c.ForGeneration(plan.Generation), plan: plan}
}

// AgreePlan implements Coordinator.
func (g *PlanCoordinator) AgreePlan(ctx context.Context, want Plan) (Plan, error) {
	plans, err := g.ReadPlans(ctx)
	if errors.Is(err, ErrNoPlan) {
		return g.Consul.AgreePlan(ctx, want) // Consul lost its state: store it again
	}
	if err != nil {
		return Plan{}, err
	}
	if plans.Next != nil && plans.Next.Same(g.plan) {
		return *plans.Next, nil
	}
	return plans.Current, nil
}

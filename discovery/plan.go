package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/hashicorp/consul/api"
)

// Plan is the fleet's shard plan: how many shards the bot has and how they
// form pools. One plan is stored per fleet, at <KVPrefix>/plan, by the first
// instance; every other instance adopts it, so that pool p means the same
// shards on every instance. Changing it is resharding, never an accident.
type Plan struct {
	TotalShards   int `json:"total_shards"`
	ShardsPerPool int `json:"shards_per_pool"`
	// Generation is part of every pool lock and hand-off key, so that
	// locks taken under one plan never guard the shards of another.
	Generation int       `json:"generation"`
	CreatedAt  time.Time `json:"created_at"`
	CreatedBy  string    `json:"created_by,omitempty"` // instance id, for operators
	// HandoverAt is set on a next generation once all of it is READY: the
	// instant, a little ahead, from which the two generations hand each
	// guild's dispatches without a content key over (event.Handover).
	HandoverAt time.Time `json:"handover_at,omitzero"`
}

// FirstGeneration is the generation of a fleet's first plan.
const FirstGeneration = 1

// Pools returns the number of pools: ceil(total shards / shards per pool).
func (p Plan) Pools() int {
	if p.ShardsPerPool < 1 {
		return 0
	}
	return (p.TotalShards + p.ShardsPerPool - 1) / p.ShardsPerPool
}

// Same reports whether p and o assign the same shards to the same pool keys.
func (p Plan) Same(o Plan) bool {
	return p.TotalShards == o.TotalShards && p.ShardsPerPool == o.ShardsPerPool && p.Generation == o.Generation
}

func (p Plan) String() string {
	return fmt.Sprintf("total_shards=%d shards_per_pool=%d generation=%d", p.TotalShards, p.ShardsPerPool, p.Generation)
}

// PlanKey is where the fleet's plan is stored.
func (c *Consul) PlanKey() string { return c.cfg.KVPrefix + "/plan" }

// AgreePlan returns the fleet's plan: the one stored at PlanKey, or want,
// stored there if there is none yet. The write is a check-and-set on the
// key's absence, so of two instances starting together exactly one writes
// and the other adopts what it wrote. want's Generation 0 means
// FirstGeneration. One attempt: the caller retries errors.
func (c *Consul) AgreePlan(ctx context.Context, want Plan) (Plan, error) {
	if want.Generation == 0 {
		want.Generation = FirstGeneration
	}
	if want.CreatedAt.IsZero() {
		want.CreatedAt = time.Now().UTC()
	}
	if want.CreatedBy == "" {
		want.CreatedBy = c.cfg.InstanceID
	}
	for {
		pair, _, err := c.client.KV().Get(c.PlanKey(), (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
		if err != nil {
			return Plan{}, fmt.Errorf("read the shard plan %s: %w", c.PlanKey(), err)
		}
		if pair != nil {
			var stored Plan
			if err := json.Unmarshal(pair.Value, &stored); err != nil || stored.TotalShards < 1 || stored.ShardsPerPool < 1 || stored.Generation < 1 {
				return Plan{}, fmt.Errorf("the shard plan %s is malformed (%q): fix or delete it with the whole fleet stopped", c.PlanKey(), pair.Value)
			}
			return stored, nil
		}
		value, _ := json.Marshal(want)
		// ModifyIndex 0: written only if the key does not exist.
		ok, _, err := c.client.KV().CAS(&api.KVPair{Key: c.PlanKey(), Value: value}, (&api.WriteOptions{}).WithContext(ctx))
		if err != nil {
			return Plan{}, fmt.Errorf("store the shard plan %s: %w", c.PlanKey(), err)
		}
		if ok {
			return want, nil
		}
		// Another instance stored one first: read it.
	}
}

// PlanMismatch is one setting of this instance that differs from the
// fleet's plan.
type PlanMismatch struct {
	Variable   string // TOTAL_SHARDS, SHARDS_PER_POOL or plan generation
	Configured int
	Planned    int
}

// PlanMismatchError says that this instance's settings differ from the
// fleet's stored plan: it must not connect any shard, or a shard could run
// twice (pool p would be different shards here and elsewhere).
type PlanMismatchError struct {
	Key        string // where the plan is stored
	Mismatches []PlanMismatch
}

func (e *PlanMismatchError) Error() string {
	msg := ""
	for _, m := range e.Mismatches {
		msg += fmt.Sprintf("%s=%d differs from the fleet's shard plan (%s: %d); ", m.Variable, m.Configured, e.Key, m.Planned)
	}
	return msg + "this instance connects no shard, so that none runs twice. Changing the plan is resharding: stop every instance of the fleet, then delete " + e.Key
}

// Log logs one error line per mismatching setting, naming it and both
// values.
func (e *PlanMismatchError) Log(logger log.Logger) {
	for _, m := range e.Mismatches {
		level.Error(logger).Log("msg", "shard plan mismatch: this instance connects no shard, so that none runs twice",
			"variable", m.Variable, "configured", m.Configured, "plan", m.Planned, "plan_key", e.Key)
	}
}

// CheckPlan compares this instance's settings with the fleet's stored plan
// and returns a *PlanMismatchError naming each one that differs.
// totalShards 0 is TOTAL_SHARDS=auto, which adopts the plan's; generation 0
// accepts any.
func CheckPlan(key string, stored Plan, totalShards, shardsPerPool, generation int) error {
	e := &PlanMismatchError{Key: key}
	if totalShards != 0 && totalShards != stored.TotalShards {
		e.Mismatches = append(e.Mismatches, PlanMismatch{"TOTAL_SHARDS", totalShards, stored.TotalShards})
	}
	if shardsPerPool != stored.ShardsPerPool {
		e.Mismatches = append(e.Mismatches, PlanMismatch{"SHARDS_PER_POOL", shardsPerPool, stored.ShardsPerPool})
	}
	if generation != 0 && generation != stored.Generation {
		e.Mismatches = append(e.Mismatches, PlanMismatch{"plan generation", generation, stored.Generation})
	}
	if len(e.Mismatches) == 0 {
		return nil
	}
	return e
}

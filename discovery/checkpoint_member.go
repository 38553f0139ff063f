package discovery

import (
	"context"

	"github.com/shardpool/gateway/service"
)

// CheckpointStore saves a pool's resume records while s holds the pool's
// lock (Consul.SaveCheckpoints). A Coordinator that is one gets them.
type CheckpointStore interface {
	SaveCheckpoints(ctx context.Context, s Session, pool int, records []service.ShardHandoff) error
}

var _ CheckpointStore = (*Consul)(nil)

// startCheckpoints saves the running pool's resume records under s from
// now on, when the coordinator stores them and the interval is set.
func (m *Member) startCheckpoints(s Session, poolID int, pool *service.Pool) {
	store, ok := m.cfg.Coordinator.(CheckpointStore)
	if !ok || m.cfg.CheckpointInterval <= 0 {
		return
	}
	cp := StartCheckpoints(CheckpointConfig{
		PoolID: poolID, Interval: m.cfg.CheckpointInterval, KeepAlive: m.cfg.HandoffMaxAge / 2,
		Timeout: m.cfg.ConsulTimeout, Metrics: m.cfg.CheckpointMetrics, Logger: m.logger,
		Save: func(ctx context.Context, records []service.ShardHandoff) error {
			return store.SaveCheckpoints(ctx, s, poolID, records)
		},
	}, resumeSources(pool))
	m.mu.Lock()
	m.checkpoints = cp
	m.mu.Unlock()
}

// stopCheckpoints stops them (idempotent): before a fence gives the pool
// up, before a drain writes the final records.
func (m *Member) stopCheckpoints() {
	m.mu.Lock()
	cp := m.checkpoints
	m.checkpoints = nil
	m.mu.Unlock()
	cp.Stop()
}

// resumeSources are pool's shards.
func resumeSources(pool *service.Pool) []ResumeSource {
	var out []ResumeSource
	for _, s := range pool.Shards() {
		out = append(out, s)
	}
	return out
}

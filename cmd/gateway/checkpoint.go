package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-kit/log/level"

	"github.com/shardpool/gateway/discovery"
	"github.com/shardpool/gateway/service"
	jspub "github.com/shardpool/gateway/service/publish/jetstream"
	"github.com/shardpool/gateway/service/shard"
)

// Crash-safe resume: every CHECKPOINT_INTERVAL each running shard's resume
// record is saved where the next instance to run it finds it: in Consul,
// under the pool lock (discovery/checkpoint*.go, wired in openFleet), or
// without Consul in SESSION_STATE_FILE, read again at startup. A successor
// (or the same instance restarted) then RESUMEs after a SIGKILL, an OOM
// kill or a fence instead of identifying, and Discord replays what the
// dead instance had read but not got acked.

// checkpoints is what the static pool's checkpoints need (without Consul).
type checkpoints struct {
	metrics *discovery.CheckpointMetrics // one per process
	file    *discovery.StateFile         // SESSION_STATE_FILE; nil when unset
	running *discovery.Checkpointer
}

// setCheckpointInterval parses CHECKPOINT_INTERVAL: 0s (off) or 1s to 5m.
func setCheckpointInterval(c *Config, v string) error {
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil || d < 0 || (d > 0 && d < time.Second) || d > 5*time.Minute {
		return fmt.Errorf("%q must be 0s (off) or a duration between 1s and 5m", v)
	}
	c.CheckpointInterval = d
	return nil
}

// setStateFile parses SESSION_STATE_FILE: its directory must exist and
// take files now, not at the first checkpoint.
func setStateFile(c *Config, v string) error {
	c.SessionStateFile = ""
	if v == "" {
		return nil
	}
	if err := discovery.CheckStateFileDir(v); err != nil {
		return fmt.Errorf("%q: %w", v, err)
	}
	c.SessionStateFile = v
	return nil
}

// checkpointSettings checks the checkpoint variables against the others.
func checkpointSettings(c Config) error {
	if c.SessionStateFile != "" && c.ConsulHTTPAddr != "" {
		return errors.New("invalid SESSION_STATE_FILE: not used with CONSUL_HTTP_ADDR (the checkpoints are kept in Consul, where any successor finds them); unset one of the two")
	}
	return nil
}

// checkpointMetrics registers the checkpoint metrics once.
func (m *Main) checkpointMetrics() *discovery.CheckpointMetrics {
	if m.checkpoints.metrics == nil {
		m.checkpoints.metrics = discovery.NewCheckpointMetrics(m.reg)
	}
	return m.checkpoints.metrics
}

// withCheckpoints turns on the fleet's checkpoints in Consul, and warns
// when a take-over could come too late for JetStream to drop what it
// replays.
func (m *Main) withCheckpoints(mc discovery.MemberConfig) discovery.MemberConfig {
	cfg := m.Config
	mc.CheckpointInterval, mc.CheckpointMetrics = cfg.CheckpointInterval, m.checkpointMetrics()
	// A successor RESUMEs at most 2 TTLs plus the lock-delay after the
	// owner's last checkpoint (Consul expires a session between one and
	// two TTLs after its last renewal), and Discord replays everything
	// acked since that checkpoint.
	if replay := cfg.CheckpointInterval + 2*cfg.SessionTTL + cfg.LockDelay; cfg.CheckpointInterval > 0 && replay > jspub.DuplicateWindow {
		level.Warn(m.logger).Log("msg", "after a crash the successor may RESUME later than the streams' duplicate window: events acked since the last checkpoint could be stored twice; shorten CHECKPOINT_INTERVAL, CONSUL_SESSION_TTL or CONSUL_LOCK_DELAY",
			"replay_from", replay, "duplicate_window", jspub.DuplicateWindow)
	}
	return mc
}

// stateFileRecords opens SESSION_STATE_FILE, when set, and returns the
// records of the static pool's shards to RESUME.
func (m *Main) stateFileRecords() map[int]*shard.Handoff {
	cfg := m.Config
	m.checkpointMetrics() // exported without a file too, at 0: one set of metrics in every mode
	if cfg.SessionStateFile == "" {
		return nil
	}
	m.checkpoints.file = discovery.NewStateFile(cfg.SessionStateFile, m.plan.total, m.logger)
	first, count := m.plan.shards(cfg.PoolID, cfg.ShardsPerPool)
	return m.checkpoints.file.Load(first, first+count-1, cfg.HandoffMaxAge)
}

// startStateCheckpoints saves the static pool's records in
// SESSION_STATE_FILE on the checkpoint schedule.
func (m *Main) startStateCheckpoints(pool *service.Pool) {
	if m.checkpoints.file == nil {
		return
	}
	var shards []discovery.ResumeSource
	for _, s := range pool.Shards() {
		shards = append(shards, s)
	}
	m.checkpoints.running = discovery.StartCheckpoints(discovery.CheckpointConfig{
		PoolID: m.Config.PoolID, Interval: m.Config.CheckpointInterval, KeepAlive: m.Config.HandoffMaxAge / 2,
		Save: m.checkpoints.file.Save, Metrics: m.checkpointMetrics(), Logger: m.logger,
	}, shards)
}

// stopStateCheckpoints stops them (idempotent): before the drain, whose
// records are the last.
func (m *Main) stopStateCheckpoints() {
	m.checkpoints.running.Stop()
	m.checkpoints.running = nil
}

// saveFinalState writes the drain's records to SESSION_STATE_FILE, so that
// the next start RESUMEs after a clean stop too. A failed drain leaves the
// last checkpoints.
func (m *Main) saveFinalState(res service.DrainResult, drainErr error) {
	if m.checkpoints.file == nil || drainErr != nil || len(res.Shards) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.checkpoints.file.Save(ctx, res.Shards); err != nil {
		level.Error(m.logger).Log("msg", "cannot write the drained sessions to SESSION_STATE_FILE; the next start resumes from the last checkpoint", "err", err)
		return
	}
	level.Info(m.logger).Log("msg", "drained sessions written to SESSION_STATE_FILE for the next start", "path", m.Config.SessionStateFile)
}

package discovery

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardpool/gateway/service"
	"github.com/shardpool/gateway/service/shard"
)

// Checkpoints: while an instance runs a pool, each shard's resume record
// (the one a drain hands over: session, resume URL, last contiguous acked
// seq) is saved on a schedule, so that after a crash (SIGKILL, OOM, a
// fence) the successor, or the same instance restarted, RESUMEs the
// sessions instead of identifying new ones. Discord replays from the saved
// seq; what was stored already is dropped by JetStream (the event id is
// derived from shard, session and seq), what was read but not acked is
// stored now.
//
// One Checkpointer per running pool. Every Interval it reads the shards'
// records and saves, in one batch, those that changed since the last save:
// another session, another resume URL, another acked seq, or a record
// older than KeepAlive (a quiet shard's record must not age out of
// HANDOFF_MAX_AGE while its session lives). A shard that lost its session
// has its record deleted. So a pool writes at most once per Interval, at
// most one record per shard; besides, a session that is new (an IDENTIFY)
// or gone is saved within a tenth of the interval, so a crash right after
// an IDENTIFY does not cost another one. Those writes are bounded by the
// IDENTIFYs, 1 per 5 s per bucket.

// CheckpointSaver saves a batch of records; a nil Handoff deletes that
// shard's record. It returns an error wrapping ErrLockLost when the instance
// no longer owns the pool: nothing was written, and nothing will be.
type CheckpointSaver func(ctx context.Context, records []service.ShardHandoff) error

// CheckpointConfig configures a Checkpointer.
type CheckpointConfig struct {
	PoolID int
	// Interval between two saves; 0 disables checkpoints.
	Interval time.Duration
	// KeepAlive rewrites a record that did not change when it is that
	// old (0: never).
	KeepAlive time.Duration
	// Timeout bounds one save.
	Timeout time.Duration
	Save    CheckpointSaver
	Metrics *CheckpointMetrics
	Logger  log.Logger
}

// ResumeSource is a shard as checkpoints see it (*shard.Shard).
type ResumeSource interface {
	ID() int
	// Handoff returns the record to RESUME the shard's session, nil when
	// it has none.
	Handoff() *shard.Handoff
}

// Checkpointer saves a running pool's resume records on a schedule.
type Checkpointer struct {
	cfg    CheckpointConfig
	shards []ResumeSource
	saved  map[int]*shard.Handoff // what the store holds, as far as we know
	halt   context.CancelFunc
	done   chan struct{}
}

// StartCheckpoints starts saving the records of shards (a pool that has
// started) at once and then every cfg.Interval, until Stop. It returns nil
// when cfg.Interval is 0; Stop on nil does nothing.
func StartCheckpoints(cfg CheckpointConfig, shards []ResumeSource) *Checkpointer {
	if cfg.Interval <= 0 || cfg.Save == nil {
		return nil
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = cfg.Interval
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewCheckpointMetrics(nil)
	}
	if cfg.Logger == nil {
		cfg.Logger = log.NewNopLogger()
	}
	ctx, halt := context.WithCancel(context.Background())
	c := &Checkpointer{cfg: cfg, shards: shards, saved: map[int]*shard.Handoff{}, halt: halt, done: make(chan struct{})}
	go c.run(ctx)
	return c
}

// Stop stops the schedule and waits for a save under way; no save starts
// after it returns, so the final records a drain writes next are the last.
func (c *Checkpointer) Stop() {
	if c == nil {
		return
	}
	c.halt()
	<-c.done
	for _, s := range c.shards {
		c.cfg.Metrics.forget(s.ID())
	}
}

func (c *Checkpointer) run(ctx context.Context) {
	defer close(c.done)
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	poll := time.NewTicker(pollInterval(c.cfg.Interval))
	defer poll.Stop()
	failing, all := false, true
	for {
		err := c.save(ctx, all)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, ErrLockLost):
			// Fenced, or about to be: the successor owns the records now.
			level.Warn(c.cfg.Logger).Log("msg", "checkpoint refused: this instance no longer holds the pool lock; no more checkpoints", "pool_id", c.cfg.PoolID, "err", err)
			return
		case err != nil && !failing:
			level.Warn(c.cfg.Logger).Log("msg", "cannot save the shards' resume records; retrying every interval", "pool_id", c.cfg.PoolID, "err", err, "interval", c.cfg.Interval)
		case err == nil && failing:
			level.Info(c.cfg.Logger).Log("msg", "resume records saved again", "pool_id", c.cfg.PoolID)
		}
		failing = err != nil
		for next := false; !next; {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				all, next = true, true
			case <-poll.C:
				// A failing store is tried once per interval only.
				all, next = false, !failing
			}
		}
	}
}

// pollInterval is how often a new or lost session is looked for between
// two scheduled saves.
func pollInterval(interval time.Duration) time.Duration {
	return max(interval/10, 100*time.Millisecond)
}

// save writes in one batch the records that changed (all), or only those
// whose session is new or gone: a shard that just identified is not left
// without a record for a whole interval, when a crash would cost a second
// IDENTIFY.
func (c *Checkpointer) save(ctx context.Context, all bool) error {
	now := time.Now()
	var batch []service.ShardHandoff
	var current []int // shards whose saved record matches their session
	for _, s := range c.shards {
		h, id := s.Handoff(), s.ID()
		switch {
		case all && changed(c.saved[id], h, now, c.cfg.KeepAlive), !all && newSession(c.saved[id], h):
			batch = append(batch, service.ShardHandoff{ShardID: id, Handoff: h})
		case all && h != nil:
			current = append(current, id)
		}
	}
	c.cfg.Metrics.markCurrent(now, current...)
	if len(batch) == 0 {
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	err := c.cfg.Save(sctx, batch)
	cancel()
	if err != nil && ctx.Err() != nil {
		return ctx.Err() // stopped: not a failure of the store
	}
	c.cfg.Metrics.wrote(err, len(batch))
	if err != nil {
		return err
	}
	var written []int
	for _, r := range batch {
		if r.Handoff == nil {
			delete(c.saved, r.ShardID)
			c.cfg.Metrics.forget(r.ShardID)
			continue
		}
		c.saved[r.ShardID] = r.Handoff
		written = append(written, r.ShardID)
	}
	c.cfg.Metrics.markCurrent(now, written...)
	return nil
}

// newSession reports whether the shard's session is not the one saved.
func newSession(saved, now *shard.Handoff) bool {
	switch {
	case now == nil || saved == nil:
		return (now == nil) != (saved == nil)
	default:
		return now.SessionID != saved.SessionID
	}
}

// changed reports whether the record now must be saved over the one saved.
func changed(saved, now *shard.Handoff, at time.Time, keepAlive time.Duration) bool {
	switch {
	case now == nil:
		return saved != nil
	case saved == nil:
		return true
	case now.SessionID != saved.SessionID || now.ResumeGatewayURL != saved.ResumeGatewayURL || now.Seq != saved.Seq:
		return true
	default:
		return keepAlive > 0 && at.Sub(saved.Time) >= keepAlive
	}
}

// CheckpointMetrics are the checkpoint metrics.
type CheckpointMetrics struct {
	Writes  *prometheus.CounterVec // result: ok, refused, failed
	Records prometheus.Counter
	age     *prometheus.Desc

	mu        sync.Mutex
	currentAt map[int]time.Time // shard → when its saved record last matched its session
}

// NewCheckpointMetrics creates the checkpoint metrics and registers them
// with reg (nil: not registered).
func NewCheckpointMetrics(reg prometheus.Registerer) *CheckpointMetrics {
	m := &CheckpointMetrics{
		Writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_session_checkpoint_writes_total",
			Help: "Checkpoint writes (one Consul transaction, or one SESSION_STATE_FILE write, with a pool's changed resume records), by result: ok, refused (the pool lock is no longer this instance's), failed.",
		}, []string{"result"}),
		Records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_session_checkpoint_records_written_total",
			Help: "Shard resume records written (or deleted) by checkpoint writes that succeeded.",
		}),
		age: prometheus.NewDesc("gateway_session_checkpoint_age_seconds",
			"Seconds since the shard's saved resume record last matched its session (written, or found unchanged): a crash now replays from that far back.",
			[]string{"shard_id"}, nil),
		currentAt: map[int]time.Time{},
	}
	for _, r := range []string{"ok", "refused", "failed"} {
		m.Writes.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.Writes, m.Records, m)
	}
	return m
}

// Describe implements prometheus.Collector (the age gauge).
func (m *CheckpointMetrics) Describe(ch chan<- *prometheus.Desc) { ch <- m.age }

// Collect implements prometheus.Collector: the age, computed when scraped.
func (m *CheckpointMetrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	for id, at := range m.currentAt {
		ch <- prometheus.MustNewConstMetric(m.age, prometheus.GaugeValue, now.Sub(at).Seconds(), strconv.Itoa(id))
	}
}

func (m *CheckpointMetrics) markCurrent(at time.Time, shards ...int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range shards {
		m.currentAt[id] = at
	}
}

func (m *CheckpointMetrics) forget(shard int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.currentAt, shard)
}

func (m *CheckpointMetrics) wrote(err error, records int) {
	switch {
	case err == nil:
		m.Writes.WithLabelValues("ok").Inc()
		m.Records.Add(float64(records))
	case errors.Is(err, ErrLockLost):
		m.Writes.WithLabelValues("refused").Inc()
	default:
		m.Writes.WithLabelValues("failed").Inc()
	}
}

package service

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/shardpool/gateway/service/publish"
	"github.com/shardpool/gateway/service/shard"
)

// PublishPath is what the pool needs from the head of the publish path
// besides publishing: draining it and describing it.
type PublishPath interface {
	publish.Publisher
	Flush(ctx context.Context) error
	Len() (events int, bytes int64)
}

// Broker reports the message broker's state; nil in local mode.
type Broker interface {
	// Connected reports whether the connection is up.
	Connected() bool
	// JetStream reports whether the server the connection is up to has
	// JetStream: JetStreamEnabled, JetStreamNotEnabled, or
	// JetStreamUnknown until it has answered.
	JetStream() string
	// LastError returns the last error of the connection or of JetStream on
	// it, free of secrets, and when it happened; "" if there was none.
	LastError() (string, time.Time)
}

// What Broker.JetStream reports.
const (
	JetStreamEnabled    = "enabled"
	JetStreamNotEnabled = "not enabled"
	JetStreamUnknown    = "unknown"
)

// BreakerState names the circuit breaker's state for /status.
type BreakerState interface {
	String() string
}

// PoolConfig configures a Pool.
type PoolConfig struct {
	PoolID      int
	FirstShard  int // first shard id of the pool
	Count       int // shards in the pool
	TotalShards int

	// NewShard builds shard id; the wiring fills in the connection details.
	NewShard func(id int) *shard.Shard

	Publish PublishPath
	Broker  Broker              // nil: local mode
	Breaker func() BreakerState // nil when there is no breaker
	Logger  log.Logger
	// DrainTimeout bounds a drain, whoever asked for it.
	DrainTimeout time.Duration
}

// Pool is the shard pool: the shards of one pool id, run together, drained
// together. It implements Service.
type Pool struct {
	cfg    PoolConfig
	shards []*shard.Shard
	logger log.Logger

	state    atomic.Value // string
	draining atomic.Bool
	cancel   context.CancelFunc
	stopped  chan struct{} // closed when every shard goroutine returned
	started  chan struct{}

	drainOnce sync.Once
	drainDone chan struct{}
	drainRes  DrainResult
	drainErr  error
}

// NewPool builds the pool's shards; Run starts them.
func NewPool(cfg PoolConfig) *Pool {
	p := &Pool{
		cfg:       cfg,
		logger:    cfg.Logger,
		stopped:   make(chan struct{}),
		started:   make(chan struct{}),
		drainDone: make(chan struct{}),
	}
	for id := cfg.FirstShard; id < cfg.FirstShard+cfg.Count; id++ {
		p.shards = append(p.shards, cfg.NewShard(id))
	}
	if p.cfg.DrainTimeout <= 0 {
		p.cfg.DrainTimeout = 20 * time.Second
	}
	p.state.Store(PoolStarting)
	return p
}

// Started is closed once Run has started the shards; Drain needs it.
func (p *Pool) Started() <-chan struct{} { return p.started }

// Shards returns the pool's shards in id order.
func (p *Pool) Shards() []*shard.Shard { return p.shards }

// Run runs every shard until ctx ends or Drain is called, and returns when
// ctx ends: after a drain the pool keeps answering /status (with the
// hand-off records) until the process stops. A shard that stops on a fatal
// close code does not stop the others.
func (p *Pool) Run(ctx context.Context) error {
	shardCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.cancel = cancel
	p.state.Store(PoolRunning)
	close(p.started)
	var wg sync.WaitGroup
	errs := make([]error, len(p.shards))
	for i, s := range p.shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Run(shardCtx)
		}()
	}
	wg.Wait()
	close(p.stopped)
	if !p.draining.Load() && ctx.Err() == nil {
		// Every shard hit a fatal close code. Keep serving /status and a
		// failing /ready rather than exiting: a restart loop would keep
		// identifying with a token Discord has rejected.
		level.Error(p.logger).Log("msg", "every shard of the pool stopped; not ready", "err", errors.Join(errs...))
	}
	<-ctx.Done()
	if p.draining.Load() {
		<-p.drainDone
	}
	return nil
}

// Readiness implements Service: ready when not draining, at least one shard
// is READY and the broker is connected to a server with JetStream (or there
// is none: local mode). Connected alone is not enough: a server without
// JetStream takes every publish and stores none.
func (p *Pool) Readiness(context.Context) Readiness {
	r := Readiness{PoolID: p.cfg.PoolID, ShardsTotal: len(p.shards)}
	r.ReportBroker(p.cfg.Broker)
	for _, s := range p.shards {
		if s.Ready() {
			r.ShardsReady++
		}
		r.GuildsTotal += s.Guilds()
	}
	r.Ready = !p.draining.Load() && r.ShardsReady > 0 && r.brokerUsable(p.cfg.Broker)
	return r
}

// ShardsReady returns the number of READY shards.
func (p *Pool) ShardsReady() int {
	n := 0
	for _, s := range p.shards {
		if s.Ready() {
			n++
		}
	}
	return n
}

// Status implements Service.
func (p *Pool) Status(ctx context.Context) (Status, error) {
	r := p.Readiness(ctx)
	st := Status{
		PoolID:      p.cfg.PoolID,
		State:       p.state.Load().(string),
		Ready:       r.Ready,
		FirstShard:  p.cfg.FirstShard,
		LastShard:   p.cfg.FirstShard + p.cfg.Count - 1,
		TotalShards: p.cfg.TotalShards,
	}
	st.ReportBroker(p.cfg.Broker)
	st.Publish.BufferEvents, st.Publish.BufferBytes = p.cfg.Publish.Len()
	if p.cfg.Breaker != nil {
		st.Publish.Breaker = p.cfg.Breaker().String()
	}
	// Once drained, each shard shows the hand-off record the drain returned.
	handoffs := map[int]*shard.Handoff{}
	if st.State == PoolDrained {
		for _, h := range p.drainRes.Shards {
			handoffs[h.ShardID] = h.Handoff
		}
	}
	for _, s := range p.shards {
		st.Shards = append(st.Shards, ShardStatus{Status: s.Status(), Handoff: handoffs[s.ID()]})
	}
	return st, nil
}

// Drain implements Service. The first call does the work; later calls wait
// for it and return the same result.
func (p *Pool) Drain(ctx context.Context) (DrainResult, error) {
	select {
	case <-p.started:
	default:
		return DrainResult{}, ErrNotRunning
	}
	p.drainOnce.Do(func() {
		// Readiness turns false before anything else happens.
		p.draining.Store(true)
		p.state.Store(PoolDraining)
		// The drain outlives the request that asked for it (a client hanging
		// up must not abort a hand-off), bounded by DrainTimeout.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.DrainTimeout)
		go func() {
			defer close(p.drainDone)
			defer cancel()
			p.drainRes, p.drainErr = p.drain(dctx)
			p.state.Store(PoolDrained)
		}()
	})
	select {
	case <-p.drainDone:
		return p.drainRes, p.drainErr
	case <-ctx.Done():
		return DrainResult{}, ctx.Err()
	}
}

func (p *Pool) drain(ctx context.Context) (DrainResult, error) {
	level.Info(p.logger).Log("msg", "draining pool", "pool_id", p.cfg.PoolID)
	// Stop reading from Discord: each shard closes with a resumable code.
	p.cancel()
	select {
	case <-p.stopped:
	case <-ctx.Done():
		return DrainResult{}, fmt.Errorf("shards did not stop: %w", ctx.Err())
	}
	// Everything accepted must be acked before the hand-off seqs are read.
	res := DrainResult{PoolID: p.cfg.PoolID, Flushed: true}
	if err := p.cfg.Publish.Flush(ctx); err != nil {
		res.Flushed = false
		level.Error(p.logger).Log("msg", "drain deadline hit before every event was acked; hand-off seqs stop before them", "err", err)
	}
	for _, s := range p.shards {
		res.Shards = append(res.Shards, ShardHandoff{ShardID: s.ID(), Handoff: s.Handoff()})
	}
	level.Info(p.logger).Log("msg", "pool drained", "pool_id", p.cfg.PoolID, "flushed", res.Flushed)
	return res, nil
}

package discovery

import (
	"context"
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/shardpool/gateway/service"
	"github.com/shardpool/gateway/service/shard"
)

// MemberConfig configures a Member.
type MemberConfig struct {
	InstanceID string
	// FixedPool >= 0 runs only that pool (POOL_ID set explicitly): the
	// instance takes its lock, or waits as its standby while another
	// instance holds it. -1 claims any free pool, or waits as a spare.
	FixedPool int
	// Plan is the fleet's shard plan this instance runs (agreed at
	// startup). Each new session checks it again: should the stored plan
	// differ (Consul lost its state and another instance stored a new
	// one), Run ends with a *PlanMismatchError before claiming anything.
	Plan Plan
	// NewPool builds pool id's shard pool; resume holds the hand-off
	// records to RESUME, by shard id.
	NewPool func(id int, resume map[int]*shard.Handoff) *service.Pool

	Registry    Registry
	Coordinator Coordinator
	// HandoffMaxAge: an older hand-off record is not resumed (Discord has
	// forgotten the session by then); its shard identifies.
	HandoffMaxAge time.Duration
	// ConsulTimeout bounds each step of a drain that talks to the discovery
	// service (hand-off, release, deregistration).
	ConsulTimeout time.Duration
	// CheckpointInterval > 0 saves each running shard's resume record to
	// the hand-off keys that often, under the pool lock, when the
	// Coordinator is a CheckpointStore (checkpoint.go): a successor then
	// RESUMEs after a crash too.
	CheckpointInterval time.Duration
	CheckpointMetrics  *CheckpointMetrics

	// For the status of an instance without a pool.
	Publish service.PublishPath
	Broker  service.Broker
	Breaker func() service.BreakerState

	Metrics *Metrics
	Logger  log.Logger
}

// Member is this instance's membership of the fleet: it registers the
// instance, keeps a session, claims a pool (any free one, or the fixed one),
// runs it, fences it when the session is lost and hands it over on drain. It
// implements service.Service by answering for the pool it runs, or for
// itself when it has none.
type Member struct {
	cfg    MemberConfig
	logger log.Logger

	mu         sync.Mutex
	role       string
	pool       *service.Pool
	poolID     int
	session    Session
	sessionNew chan struct{} // closed when session changes
	resumed    []int
	lastFence  *service.Fence

	checkpoints *Checkpointer // while it runs a pool

	draining  atomic.Bool
	started   chan struct{}
	drainReq  chan struct{}
	drainOnce sync.Once
	drainDone chan struct{}
	drainRes  service.DrainResult
	drainErr  error
	abandon   chan struct{}
	abandon1  sync.Once
}

var (
	_ service.Service = (*Member)(nil)
	_ SessionSource   = (*Member)(nil)
)

// NewMember returns a Member; Run starts it.
func NewMember(cfg MemberConfig) *Member {
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.Logger == nil {
		cfg.Logger = log.NewNopLogger()
	}
	if cfg.ConsulTimeout <= 0 {
		cfg.ConsulTimeout = 3 * time.Second
	}
	m := &Member{
		cfg:        cfg,
		logger:     cfg.Logger,
		poolID:     -1,
		sessionNew: make(chan struct{}),
		started:    make(chan struct{}),
		drainReq:   make(chan struct{}),
		drainDone:  make(chan struct{}),
		abandon:    make(chan struct{}),
	}
	m.setRole(RoleStarting)
	return m
}

// Pool returns the pool the instance runs (or ran, once drained), or nil.
func (m *Member) Pool() *service.Pool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.role == RoleOwner || m.role == RoleStatic || m.role == RoleDrained {
		return m.pool
	}
	return nil
}

// Role returns the instance's role.
func (m *Member) Role() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.role
}

func (m *Member) setRole(role string) {
	m.mu.Lock()
	m.role = role
	m.mu.Unlock()
	m.cfg.Metrics.setRole(role)
}

func (m *Member) setSession(s Session) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.session = s
	close(m.sessionNew)
	m.sessionNew = make(chan struct{})
}

// SessionID implements SessionSource.
func (m *Member) SessionID(ctx context.Context) (string, error) {
	for {
		m.mu.Lock()
		s, changed := m.session, m.sessionNew
		m.mu.Unlock()
		if s != nil {
			select {
			case <-s.Lost():
			default:
				return s.ID(), nil
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
}

// Abandon stops the member as a crash would: shards stopped without a drain,
// the session left to expire, the instance left registered. For tests.
func (m *Member) Abandon() { m.abandon1.Do(func() { close(m.abandon) }) }

// errStop ends the member's loop: drain, abandon or shutdown.
var errStop = errors.New("member stopping")

// Run runs the member until ctx ends. A drain (Drain, or ctx ending) hands
// the pool over and deregisters; after it the member keeps answering
// /status until ctx ends. It returns a *PlanMismatchError at once when the
// fleet's stored plan is not the one this instance runs.
func (m *Member) Run(ctx context.Context) error {
	close(m.started)
	err := m.run(ctx)
	if !errors.Is(err, errStop) {
		return err
	}
	select {
	case <-m.abandon:
		return nil
	default:
	}
	// Shutting down without a Drain call drains all the same.
	m.drainOnce.Do(func() { m.draining.Store(true); close(m.drainReq) })
	m.mu.Lock()
	pool, poolID, sess := m.pool, m.poolID, m.session
	owner := m.role == RoleOwner || m.role == RoleStatic
	m.mu.Unlock()
	if !owner {
		pool = nil
		m.mu.Lock()
		m.pool = nil // a fenced pool is no longer ours to show
		m.mu.Unlock()
	}
	m.drainRes, m.drainErr = m.drain(pool, poolID, sess)
	m.setRole(RoleDrained)
	close(m.drainDone)
	<-ctx.Done()
	return nil
}

// stopping reports whether the member must stop, as errStop.
func (m *Member) stopping(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return errStop
	case <-m.drainReq:
		return errStop
	case <-m.abandon:
		return errStop
	default:
		return nil
	}
}

// stopCtx returns a context that ends when the member must stop.
func (m *Member) stopCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-m.drainReq:
		case <-m.abandon:
		case <-ctx.Done():
		}
		cancel()
	}()
	return ctx, cancel
}

// connect checks the fleet's plan, registers the instance and creates a
// session, retrying while the discovery service is unreachable. A plan that
// is not the instance's ends it with a *PlanMismatchError.
func (m *Member) connect(ctx context.Context, in Instance) (Session, error) {
	sctx, cancel := m.stopCtx(ctx)
	defer cancel()
	delay := 500 * time.Millisecond
	for {
		err := m.checkPlan(sctx)
		var mismatch *PlanMismatchError
		if errors.As(err, &mismatch) {
			return nil, m.refusePlan(mismatch)
		}
		if err == nil {
			err = m.cfg.Registry.Register(sctx, in)
		}
		if err == nil {
			var s Session
			s, err = m.cfg.Coordinator.NewSession(sctx)
			if err == nil {
				m.setSession(s)
				level.Info(m.logger).Log("msg", "consul session created", "session", s.ID(), "role", in.Role)
				return s, nil
			}
		}
		if e := m.stopping(ctx); e != nil {
			return nil, e
		}
		level.Warn(m.logger).Log("msg", "cannot check the shard plan, register in consul or create a session; retrying", "err", err, "in", delay)
		if sleep(sctx, delay) != nil {
			return nil, errStop
		}
		delay = min(delay*2, 10*time.Second)
	}
}

// checkPlan checks that the fleet's stored plan is the one this instance
// runs (storing it again if Consul lost it).
func (m *Member) checkPlan(ctx context.Context) error {
	stored, err := m.cfg.Coordinator.AgreePlan(ctx, m.cfg.Plan)
	if err != nil {
		return err
	}
	p := m.cfg.Plan
	return CheckPlan(m.cfg.Coordinator.PlanKey(), stored, p.TotalShards, p.ShardsPerPool, p.Generation)
}

// refusePlan leaves the fleet without running anything: the stored plan
// changed under this instance, whose pools would now overlap other
// instances' pools.
func (m *Member) refusePlan(e *PlanMismatchError) error {
	e.Log(m.logger)
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.ConsulTimeout)
	defer cancel()
	if err := m.cfg.Registry.Deregister(ctx); err != nil {
		level.Warn(m.logger).Log("msg", "consul deregistration failed", "err", err)
	}
	return e
}

func (m *Member) instance(role string, poolID int) Instance {
	p := m.cfg.Plan
	in := Instance{Role: role, PoolID: poolID, TotalShards: p.TotalShards}
	if poolID >= 0 {
		in.FirstShard = poolID * p.ShardsPerPool
		in.LastShard = min(in.FirstShard+p.ShardsPerPool, p.TotalShards) - 1
	}
	return in
}

// afterStop ends a running pool when the member stops: at once when the
// member is abandoned; else after the drain, which stops the shards itself
// (cancel then only lets the pool's Run return).
func (m *Member) afterStop(cancel context.CancelFunc, done <-chan struct{}) {
	select {
	case <-m.abandon:
		m.stopCheckpoints()
		m.abandonSession()
		cancel()
		<-done
	default:
		go func() {
			<-m.drainDone
			cancel()
		}()
	}
}

func (m *Member) abandonSession() {
	m.mu.Lock()
	s := m.session
	m.mu.Unlock()
	if s != nil {
		s.Abandon()
	}
}

// discard gives up a session that is lost or about to be: if Consul still
// has it (renewals failed but it did not expire yet), destroying it frees its
// locks sooner.
func (m *Member) discard(s Session) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.ConsulTimeout)
		defer cancel()
		s.Close(ctx)
	}()
}

// roles returns the role of the instance while it waits for a pool and
// while it runs one, and the pools it may claim: any (spare, then owner), or
// the fixed one (standby, then static).
func (m *Member) roles() (waiting, running string, ids []int) {
	if m.cfg.FixedPool >= 0 {
		return RoleStandby, RoleStatic, []int{m.cfg.FixedPool}
	}
	for id := range m.cfg.Plan.Pools() {
		ids = append(ids, id)
	}
	return RoleSpare, RoleOwner, ids
}

// run is the life of the instance: it waits until it wins a pool's lock
// (spare, or standby for a fixed pool), runs the pool until it is drained or
// loses its session (then fenced, and waiting again once it has a new one).
func (m *Member) run(ctx context.Context) error {
	waiting, running, ids := m.roles()
	for {
		role := waiting
		if m.Role() == RoleFenced {
			role = RoleFenced // until a new session exists
		}
		s, err := m.connect(ctx, m.instance(role, -1))
		if err != nil {
			return err
		}
		m.mu.Lock()
		m.pool, m.poolID, m.resumed = nil, -1, nil
		m.mu.Unlock()
		m.setRole(waiting)
		if role == RoleFenced {
			// The catalog still says fenced.
			rctx, rcancel := context.WithTimeout(ctx, m.cfg.ConsulTimeout)
			if err := m.cfg.Registry.Register(rctx, m.instance(waiting, -1)); err != nil {
				level.Warn(m.logger).Log("msg", "cannot update the consul registration", "err", err)
			}
			rcancel()
		}
		cctx, cancel := m.stopCtx(ctx)
		poolID, err := m.cfg.Coordinator.ClaimPool(cctx, s, ids)
		cancel()
		if err != nil {
			if e := m.stopping(ctx); e != nil {
				select {
				case <-m.abandon:
					m.abandonSession()
				default:
				}
				return e
			}
			level.Warn(m.logger).Log("msg", "consul session lost while "+waiting+"; creating a new one", "err", err)
			m.discard(s)
			continue
		}
		if err := m.own(ctx, s, poolID, running); err != nil {
			return err
		}
	}
}

// own runs a claimed pool in role (owner or static). It returns nil after a
// fence (or a take-over that could not start), errStop when the member must
// stop (the pool then still runs, for the drain).
func (m *Member) own(ctx context.Context, s Session, poolID int, role string) error {
	level.Info(m.logger).Log("msg", "claimed pool", "pool_id", poolID, "session", s.ID())
	if e := m.stopping(ctx); e != nil {
		return m.releaseUnstarted(s, poolID, nil, e)
	}
	resume, err := m.takeHandoffs(ctx, s, poolID)
	if err == nil && m.stopping(ctx) != nil {
		// Draining already: the records go back with the lock.
		return m.releaseUnstarted(s, poolID, resume, errStop)
	}
	if err != nil {
		if e := m.stopping(ctx); e != nil {
			return m.releaseUnstarted(s, poolID, nil, e)
		}
		// Without the records consumed the pool must not start: they
		// could be resumed a second time by a later owner.
		level.Error(m.logger).Log("msg", "cannot take over the pool's hand-off records; giving the pool up and starting over", "pool_id", poolID, "err", err)
		m.releaseUnstarted(s, poolID, nil, nil)
		m.discard(s)
		return nil
	}
	pool := m.cfg.NewPool(poolID, resume)
	pctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		pool.Run(pctx)
	}()
	<-pool.Started()
	resumed := make([]int, 0, len(resume))
	for id := range resume {
		resumed = append(resumed, id)
	}
	sort.Ints(resumed)
	m.mu.Lock()
	m.pool, m.poolID, m.resumed = pool, poolID, resumed
	m.mu.Unlock()
	m.setRole(role)
	m.startCheckpoints(s, poolID, pool)
	identifying := max(len(pool.Shards())-len(resumed), 0)
	m.cfg.Metrics.Takeovers.WithLabelValues("resume").Add(float64(len(resumed)))
	m.cfg.Metrics.Takeovers.WithLabelValues("identify").Add(float64(identifying))
	level.Info(m.logger).Log("msg", "running pool", "pool_id", poolID, "resumed_shards", len(resumed), "identifying_shards", identifying)
	// The catalog learns the pool; a failure here is not worth a fence.
	rctx, rcancel := context.WithTimeout(ctx, m.cfg.ConsulTimeout)
	if err := m.cfg.Registry.Register(rctx, m.instance(role, poolID)); err != nil {
		level.Warn(m.logger).Log("msg", "cannot update the consul registration with the pool", "err", err)
	}
	rcancel()

	select {
	case <-s.Lost():
		// Fencing: stop every shard before anything else.
		cancel()
		<-done
		m.stopCheckpoints()
		m.fence(s, poolID, pool)
		return nil
	case <-ctx.Done():
	case <-m.drainReq:
	case <-m.abandon:
	}
	m.afterStop(cancel, done)
	return errStop
}

// releaseUnstarted gives back a claimed pool that never ran, with the
// hand-off records it had taken.
func (m *Member) releaseUnstarted(s Session, poolID int, records map[int]*shard.Handoff, ret error) error {
	select {
	case <-m.abandon:
		s.Abandon()
		return ret
	default:
	}
	var recs []service.ShardHandoff
	for id, h := range records {
		recs = append(recs, service.ShardHandoff{ShardID: id, Handoff: h})
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.ConsulTimeout)
	defer cancel()
	if err := m.cfg.Coordinator.HandOff(ctx, s, poolID, recs); err != nil {
		level.Warn(m.logger).Log("msg", "cannot release the pool lock", "pool_id", poolID, "err", err)
	}
	return ret
}

// takeHandoffs reads and consumes the previous owner's records and keeps the
// fresh ones.
func (m *Member) takeHandoffs(ctx context.Context, s Session, poolID int) (map[int]*shard.Handoff, error) {
	var recs map[int]*shard.Handoff
	var err error
	for attempt := 1; ; attempt++ {
		tctx, cancel := context.WithTimeout(ctx, m.cfg.ConsulTimeout)
		recs, err = m.cfg.Coordinator.TakeHandoffs(tctx, s, poolID)
		cancel()
		if err == nil || errors.Is(err, ErrLockLost) || attempt == 3 || sleep(ctx, time.Second) != nil {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	first := poolID * m.cfg.Plan.ShardsPerPool
	last := min(first+m.cfg.Plan.ShardsPerPool, m.cfg.Plan.TotalShards) - 1
	return freshHandoffs(recs, first, last, m.cfg.HandoffMaxAge, time.Now(), m.logger), nil
}

// freshHandoffs keeps the records of shards in [first, last] younger than
// maxAge.
func freshHandoffs(recs map[int]*shard.Handoff, first, last int, maxAge time.Duration, now time.Time, logger log.Logger) map[int]*shard.Handoff {
	out := map[int]*shard.Handoff{}
	for id, h := range recs {
		switch age := now.Sub(h.Time); {
		case id < first || id > last:
			level.Warn(logger).Log("msg", "hand-off record for a shard outside the pool ignored", "shard_id", id)
		case h.SessionID == "":
		case age > maxAge:
			level.Info(logger).Log("msg", "hand-off record too old to resume; the shard identifies", "shard_id", id,
				"age", age.Round(time.Second), "max_age", maxAge)
		default:
			out[id] = h
		}
	}
	return out
}

// fence records that the instance lost its claim on poolID, once pool's
// shards are stopped, and gives up the session.
func (m *Member) fence(s Session, poolID int, pool *service.Pool) {
	reason := "session lost"
	if err := s.Err(); err != nil {
		reason = err.Error()
	}
	m.mu.Lock()
	m.lastFence = &service.Fence{PoolID: poolID, At: time.Now().UTC(), Reason: reason}
	m.pool, m.poolID = pool, poolID // kept for /status: its shards, stopped
	m.mu.Unlock()
	m.setRole(RoleFenced)
	m.cfg.Metrics.Fences.Inc()
	waiting, _, _ := m.roles()
	level.Error(m.logger).Log("msg", "fenced: lost the consul session, every shard of the pool stopped so that no two instances run it; "+waiting+" again once a new session exists",
		"pool_id", poolID, "reason", reason)
	m.discard(s)
}

// drain stops the pool, hands its sessions over and leaves the fleet. pool is
// nil when the instance runs none.
func (m *Member) drain(pool *service.Pool, poolID int, s Session) (service.DrainResult, error) {
	res := service.DrainResult{PoolID: -1, Flushed: true}
	var err error
	m.stopCheckpoints() // the final records are the drain's
	if pool != nil {
		res, err = pool.Drain(context.Background())
		if err != nil {
			level.Error(m.logger).Log("msg", "drain failed", "err", err)
		}
	}
	step := func(what string, f func(ctx context.Context) error) {
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.ConsulTimeout)
		defer cancel()
		if e := f(ctx); e != nil {
			level.Error(m.logger).Log("msg", what+" failed", "err", e)
		}
	}
	if pool != nil && s != nil && err == nil {
		// Records first, lock released with them: the successor that
		// takes the lock finds them.
		step("hand-off to the successor", func(ctx context.Context) error {
			if e := m.cfg.Coordinator.HandOff(ctx, s, poolID, res.Shards); e != nil {
				return e
			}
			n := 0
			for _, h := range res.Shards {
				if h.Handoff != nil {
					n++
				}
			}
			level.Info(m.logger).Log("msg", "hand-off records written to consul, pool lock released", "pool_id", poolID, "records", n)
			return nil
		})
	}
	if s != nil {
		step("destroying the consul session", s.Close)
	}
	step("consul deregistration", m.cfg.Registry.Deregister)
	return res, err
}

// Drain implements service.Service: readiness turns false at once; an owner
// drains its pool, writes each shard's hand-off record to the discovery
// service and releases the pool lock (in that order); every instance then
// ends its session and deregisters. Idempotent.
func (m *Member) Drain(ctx context.Context) (service.DrainResult, error) {
	select {
	case <-m.started:
	default:
		return service.DrainResult{}, service.ErrNotRunning
	}
	m.drainOnce.Do(func() { m.draining.Store(true); close(m.drainReq) })
	select {
	case <-m.drainDone:
		return m.drainRes, m.drainErr
	case <-ctx.Done():
		return service.DrainResult{}, ctx.Err()
	}
}

// Readiness implements service.Service: the pool's, else not ready.
func (m *Member) Readiness(ctx context.Context) service.Readiness {
	if p := m.Pool(); p != nil {
		r := p.Readiness(ctx)
		r.Ready = r.Ready && !m.draining.Load()
		return r
	}
	r := service.Readiness{PoolID: -1}
	r.ReportBroker(m.cfg.Broker)
	return r
}

// Status implements service.Service: the pool's status (a fenced pool's
// shards show as stopped), or the instance's own without a pool; both with
// the membership.
func (m *Member) Status(ctx context.Context) (service.Status, error) {
	m.mu.Lock()
	role, pool, sess := m.role, m.pool, m.session
	ms := &service.Membership{InstanceID: m.cfg.InstanceID, Role: role, Pools: m.cfg.Plan.Pools(), LastFence: m.lastFence}
	if role == RoleOwner || role == RoleStatic {
		ms.ResumedShards = m.resumed
	}
	m.mu.Unlock()
	if sess != nil && role != RoleDrained {
		select {
		case <-sess.Lost():
		default:
			ms.Session = sess.ID()
		}
	}
	var st service.Status
	if pool != nil && role != RoleSpare && role != RoleStandby && role != RoleStarting {
		var err error
		if st, err = pool.Status(ctx); err != nil {
			return st, err
		}
		if role == RoleFenced {
			st.State = RoleFenced
			st.Ready = false
		}
	} else {
		st = service.Status{
			PoolID: -1, State: role, FirstShard: -1, LastShard: -1, TotalShards: m.cfg.Plan.TotalShards,
			Shards: []service.ShardStatus{},
		}
		st.ReportBroker(m.cfg.Broker)
		if m.cfg.Publish != nil {
			st.Publish.BufferEvents, st.Publish.BufferBytes = m.cfg.Publish.Len()
		}
		if m.cfg.Breaker != nil {
			st.Publish.Breaker = m.cfg.Breaker().String()
		}
	}
	st.Discovery = ms
	return st, nil
}

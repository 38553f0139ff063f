package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shardpool/gateway/discovery"
	"github.com/shardpool/gateway/discovery/consultest"
	"github.com/shardpool/gateway/internal/discordsim"
	"github.com/shardpool/gateway/internal/natstest"
	"github.com/shardpool/gateway/service"
)

// fleet is several gateway instances, each the whole program in-process,
// sharing one Discord simulator, one embedded NATS JetStream server and one
// real Consul agent (consul agent -dev).
type fleet struct {
	t      *testing.T
	sim    *discordsim.Server
	ns     *natstest.Server
	js     jetstream.JetStream
	nc     *nats.Conn
	consul *consultest.Agent
	o      fleetOptions
}

type fleetOptions struct {
	sim            discordsim.Config
	total, perPool int
	// env overrides the instances' environment.
	env map[string]string
}

const (
	fleetService = "discord-gateway-test"
	fleetTTL     = 10 * time.Second // Consul's minimum
	// fleetTTLLockDelay is the shortest lock-delay the configuration
	// accepts with fleetTTL: half of it.
	fleetTTLLockDelay = fleetTTL / 2
	// fleetToken is sent to the agent (which has no ACLs and ignores it)
	// and must never reach a log line.
	fleetToken = "consul-acl-token-4f1d9c"
)

func startFleet(t *testing.T, o fleetOptions) *fleet {
	t.Helper()
	if o.sim.IdentifyWindow == 0 {
		o.sim.IdentifyWindow = 200 * time.Millisecond
	}
	if o.sim.Shards == 0 {
		o.sim.Shards = o.total
	}
	if o.sim.MaxConcurrency == 0 {
		o.sim.MaxConcurrency = o.sim.Shards
	}
	f := &fleet{t: t, o: o}
	f.consul = consultest.Start(t)
	f.sim = discordsim.New(o.sim)
	if err := f.sim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.sim.Close)
	f.ns = natstest.Run(t)
	nc, err := nats.Connect(f.ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	f.nc = nc
	f.js, _ = jetstream.New(nc)
	t.Cleanup(func() {
		nc.Close()
		f.ns.Shutdown()
	})
	return f
}

// start starts n instances at once and returns them once their HTTP servers
// are up.
func (f *fleet) start(n int) []*testEnv {
	f.t.Helper()
	out := make([]*testEnv, n)
	for i := range out {
		out[i] = f.newInstance()
	}
	for _, e := range out {
		go func() { e.runErr <- e.m.Run(context.Background()) }()
	}
	for _, e := range out {
		select {
		case <-e.m.started:
		case err := <-e.runErr:
			f.t.Fatalf("gateway did not start: %v\n%s", err, e.logs.String())
		case <-time.After(30 * time.Second):
			f.t.Fatal("gateway did not start")
		}
		e.base = "http://" + e.m.HTTPAddr()
	}
	return out
}

func (f *fleet) newInstance() *testEnv {
	t := f.t
	t.Helper()
	vars := map[string]string{
		"DISCORD_TOKEN": discordsim.DefaultToken, "DISCORD_API_URL": f.sim.APIURL(),
		"HTTP_HOST": "127.0.0.1", "HTTP_PORT": "0", "LOG_LEVEL": "info", "DRAIN_TIMEOUT": "15s",
		"NATS_URL": f.ns.ClientURL(), "TOTAL_SHARDS": strconv.Itoa(f.o.total), "SHARDS_PER_POOL": strconv.Itoa(f.o.perPool),
		"CONSUL_HTTP_ADDR": f.consul.Addr, "SERVICE_NAME": fleetService, "KV_PREFIX": "gw-" + strings.ToLower(t.Name()),
		"CONSUL_SESSION_TTL": fleetTTL.String(), "CONSUL_LOCK_DELAY": fleetTTLLockDelay.String(), "CONSUL_CHECK_INTERVAL": "2s",
		"CONSUL_HTTP_TOKEN": fleetToken,
	}
	for k, v := range f.o.env {
		vars[k] = v
	}
	cfg, err := ParseConfig(nil, func(k string) string { return vars[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg.IdentifyWindow = f.o.sim.IdentifyWindow
	cfg.BackoffBase, cfg.BackoffMax = 20*time.Millisecond, 500*time.Millisecond
	e := &testEnv{t: t, sim: f.sim, nc: f.nc, js: f.js, logs: &lockedBuffer{}, runErr: make(chan error, 1)}
	e.m = NewMain()
	e.m.Config = cfg
	e.m.LogOutput = e.logs
	t.Cleanup(func() {
		e.stop()
		if strings.Contains(e.logs.String(), fleetToken) {
			t.Errorf("the Consul ACL token reached the log of %s", e.base)
		}
		if t.Failed() || os.Getenv("GW_DUMP") != "" {
			t.Logf("gateway %s log:\n%s", e.base, tail(e.logs.String(), 120))
		}
	})
	return e
}

// crash stops the instance as a crash would: no drain, no hand-off, its
// Consul session left to expire.
func (e *testEnv) crash() {
	e.m.crashing.Store(true)
	e.stop()
}

func (e *testEnv) membership() service.Membership {
	e.t.Helper()
	st := e.status()
	if st.Discovery == nil {
		e.t.Fatalf("/status has no discovery section: %+v", st)
	}
	return *st.Discovery
}

func (e *testEnv) role() string { return e.membership().Role }

// waitOwner waits until the instance owns a pool whose shards are all READY
// and returns the pool id.
func (e *testEnv) waitOwner(timeout time.Duration) int {
	e.t.Helper()
	var pool int
	e.eventually("owner with every shard ready", timeout, func() bool {
		st := e.status()
		if st.Discovery == nil || st.Discovery.Role != discovery.RoleOwner {
			return false
		}
		pool = st.PoolID
		code, r := e.readiness()
		return code == http.StatusOK && r.ShardsReady == r.ShardsTotal && r.ShardsTotal > 0
	})
	return pool
}

// identifiesByShard counts the IDENTIFYs the simulator received per shard.
func identifiesByShard(sim *discordsim.Server) map[int]int {
	n := map[int]int{}
	for _, id := range sim.Record().Identifies {
		n[id.Shard]++
	}
	return n
}

func catalog(t *testing.T, a *consultest.Agent) []*api.CatalogService {
	t.Helper()
	svcs, _, err := a.Client().Catalog().Service(fleetService, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	return svcs
}

func TestConsulThreeInstancesForTwoPoolsGiveTwoOwnersAndASpare(t *testing.T) {
	f := startFleet(t, fleetOptions{total: 4, perPool: 2})
	es := f.start(3)

	var owners, spares []*testEnv
	for _, e := range es {
		e.eventually("a role", 60*time.Second, func() bool { r := e.role(); return r == discovery.RoleOwner || r == discovery.RoleSpare })
	}
	// The spare may have been the last to try; give the owners their pools.
	es[0].eventually("two owners", 60*time.Second, func() bool {
		n := 0
		for _, e := range es {
			if e.role() == discovery.RoleOwner {
				n++
			}
		}
		return n == 2
	})
	pools := map[int]*testEnv{}
	for _, e := range es {
		if e.role() == discovery.RoleOwner {
			owners = append(owners, e)
			pools[e.waitOwner(60*time.Second)] = e
		} else {
			spares = append(spares, e)
		}
	}
	if len(owners) != 2 || len(spares) != 1 || pools[0] == nil || pools[1] == nil {
		t.Fatalf("pools %v, %d owners, %d spares; want pools 0 and 1 owned once each and one spare", keys(pools), len(owners), len(spares))
	}

	spare := spares[0]
	if code, r := spare.readiness(); code != http.StatusServiceUnavailable || r.Ready || r.PoolID != -1 {
		t.Fatalf("spare /ready %d %+v, want 503 without a pool", code, r)
	}
	if code, _ := spare.get("/health"); code != http.StatusOK {
		t.Fatalf("spare /health %d", code)
	}
	st := spare.status()
	if st.State != discovery.RoleSpare || st.PoolID != -1 || len(st.Shards) != 0 || st.Discovery.Session == "" {
		t.Fatalf("spare /status %+v", st)
	}
	for id, n := range identifiesByShard(f.sim) {
		if n != 1 {
			t.Errorf("shard %d identified %d times", id, n)
		}
	}
	spare.wantMetrics(`gateway_discovery_role{role="spare"} 1`, `gateway_discovery_role{role="owner"} 0`)
	if _, b := spare.get("/metrics"); strings.Contains(string(b), "gateway_shards_ready{") {
		t.Error("a spare reports gateway_shards_ready")
	}
	for id, e := range pools {
		e.wantMetrics(`gateway_discovery_role{role="owner"} 1`, fmt.Sprintf(`gateway_shards_ready{pool_id="%d"} 2`, id))
	}

	// The catalog: three instances, owners with their pool in meta and tags.
	svcs := catalog(t, f.consul)
	if len(svcs) != 3 {
		t.Fatalf("%d instances in the catalog, want 3", len(svcs))
	}
	byRole := map[string]int{}
	for _, s := range svcs {
		byRole[s.ServiceMeta["role"]]++
		if s.ServiceMeta["total_shards"] != "4" || s.ServiceMeta["version"] == "" || s.ServicePort == 0 || s.ServiceAddress != "127.0.0.1" {
			t.Errorf("instance %s: meta %v, %s:%d", s.ServiceID, s.ServiceMeta, s.ServiceAddress, s.ServicePort)
		}
		if s.ServiceMeta["role"] == discovery.RoleOwner {
			p := s.ServiceMeta["pool_id"]
			want := map[string]string{"0": "0-1", "1": "2-3"}[p]
			if want == "" || s.ServiceMeta["shard_range"] != want || !contains(s.ServiceTags, "pool-"+p) {
				t.Errorf("owner %s: meta %v tags %v", s.ServiceID, s.ServiceMeta, s.ServiceTags)
			}
		}
	}
	if byRole[discovery.RoleOwner] != 2 || byRole[discovery.RoleSpare] != 1 {
		t.Errorf("catalog roles %v", byRole)
	}
	// Each pool lock is held by its owner's session.
	for id, e := range pools {
		kv, _, err := f.consul.Client().KV().Get("gw-"+strings.ToLower(t.Name())+"/pools/1/"+strconv.Itoa(id), nil)
		if err != nil || kv == nil || kv.Session != e.membership().Session {
			t.Errorf("lock of pool %d: %+v (err %v), want held by %s", id, kv, err, e.membership().Session)
		}
	}
}

func keys(m map[int]*testEnv) []int {
	var out []int
	for k := range m {
		out = append(out, k)
	}
	sort.Ints(out)
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// startOwnerAndSpare starts an owner, waits until it runs its pool, then a
// spare.
func (f *fleet) startOwnerAndSpare() (owner, spare *testEnv) {
	f.t.Helper()
	owner = f.start(1)[0]
	owner.waitOwner(60 * time.Second)
	spare = f.start(1)[0]
	spare.eventually("spare", 60*time.Second, func() bool { return spare.role() == discovery.RoleSpare })
	return owner, spare
}

func TestConsulSpareTakesOverADeadOwnersPoolWithAFreshIdentify(t *testing.T) {
	cases := []struct {
		name, checkInterval string
		// The earliest the spare may take over: Consul expires a session
		// no sooner than the TTL after its last renewal (every TTL/5), or
		// ends it when the /health check fails (3 probes in a row, or the
		// first probe when none passed yet: Consul starts counting at the
		// threshold); the lock-delay passes after that.
		notBefore time.Duration
	}{
		{"when the session TTL expires", "10m", fleetTTL - fleetTTL/5 + fleetTTLLockDelay},
		{"when the /health check fails", "2s", fleetTTLLockDelay},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Without checkpoints: this is the crash that leaves no record.
			f := startFleet(t, fleetOptions{total: 2, perPool: 2, env: map[string]string{"CONSUL_CHECK_INTERVAL": tc.checkInterval, "CHECKPOINT_INTERVAL": "0s"}})
			owner, spare := f.startOwnerAndSpare()

			died := time.Now()
			owner.crash()
			spare.waitOwner(90 * time.Second)
			took := time.Since(died)
			if took < tc.notBefore {
				t.Fatalf("took over %v after the owner died, before its session could expire", took)
			}
			got := identifiesByShard(f.sim)
			if got[0] != 2 || got[1] != 2 {
				t.Fatalf("identifies per shard %v, want a fresh IDENTIFY for shards 0 and 1 (2 each)", got)
			}
			if rs := f.sim.Record().Resumes; len(rs) != 0 {
				t.Fatalf("resumes %+v: a dead owner leaves no hand-off record", rs)
			}
			if ms := spare.membership(); len(ms.ResumedShards) != 0 {
				t.Fatalf("resumed shards %v", ms.ResumedShards)
			}
			t.Logf("spare took over %v after the owner died (session TTL %v, checks every %s)", took.Round(time.Millisecond), fleetTTL, tc.checkInterval)
		})
	}
}

func TestConsulDrainHandsTheSessionsToTheSpareByResumeWithoutLossOrDuplicates(t *testing.T) {
	// Without checkpoints, which would write the successor's records where
	// the drain's were consumed (crash_test.go covers them).
	f := startFleet(t, fleetOptions{total: 2, perPool: 2, sim: discordsim.Config{EventRate: 100}, env: map[string]string{"CHECKPOINT_INTERVAL": "0s"}})
	owner, spare := f.startOwnerAndSpare()
	owner.eventually("events flowing", 30*time.Second, func() bool { return owner.streamCount("EVENTS")+owner.streamCount("COMMANDS") > 300 })

	code, b := owner.do("POST", "/drain", "")
	if code != http.StatusOK {
		t.Fatalf("drain: %d %s", code, b)
	}
	var res service.DrainResult
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if !res.Flushed || len(res.Shards) != 2 || res.Shards[0].Handoff == nil || res.Shards[1].Handoff == nil {
		t.Fatalf("drain result %s", b)
	}

	spare.waitOwner(60 * time.Second)
	if ms := spare.membership(); fmt.Sprint(ms.ResumedShards) != "[0 1]" {
		t.Fatalf("the successor resumed %v, want shards [0 1]", ms.ResumedShards)
	}
	spare.wantMetrics(`gateway_discovery_shard_takeovers_total{how="resume"} 2`, `gateway_discovery_shard_takeovers_total{how="identify"} 0`)
	// Events keep flowing through the successor, then stop for the count.
	before := spare.streamCount("EVENTS") + spare.streamCount("COMMANDS")
	spare.eventually("events through the successor", 30*time.Second, func() bool {
		return spare.streamCount("EVENTS")+spare.streamCount("COMMANDS") > before+300
	})
	f.sim.SetEventRate(0)
	spare.settle()

	rec := f.sim.Record()
	if got := identifiesByShard(f.sim); len(rec.Identifies) != 2 || got[0] != 1 || got[1] != 1 {
		t.Fatalf("identifies per shard %v: the take-over identified instead of resuming", got)
	}
	resumed := map[int]bool{}
	for _, r := range rec.Resumes {
		if r.Path != "/resume" || r.Outcome != discordsim.ResumeResumed {
			t.Errorf("resume %+v, want resumed on /resume (resume_gateway_url)", r)
		}
		resumed[r.Shard] = true
	}
	if len(rec.Resumes) != 2 || !resumed[0] || !resumed[1] {
		t.Fatalf("resumes %+v, want one per shard", rec.Resumes)
	}
	spare.assertExactlyOnce(expectedIDs(t, f.sim, false))

	// The drained instance left the catalog; the records were consumed.
	for _, s := range catalog(t, f.consul) {
		if s.ServiceID == owner.membership().InstanceID {
			t.Errorf("drained instance %s still registered", s.ServiceID)
		}
	}
	left, _, err := f.consul.Client().KV().List("gw-"+strings.ToLower(t.Name())+"/handoff/", nil)
	if err != nil || len(left) != 0 {
		t.Fatalf("hand-off records left after the take-over: %d (err %v)", len(left), err)
	}
}

func TestConsulFourInstancesStartingTogetherKeepTheIdentifyBucket(t *testing.T) {
	f := startFleet(t, fleetOptions{total: 8, perPool: 2, sim: discordsim.Config{
		// A 10 ms tolerance absorbs the simulator's own scheduling delay
		// in stamping receipt times on a loaded machine (the limiter's
		// margin is 2% of the window, 6 ms here); a fleet that does not
		// coordinate identifies tens of ms apart.
		Shards: 8, MaxConcurrency: 1, IdentifyWindow: 300 * time.Millisecond, IdentifyTolerance: 10 * time.Millisecond,
	}})
	es := f.start(4)
	pools := map[int]bool{}
	for _, e := range es {
		pools[e.waitOwner(90*time.Second)] = true
	}
	if len(pools) != 4 {
		t.Fatalf("pools owned %v, want 4 distinct", pools)
	}
	rec := f.sim.Record()
	if v := rec.ViolationsOf(discordsim.ViolationIdentifyBucket); len(v) != 0 {
		t.Fatalf("identify bucket violations across the fleet: %+v", v)
	}
	if got := identifiesByShard(f.sim); len(rec.Identifies) != 8 || len(got) != 8 {
		t.Fatalf("identifies %v, want each of the 8 shards once", got)
	}
	for i := 1; i < len(rec.Identifies); i++ {
		if gap := rec.Identifies[i].At.Sub(rec.Identifies[i-1].At); gap < 290*time.Millisecond {
			t.Errorf("identifies %d and %d only %v apart", i-1, i, gap)
		}
	}
}

func TestConsulOwnerFencesItselfWhenConsulIsGonePastTheTTL(t *testing.T) {
	f := startFleet(t, fleetOptions{total: 2, perPool: 2})
	owner := f.start(1)[0]
	owner.waitOwner(60 * time.Second)

	gone := time.Now()
	f.consul.Stop()
	owner.eventually("fenced", 3*fleetTTL, func() bool { return owner.status().State == discovery.RoleFenced })
	ms := owner.membership()
	if ms.Role != discovery.RoleFenced || ms.LastFence == nil || ms.LastFence.PoolID != 0 {
		t.Fatalf("membership %+v", ms)
	}
	// Consul cannot expire the session sooner than the TTL after the last
	// renewal, so a fence later than that could overlap a new owner.
	if d := ms.LastFence.At.Sub(gone); d >= fleetTTL {
		t.Fatalf("fenced %v after Consul went away, not within the TTL (%v)", d, fleetTTL)
	}
	if code, _ := owner.readiness(); code != http.StatusServiceUnavailable {
		t.Fatalf("fenced instance /ready %d", code)
	}
	for _, s := range f.sim.Sessions() {
		if s.Live {
			t.Errorf("shard %d still connected after the fence", s.Shard)
		}
	}
	for _, s := range owner.status().Shards {
		if s.State == "ready" {
			t.Errorf("shard %d still ready after the fence", s.ID)
		}
	}
	if !strings.Contains(owner.logs.String(), "fenced: lost the consul session") {
		t.Fatal("the log does not say the instance fenced itself")
	}
	owner.wantMetrics(`gateway_discovery_fences_total 1`, `gateway_discovery_role{role="fenced"} 1`)
	t.Logf("fenced %v after Consul went away (TTL %v)", ms.LastFence.At.Sub(gone).Round(time.Millisecond), fleetTTL)

	// Consul back: a new session, spare, then owner again.
	if err := f.consul.Restart(); err != nil {
		t.Fatal(err)
	}
	owner.waitOwner(60 * time.Second)
	if ms := owner.membership(); ms.LastFence == nil {
		t.Fatal("the last fence is no longer reported")
	}
}

func TestConsulWithAnExplicitPoolIDRunsThatPoolUnderItsLock(t *testing.T) {
	f := startFleet(t, fleetOptions{total: 4, perPool: 2, env: map[string]string{"POOL_ID": "1"}})
	e := f.start(1)[0]
	e.waitShardsReady(2)
	st := e.status()
	if st.PoolID != 1 || st.FirstShard != 2 || st.Discovery == nil || st.Discovery.Role != discovery.RoleStatic {
		t.Fatalf("status %+v", st)
	}
	if got := identifiesByShard(f.sim); len(got) != 2 || got[2] != 1 || got[3] != 1 {
		t.Fatalf("identifies %v, want shards 2 and 3 once", got)
	}
	svcs := catalog(t, f.consul)
	if len(svcs) != 1 || svcs[0].ServiceMeta["role"] != discovery.RoleStatic || svcs[0].ServiceMeta["pool_id"] != "1" {
		t.Fatalf("catalog %+v", svcs)
	}
	prefix := "gw-" + strings.ToLower(t.Name())
	kv, _, err := f.consul.Client().KV().Get(prefix+"/pools/1/1", nil)
	if err != nil || kv == nil || kv.Session != st.Discovery.Session {
		t.Fatalf("lock of pool 1: %+v (err %v), want held by %s", kv, err, st.Discovery.Session)
	}
	// A drain hands the sessions over and releases the lock, as an owner's.
	if code, _ := e.do("POST", "/drain", ""); code != http.StatusOK {
		t.Fatalf("drain %d", code)
	}
	if svcs := catalog(t, f.consul); len(svcs) != 0 {
		t.Fatalf("still registered after the drain: %+v", svcs)
	}
	if kv, _, err := f.consul.Client().KV().Get(prefix+"/pools/1/1", nil); err != nil || kv == nil || kv.Session != "" {
		t.Fatalf("lock of pool 1 after the drain: %+v (err %v), want released", kv, err)
	}
	if recs, _, err := f.consul.Client().KV().List(prefix+"/handoff/1/1/", nil); err != nil || len(recs) != 2 {
		t.Fatalf("%d hand-off records (err %v), want one per shard", len(recs), err)
	}
}

// wantMetrics checks that /metrics has each line.
func (e *testEnv) wantMetrics(lines ...string) {
	e.t.Helper()
	_, b := e.get("/metrics")
	for _, l := range lines {
		if !strings.Contains(string(b), l+"\n") {
			e.t.Errorf("/metrics of %s lacks %s", e.base, l)
		}
	}
}

func TestConsulStaleHandOffRecordsFallBackToIdentify(t *testing.T) {
	cases := []struct {
		name string
		o    fleetOptions
		// stale waits until the records are stale in the case's sense.
		stale       func(f *fleet, owner *testEnv, recorded time.Time)
		wantResumes int // RESUMEs tried by the successor (answered by op 9)
	}{
		{
			name: "older than HANDOFF_MAX_AGE: not resumed",
			o:    fleetOptions{total: 2, perPool: 2, env: map[string]string{"HANDOFF_MAX_AGE": "1s", "CHECKPOINT_INTERVAL": "0s"}},
			stale: func(f *fleet, owner *testEnv, recorded time.Time) {
				owner.eventually("records older than HANDOFF_MAX_AGE", 10*time.Second, func() bool { return time.Since(recorded) > 1200*time.Millisecond })
			},
		},
		{
			name: "forgotten by Discord: op 9 then IDENTIFY",
			o:    fleetOptions{total: 2, perPool: 2, sim: discordsim.Config{SessionTimeout: time.Second}, env: map[string]string{"CHECKPOINT_INTERVAL": "0s"}},
			stale: func(f *fleet, owner *testEnv, _ time.Time) {
				owner.eventually("sessions expired in the simulator", 20*time.Second, func() bool {
					for _, s := range f.sim.Sessions() {
						if !s.Invalid {
							return false
						}
					}
					return true
				})
			},
			wantResumes: 2,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := startFleet(t, tc.o)
			owner := f.start(1)[0]
			owner.waitOwner(60 * time.Second)
			code, b := owner.do("POST", "/drain", "")
			var res service.DrainResult
			if code != http.StatusOK || json.Unmarshal(b, &res) != nil || len(res.Shards) != 2 || res.Shards[0].Handoff == nil {
				t.Fatalf("drain: %d %s", code, b)
			}
			tc.stale(f, owner, res.Shards[0].Handoff.Time)

			next := f.start(1)[0]
			next.waitOwner(60 * time.Second)
			if got := identifiesByShard(f.sim); got[0] != 2 || got[1] != 2 {
				t.Fatalf("identifies per shard %v, want a new IDENTIFY for each shard", got)
			}
			rs := f.sim.Record().Resumes
			if len(rs) != tc.wantResumes {
				t.Fatalf("resumes %+v, want %d", rs, tc.wantResumes)
			}
			for _, r := range rs {
				if r.Outcome != discordsim.ResumeInvalidSession {
					t.Errorf("resume %+v, want refused (op 9)", r)
				}
			}
			left, _, err := f.consul.Client().KV().List("gw-"+strings.ToLower(t.Name())+"/handoff/", nil)
			if err != nil || len(left) != 0 {
				t.Fatalf("%d hand-off records left (err %v): stale records must be consumed too", len(left), err)
			}
		})
	}
}

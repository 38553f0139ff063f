package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shardpool/gateway/service"
	"github.com/shardpool/gateway/service/shard"
)

func record(sid string, seq int64) *shard.Handoff {
	return &shard.Handoff{SessionID: sid, ResumeGatewayURL: "wss://resume.example", Seq: seq, Time: time.Now().UTC()}
}

// storedSeqs reads pool 0's hand-off keys: shard → seq.
func storedSeqs(t *testing.T, c *Consul) map[int]int64 {
	t.Helper()
	pairs, _, err := c.client.KV().List(c.handoffPrefix(0), nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int64{}
	for _, p := range pairs {
		var h shard.Handoff
		if err := json.Unmarshal(p.Value, &h); err != nil {
			t.Fatal(err)
		}
		id, _ := strconv.Atoi(p.Key[len(c.handoffPrefix(0)):])
		out[id] = h.Seq
	}
	return out
}

// An owner that lost its session (fenced, frozen past its TTL, cut off)
// and whose pool another instance took can never write a checkpoint over
// the successor's: Consul rolls the transaction back.
func TestCheckpointsOfAStaleOwnerAreRolledBack(t *testing.T) {
	a := sharedAgent(t)
	p := prefix(t)
	ctx := ctxTimeout(t, time.Minute)
	old, next := newInstance(t, a, p, 10*time.Second), newInstance(t, a, p, 10*time.Second)
	so := old.session(t)
	mustClaim(t, claimAsync(ctx, old.Consul, so, 1))
	if err := old.SaveCheckpoints(ctx, so, 0, []service.ShardHandoff{{ShardID: 0, Handoff: record("a", 5)}, {ShardID: 1, Handoff: record("b", 3)}}); err != nil {
		t.Fatal(err)
	}

	// Consul ends the old owner's session (as its TTL or a failed check
	// would) and the next instance takes the pool and checkpoints.
	if _, err := old.client.Session().Destroy(so.ID(), nil); err != nil {
		t.Fatal(err)
	}
	sn := next.session(t)
	mustClaim(t, claimAsync(ctx, next.Consul, sn, 1))
	if err := next.SaveCheckpoints(ctx, sn, 0, []service.ShardHandoff{{ShardID: 0, Handoff: record("a", 9)}}); err != nil {
		t.Fatal(err)
	}

	err := old.SaveCheckpoints(ctx, so, 0, []service.ShardHandoff{{ShardID: 0, Handoff: record("a", 6)}, {ShardID: 1, Handoff: nil}})
	if !errors.Is(err, ErrLockLost) {
		t.Fatalf("the stale owner's checkpoint: %v, want ErrLockLost", err)
	}
	if got := storedSeqs(t, next.Consul); got[0] != 9 || got[1] != 3 || len(got) != 2 {
		t.Fatalf("records %v after the stale owner's write, want the successor's seq 9 for shard 0 and shard 1 untouched", got)
	}
}

// More records than one transaction holds go in several, each checking the
// lock; a nil record deletes the shard's key.
func TestCheckpointsBeyondOneTransactionAreAllWritten(t *testing.T) {
	a := sharedAgent(t)
	p := prefix(t)
	ctx := ctxTimeout(t, time.Minute)
	in := newInstance(t, a, p, 10*time.Second)
	s := in.session(t)
	mustClaim(t, claimAsync(ctx, in.Consul, s, 1))
	var recs []service.ShardHandoff
	for id := range 150 {
		recs = append(recs, service.ShardHandoff{ShardID: id, Handoff: record("s"+strconv.Itoa(id), int64(id))})
	}
	if err := in.SaveCheckpoints(ctx, s, 0, recs); err != nil {
		t.Fatal(err)
	}
	if got := storedSeqs(t, in.Consul); len(got) != 150 || got[149] != 149 {
		t.Fatalf("%d records stored, want 150", len(got))
	}
	if err := in.SaveCheckpoints(ctx, s, 0, []service.ShardHandoff{{ShardID: 7, Handoff: nil}}); err != nil {
		t.Fatal(err)
	}
	if got := storedSeqs(t, in.Consul); len(got) != 149 {
		t.Fatalf("%d records after deleting one, want 149", len(got))
	}
}

// fakeShard is a shard whose resume record the test sets.
type fakeShard struct {
	id int
	mu sync.Mutex
	h  *shard.Handoff
}

func (f *fakeShard) ID() int { return f.id }

func (f *fakeShard) Handoff() *shard.Handoff {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.h == nil {
		return nil
	}
	h := *f.h
	h.Time = time.Now().UTC()
	return &h
}

func (f *fakeShard) set(h *shard.Handoff) {
	f.mu.Lock()
	f.h = h
	f.mu.Unlock()
}

// saves records what a Checkpointer saved, batch by batch.
type saves struct {
	mu      sync.Mutex
	batches [][]service.ShardHandoff
	err     error
	saved   chan struct{}
}

func newSaves() *saves { return &saves{saved: make(chan struct{}, 100)} }

func (s *saves) save(_ context.Context, recs []service.ShardHandoff) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches = append(s.batches, recs)
	s.saved <- struct{}{}
	return s.err
}

func (s *saves) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.batches)
}

func (s *saves) last() map[int]*shard.Handoff {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[int]*shard.Handoff{}
	for _, r := range s.batches[len(s.batches)-1] {
		out[r.ShardID] = r.Handoff
	}
	return out
}

func (s *saves) wait(t *testing.T) {
	t.Helper()
	select {
	case <-s.saved:
	case <-time.After(5 * time.Second):
		t.Fatal("no checkpoint saved")
	}
}

// A pool writes at most once per interval, only the records whose acked
// seq moved; a new session is saved at once, without waiting for the
// interval, and a shard that lost its session has its record deleted; the
// age gauge follows each shard.
func TestCheckpointerSavesOnlyWhatMovedOncePerInterval(t *testing.T) {
	a, b := &fakeShard{id: 4, h: record("a", 10)}, &fakeShard{id: 5}
	sv := newSaves()
	reg := prometheus.NewRegistry()
	metrics := NewCheckpointMetrics(reg)
	const interval = 300 * time.Millisecond
	cp := StartCheckpoints(CheckpointConfig{Interval: interval, Save: sv.save, Metrics: metrics}, []ResumeSource{a, b})
	defer cp.Stop()

	sv.wait(t) // at once: shard 4's session; shard 5 has none yet
	if got := sv.last(); len(got) != 1 || got[4].Seq != 10 {
		t.Fatalf("first save %v, want shard 4 at seq 10", got)
	}
	time.Sleep(3 * interval)
	if n := sv.count(); n != 1 {
		t.Fatalf("%d saves while nothing moved, want 1", n)
	}

	b.set(record("b", 1)) // an IDENTIFY: saved without waiting for the interval
	sv.wait(t)
	if got := sv.last(); len(got) != 1 || got[5].SessionID != "b" {
		t.Fatalf("save %v, want shard 5's new session alone", got)
	}
	a.set(record("a", 12)) // a seq that moved: at the next interval
	sv.wait(t)
	if got := sv.last(); len(got) != 1 || got[4].Seq != 12 {
		t.Fatalf("save %v, want shard 4 at seq 12 alone", got)
	}
	if n := testutil.CollectAndCount(metrics, "gateway_session_checkpoint_age_seconds"); n != 2 {
		t.Fatalf("%d age gauges, want one per shard with a session", n)
	}

	b.set(nil) // op 9: the session is gone
	sv.wait(t)
	if got := sv.last(); len(got) != 1 || got[5] != nil {
		t.Fatalf("save %v, want shard 5's record deleted", got)
	}
	if n := testutil.CollectAndCount(metrics, "gateway_session_checkpoint_age_seconds"); n != 1 {
		t.Fatalf("%d age gauges after shard 5 lost its session, want 1", n)
	}
	if v := testutil.ToFloat64(metrics.Writes.WithLabelValues("ok")); v != 4 {
		t.Fatalf("writes ok %v, want 4", v)
	}
	if v := testutil.ToFloat64(metrics.Records); v != 4 {
		t.Fatalf("records written %v, want 4", v)
	}
}

// Between two intervals only new or lost sessions are saved: a seq that
// moves waits for the interval.
func TestCheckpointerSavesAMovedSeqOnlyAtTheInterval(t *testing.T) {
	a := &fakeShard{id: 0, h: record("a", 1)}
	sv := newSaves()
	const interval = time.Second
	cp := StartCheckpoints(CheckpointConfig{Interval: interval, Save: sv.save}, []ResumeSource{a})
	defer cp.Stop()
	sv.wait(t)
	start := time.Now()
	a.set(record("a", 2))
	sv.wait(t)
	if d := time.Since(start); d < interval/2 {
		t.Fatalf("a moved seq saved %v after the first save, before the interval (%v)", d, interval)
	}
}

// A quiet shard's record is written again before it ages out of
// HANDOFF_MAX_AGE (KeepAlive), though its seq did not move.
func TestCheckpointerRewritesAQuietShardsRecordBeforeItAgesOut(t *testing.T) {
	a := &fakeShard{id: 0, h: record("a", 10)}
	sv := newSaves()
	cp := StartCheckpoints(CheckpointConfig{Interval: 50 * time.Millisecond, KeepAlive: 300 * time.Millisecond, Save: sv.save}, []ResumeSource{a})
	defer cp.Stop()
	sv.wait(t)
	start := time.Now()
	sv.wait(t)
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("rewritten after %v, before the keep-alive", d)
	}
	if got := sv.last(); got[0].Seq != 10 {
		t.Fatalf("rewrite %v", got)
	}
}

// Refused once (the lock is gone), a Checkpointer writes nothing more; a
// failure (Consul unreachable) is retried at the next interval.
func TestCheckpointerStopsForGoodWhenTheLockIsLost(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		again bool
	}{
		{"lock lost", ErrLockLost, false},
		{"unreachable", errors.New("connection refused"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &fakeShard{id: 0, h: record("a", 1)}
			sv := newSaves()
			sv.err = tc.err
			metrics := NewCheckpointMetrics(nil)
			cp := StartCheckpoints(CheckpointConfig{Interval: 50 * time.Millisecond, Save: sv.save, Metrics: metrics}, []ResumeSource{a})
			defer cp.Stop()
			sv.wait(t)
			time.Sleep(300 * time.Millisecond)
			if again := sv.count() > 1; again != tc.again {
				t.Fatalf("%d saves after a %v, want another: %v", sv.count(), tc.err, tc.again)
			}
			result := map[bool]string{false: "refused", true: "failed"}[tc.again]
			if v := testutil.ToFloat64(metrics.Writes.WithLabelValues(result)); v < 1 {
				t.Fatalf("writes %s %v", result, v)
			}
		})
	}
}

package discordsim

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/shardpool/gateway/service/event"
)

// store stands in for JetStream's duplicate window: one entry per event ID.
type store struct {
	mu  sync.Mutex
	ids map[string]int // event ID → times published
}

func (s *store) publish(id string) {
	s.mu.Lock()
	s.ids[id]++
	s.mu.Unlock()
}

// reshardReader is one session's reader publishing as a generation of a
// reshard would: content IDs for dispatches that have one once a next
// generation exists, and the keyless ones on its side of each guild's
// handover point, with the (shard, session, seq) ID.
type reshardReader struct {
	c        *testClient
	shard    int
	session  string
	isNew    bool
	overlap  *atomic.Bool // a next generation exists
	handover *event.Handover
	stop     atomic.Bool
	lastSeq  atomic.Int64
	done     chan struct{}
}

func (r *reshardReader) run(t *testing.T, st *store) {
	defer close(r.done)
	for p := range r.c.msgs {
		if r.stop.Load() {
			return
		}
		if p.Op != OpDispatch {
			continue
		}
		r.lastSeq.Store(p.seq())
		if typ := p.typ(); typ != "READY" && typ != "GUILD_CREATE" { // the session's own
			r.publish(t, st, p)
		}
	}
}

func (r *reshardReader) publish(t *testing.T, st *store, p payload) {
	typ, seq, d := p.typ(), p.seq(), []byte(p.D)
	f, err := event.ParseFields(typ, d)
	if err != nil {
		t.Errorf("%s: %v", typ, err)
		return
	}
	r.handover.Observe(seq, f.GuildID, typ, d)
	switch id, keyed := event.ContentID(typ, d); {
	case keyed && r.overlap.Load():
		st.publish(id)
	case keyed || r.handover.After(f.GuildID, seq) == r.isNew:
		st.publish(event.ID(r.shard, r.session, seq))
	}
}

func startReaders(t *testing.T, srv *Server, total int, isNew bool, overlap *atomic.Bool, at time.Time, st *store) []*reshardReader {
	var out []*reshardReader
	for shard := 0; shard < total; shard++ {
		c, ready := connectReady(t, srv, CompressNone, shard, total, allGeneratedIntents)
		r := &reshardReader{c: c, shard: shard, session: ready.SessionID, isNew: isNew, overlap: overlap,
			handover: event.NewHandover(at), done: make(chan struct{})}
		go r.run(t, st)
		out = append(out, r)
	}
	return out
}

// TestTwoShardCountsStoreEveryDispatchOnce reshards 2 → 4 under generated
// traffic the way the gateway's orchestration is meant to (content IDs
// through the overlap, keyless dispatches handed over per guild at an
// instant both generations know), and checks against the simulator's
// ledger that every generated dispatch was stored exactly once.
func TestTwoShardCountsStoreEveryDispatchOnce(t *testing.T) {
	srv := startServer(t, Config{Guilds: 8, LenientIdentify: true, MaxConcurrency: 4})
	st := &store{ids: map[string]int{}}
	var overlap atomic.Bool
	at := time.Now().Add(800 * time.Millisecond) // the cut-over instant, written ahead
	old := startReaders(t, srv, 2, false, &overlap, at, st)
	srv.SetEventRate(20)
	time.Sleep(200 * time.Millisecond)

	overlap.Store(true) // the next generation's plan is written
	next := startReaders(t, srv, 4, true, &overlap, at, st)
	time.Sleep(time.Until(at))

	// The old generation closes once each of its guilds is past its point.
	if err := srv.WaitFor(waitCtx(t), func() bool {
		for _, r := range old {
			if r.handover.PassedGuilds() < len(srv.ShardGuilds(r.shard, 2)) {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatal("the old generation never passed every guild's handover point")
	}
	for _, r := range old {
		r.stop.Store(true)
		_ = r.c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	}
	for _, r := range old {
		<-r.done // its connection closed: it publishes nothing more
	}
	time.Sleep(200 * time.Millisecond)
	srv.SetEventRate(0)
	time.Sleep(100 * time.Millisecond) // the generator sees the new rate
	for _, r := range next {
		if err := srv.WaitFor(waitCtx(t), func() bool {
			return r.lastSeq.Load() == sessionSeq(srv, r.session)
		}); err != nil {
			t.Fatalf("new shard %d did not read its session to the end", r.shard)
		}
	}

	st.mu.Lock() // nothing is published from here on
	defer st.mu.Unlock()
	keyOf := map[string]uint64{} // every ID a copy could be stored under → its dispatch
	generated := map[uint64]bool{}
	for _, d := range srv.Dispatches() {
		if d.Key == 0 {
			continue
		}
		generated[d.Key] = true
		keyOf[event.ID(d.Shard, d.SessionID, d.Seq)] = d.Key
		if id, ok := event.ContentID(d.Type, d.Data); ok {
			keyOf[id] = d.Key
		}
	}
	stored := map[uint64]int{}
	for id := range st.ids {
		key, ok := keyOf[id]
		if !ok {
			t.Fatalf("stored ID %s is no generated dispatch's", id)
		}
		stored[key]++
	}
	for key := range generated {
		if stored[key] != 1 {
			t.Errorf("dispatch %d stored %d times, want once", key, stored[key])
		}
	}
	if t.Failed() || len(generated) < 100 {
		t.Fatalf("%d dispatches generated (want 100 or more), %d stored", len(generated), len(stored))
	}
	n := 0
	for _, k := range st.ids {
		n += k
	}
	t.Logf("%d dispatches, each stored once; %d publishes", len(generated), n)
}

func sessionSeq(srv *Server, id string) int64 {
	for _, s := range srv.Sessions() {
		if s.ID == id {
			return s.Seq
		}
	}
	return -1
}

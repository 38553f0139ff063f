package discordsim

import (
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// endedShardConn waits until the connection's ShardConn has ended and
// returns the record.
func endedShardConn(t *testing.T, srv *Server, connID int64) ShardConn {
	t.Helper()
	var got ShardConn
	err := srv.WaitFor(waitCtx(t), func() bool {
		for _, sc := range srv.Record().ShardConns {
			if sc.ConnID == connID && !sc.Ended.IsZero() {
				got = sc
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("conn %d: no ended ShardConn: %+v", connID, srv.Record().ShardConns)
	}
	return got
}

func TestShardConnRecordsClaimEndAndLabel(t *testing.T) {
	srv := startServer(t, Config{ConnLabel: func(r *http.Request) string { return "client-" + r.URL.Query().Get("v") }})
	c, ready := connectReady(t, srv, CompressNone, 0, 1, allIntents)
	rec := srv.Record()
	if len(rec.ShardConns) != 1 {
		t.Fatalf("ShardConns %+v, want one", rec.ShardConns)
	}
	sc := rec.ShardConns[0]
	id := rec.Identifies[0]
	if sc.Shard != 0 || sc.SessionID != ready.SessionID || sc.Label != "client-10" || sc.ConnID != id.ConnID ||
		!sc.Claimed.Equal(id.At) || !sc.Ended.IsZero() {
		t.Fatalf("open ShardConn %+v (identify %+v)", sc, id)
	}

	before := time.Now()
	c.send(map[string]any{"op": 99}) // unknown opcode: the server closes with 4001
	c.expectClose()
	sc = endedShardConn(t, srv, id.ConnID)
	if sc.Ended.Before(before) || sc.EndedBy == "" {
		t.Fatalf("ended ShardConn %+v", sc)
	}
}

func TestShardConnEndsWhenTheClientClosesOrVanishes(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(c *testClient)
		want string
	}{
		{"close frame", func(c *testClient) {
			_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4000, "bye"), time.Now().Add(time.Second))
		}, ConnEndClientClose},
		{"TCP gone", func(c *testClient) { c.close() }, ConnEndClientGone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, Config{})
			c, _ := connectReady(t, srv, CompressNone, 0, 1, allIntents)
			tc.end(c)
			if sc := endedShardConn(t, srv, srv.Record().Identifies[0].ConnID); sc.EndedBy != tc.want {
				t.Fatalf("ended by %q, want %q", sc.EndedBy, tc.want)
			}
		})
	}
}

// A client that closes its connection before it identifies the shard again
// on a new one leaves no overlap; one that identifies the shard while its
// first connection is still open does, and so does a RESUME that supersedes
// a live connection.
func TestOverlapsAreClaimsOfAShardWhileAnotherConnectionOfItIsOpen(t *testing.T) {
	t.Run("close then identify: none", func(t *testing.T) {
		srv := startServer(t, Config{IdentifyWindow: 50 * time.Millisecond})
		c, _ := connectReady(t, srv, CompressNone, 0, 1, allIntents)
		c.close()
		endedShardConn(t, srv, srv.Record().Identifies[0].ConnID)
		time.Sleep(60 * time.Millisecond) // the identify window
		connectReady(t, srv, CompressNone, 0, 1, allIntents)
		rec := srv.Record()
		if len(rec.ShardConns) != 2 || len(rec.Overlaps()) != 0 {
			t.Fatalf("ShardConns %+v, overlaps %+v; want two, none", rec.ShardConns, rec.Overlaps())
		}
	})
	t.Run("identify while the first is open", func(t *testing.T) {
		srv := startServer(t, Config{IdentifyWindow: 50 * time.Millisecond, MaxConcurrency: 2})
		connectReady(t, srv, CompressNone, 1, 2, allIntents)
		time.Sleep(60 * time.Millisecond)
		connectReady(t, srv, CompressNone, 1, 2, allIntents)
		connectReady(t, srv, CompressNone, 0, 2, allIntents) // another shard: no overlap
		ov := srv.Record().Overlaps()
		if len(ov) != 1 || ov[0].Shard != 1 || !ov[0].EarlierIsOpen || ov[0].Duration <= 0 {
			t.Fatalf("overlaps %+v, want shard 1's first connection still open", ov)
		}
	})
	t.Run("resume superseding a live connection", func(t *testing.T) {
		srv := startServer(t, Config{})
		_, ready := connectReady(t, srv, CompressNone, 0, 1, allIntents)
		c2 := dial(t, srv, "/resume", CompressNone)
		c2.expectOp(OpHello)
		c2.resume(srv.cfg.Token, ready.SessionID, 1)
		c2.expectDispatch("RESUMED")
		first := endedShardConn(t, srv, srv.Record().Identifies[0].ConnID)
		ov := srv.Record().Overlaps()
		if len(ov) != 1 || ov[0].EarlierIsOpen || ov[0].Earlier.ConnID != first.ConnID || first.EndedBy != ConnEndServer {
			t.Fatalf("overlaps %+v (first %+v), want the superseded connection, ended by the server", ov, first)
		}
	})
}

// A rejected IDENTIFY still claims the shard: Discord's rule is about the
// attempt.
func TestARateLimitedIdentifyStillClaimsTheShard(t *testing.T) {
	srv := startServer(t, Config{IdentifyWindow: time.Minute})
	connectReady(t, srv, CompressNone, 0, 1, allIntents)
	c := dial(t, srv, "/gateway", CompressNone)
	c.expectOp(OpHello)
	c.identify(srv.cfg.Token, 0, 1, allIntents)
	c.expectOp(OpInvalidSession)
	rec := srv.Record()
	if len(rec.ShardConns) != 2 || rec.ShardConns[1].SessionID != "" || len(rec.Overlaps()) != 1 {
		t.Fatalf("ShardConns %+v, overlaps %+v", rec.ShardConns, rec.Overlaps())
	}
}

func TestOverlapsOnMadeUpRecords(t *testing.T) {
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	conn := func(id int64, shard, claimed, ended int) ShardConn {
		sc := ShardConn{ConnID: id, Shard: shard, Claimed: at(claimed)}
		if ended >= 0 {
			sc.Ended = at(ended)
		}
		return sc
	}
	tests := []struct {
		name  string
		conns []ShardConn
		want  []time.Duration
	}{
		{"one after the other", []ShardConn{conn(1, 0, 0, 100), conn(2, 0, 100, 200), conn(3, 0, 250, -1)}, nil},
		{"other shards do not count", []ShardConn{conn(1, 0, 0, 100), conn(2, 1, 50, 200)}, nil},
		{"claimed 30 ms before the end", []ShardConn{conn(1, 0, 0, 100), conn(2, 0, 70, 200)}, []time.Duration{30 * time.Millisecond}},
		{"out of order in the record", []ShardConn{conn(2, 0, 70, 200), conn(1, 0, 0, 100)}, []time.Duration{30 * time.Millisecond}},
		{"still open at the snapshot", []ShardConn{conn(1, 0, 0, -1), conn(2, 0, 900, -1)}, []time.Duration{100 * time.Millisecond}},
		{"one open, two later", []ShardConn{conn(1, 0, 0, -1), conn(2, 0, 500, 600), conn(3, 0, 700, -1)},
			[]time.Duration{500 * time.Millisecond, 300 * time.Millisecond}},
		{"three at once", []ShardConn{conn(1, 0, 0, 300), conn(2, 0, 100, 300), conn(3, 0, 200, 300)},
			[]time.Duration{200 * time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ov := Record{ShardConns: tt.conns, At: at(1000)}.Overlaps()
			if len(ov) != len(tt.want) {
				t.Fatalf("overlaps %+v, want %d", ov, len(tt.want))
			}
			for i, o := range ov {
				if o.Duration != tt.want[i] {
					t.Errorf("overlap %d lasted %v, want %v", i, o.Duration, tt.want[i])
				}
			}
		})
	}
}

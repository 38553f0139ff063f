package discordsim

import (
	"testing"
	"time"
)

func TestWriteDelayHoldsEveryFrameInOrder(t *testing.T) {
	srv := startServer(t, Config{Shards: 2, MaxConcurrency: 2})
	c, _ := connectReady(t, srv, CompressZlib, 0, 2, 0)
	other, _ := connectReady(t, srv, CompressNone, 1, 2, 0)
	const d = 300 * time.Millisecond
	srv.SetWriteDelay(0, d)
	if got := srv.WriteDelay(0); got != d {
		t.Fatalf("WriteDelay(0) = %v, want %v", got, d)
	}

	start := time.Now()
	for i := 0; i < 3; i++ {
		if _, err := srv.Dispatch(0, "MARKER", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	c.heartbeat()
	var seqs []int64
	for len(seqs) < 3 {
		p := c.expectDispatch("MARKER")
		if len(seqs) == 0 {
			if late := time.Since(start); late < d {
				t.Fatalf("first delayed frame arrived after %v, want at least %v", late, d)
			}
		}
		seqs = append(seqs, p.seq())
	}
	if seqs[0] >= seqs[1] || seqs[1] >= seqs[2] {
		t.Fatalf("delayed frames out of order: seqs %v", seqs)
	}
	// The ACK is delayed too, so it comes after the dispatches queued
	// before the heartbeat.
	c.expectOp(OpHeartbeatACK)

	// Other shards are not affected.
	start = time.Now()
	if _, err := srv.Dispatch(1, "MARKER", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	other.expectDispatch("MARKER")
	if took := time.Since(start); took >= d {
		t.Errorf("shard 1 frame took %v: the delay leaked to another shard", took)
	}

	// Frames already queued when the delay goes away are not held back.
	srv.SetWriteDelay(0, 0)
	start = time.Now()
	if _, err := srv.Dispatch(0, "MARKER", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	c.expectDispatch("MARKER")
	if took := time.Since(start); took >= d {
		t.Errorf("frame took %v after the delay was turned off", took)
	}
	var delays []string
	for _, a := range srv.Record().Actions {
		if a.Kind == ActionWriteDelay && a.Shard == 0 {
			delays = append(delays, a.Detail)
		}
	}
	if len(delays) != 2 || delays[0] != d.String() || delays[1] != "0s" {
		t.Errorf("write_delay actions %v, want [%v 0s]", delays, d)
	}
}

func TestWriteDelayAppliesToNewConnectionsAndDiesWithThem(t *testing.T) {
	srv := startServer(t, Config{})
	c, ready := connectReady(t, srv, CompressNone, 0, 1, 0)
	const d = 250 * time.Millisecond
	srv.SetWriteDelay(0, d)
	if _, err := srv.Dispatch(0, "MARKER", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	// Dropped while the frame waits: it is never written, and the writer
	// does not linger on the dead connection.
	if err := srv.Drop(0); err != nil {
		t.Fatal(err)
	}
	c.close()
	if err := srv.WaitFor(waitCtx(t), func() bool { return srv.Stats().LiveConnections == 0 }); err != nil {
		t.Fatal(err)
	}
	for _, l := range srv.Dispatches() {
		if l.Type == "MARKER" && l.Written {
			t.Fatalf("a frame held by the delay was written to a dropped connection")
		}
	}
	// A RESUME on a new connection binds it to the shard: the replay is
	// delayed as well.
	c2 := dial(t, srv, "/resume", CompressNone)
	c2.expectOp(OpHello)
	start := time.Now()
	c2.resume(srv.cfg.Token, ready.SessionID, 1)
	c2.expectDispatch("MARKER")
	if late := time.Since(start); late < d {
		t.Fatalf("replay arrived after %v, want at least %v", late, d)
	}
	c2.expectDispatch("RESUMED")
}

func TestHeartbeatGraceWidensTheAllowance(t *testing.T) {
	const interval, grace = 50 * time.Millisecond, 400 * time.Millisecond
	srv := startServer(t, Config{HeartbeatInterval: interval, HeartbeatGrace: grace})
	c := dial(t, srv, "/gateway", CompressNone)
	c.expectOp(OpHello)
	time.Sleep(3 * interval) // late by the default allowance, not by this one
	c.heartbeat()
	c.expectOp(OpHeartbeatACK)
	if v := srv.Record().ViolationsOf(ViolationHeartbeatLate); len(v) != 0 {
		t.Fatalf("heartbeat within the grace recorded as late: %+v", v)
	}
	beat := time.Now()
	// A heartbeat that never comes is still a violation, once the grace is
	// over.
	if err := srv.WaitFor(waitCtx(t), func() bool { return len(srv.Record().ViolationsOf(ViolationHeartbeatLate)) > 0 }); err != nil {
		t.Fatal(err)
	}
	if after := time.Since(beat); after < interval+grace {
		t.Fatalf("missing heartbeat recorded %v after the last one, before interval+grace %v", after, interval+grace)
	}
}

package shard

import "testing"

func TestAckTrackerResumePointStopsAtFirstUnacked(t *testing.T) {
	var tr ackTracker
	gen := tr.reset(0)
	tr.add(1, true)  // READY
	tr.add(2, false) // published
	tr.add(3, true)  // not published
	tr.add(4, false)
	if _, acked, seen := tr.snapshot(); acked != 1 || seen != 4 {
		t.Fatalf("acked=%d seen=%d, want 1 and 4", acked, seen)
	}
	tr.done(gen, 4)
	if _, acked, _ := tr.snapshot(); acked != 1 {
		t.Fatalf("acked=%d, want 1: seq 2 is still in flight", acked)
	}
	tr.done(gen, 2)
	if _, acked, _ := tr.snapshot(); acked != 4 {
		t.Fatalf("acked=%d, want 4", acked)
	}
}

func TestAckTrackerIgnoresAcksOfAnOlderSession(t *testing.T) {
	var tr ackTracker
	old := tr.reset(0)
	tr.add(1, false)
	tr.reset(0)
	tr.add(1, false)
	tr.done(old, 1)
	if _, acked, _ := tr.snapshot(); acked != 0 {
		t.Fatalf("acked=%d: an ack of the previous session moved the new one", acked)
	}
}

func TestAckTrackerReplayedSeqIsNotTrackedTwice(t *testing.T) {
	var tr ackTracker
	gen := tr.reset(0)
	if !tr.add(1, false) {
		t.Fatal("first add must be new")
	}
	if tr.add(1, false) {
		t.Fatal("a replayed seq must not be tracked again")
	}
	tr.done(gen, 1)
	if _, acked, _ := tr.snapshot(); acked != 1 {
		t.Fatalf("acked=%d, want 1", acked)
	}
}

func TestAckTrackerManyPendingStaysCorrect(t *testing.T) {
	var tr ackTracker
	gen := tr.reset(10)
	for s := int64(11); s <= 10010; s++ {
		tr.add(s, false)
	}
	// Ack in reverse: nothing advances until the first one lands.
	for s := int64(10010); s > 11; s-- {
		tr.done(gen, s)
	}
	if _, acked, _ := tr.snapshot(); acked != 10 {
		t.Fatalf("acked=%d, want 10", acked)
	}
	tr.done(gen, 11)
	if _, acked, _ := tr.snapshot(); acked != 10010 {
		t.Fatalf("acked=%d, want 10010", acked)
	}
}

package shard

import (
	"fmt"
	"strings"
	"testing"
)

// Discord's docs, Transport Compression, zlib-stream: "you should push
// received data to a buffer until you receive the 4-byte Z_SYNC_FLUSH suffix
// (00 00 ff ff). After you receive the Z_SYNC_FLUSH suffix, you can then
// decompress the buffer." A payload may therefore arrive in several
// websocket messages, and a message that does not end with the suffix is
// not an error.
func TestZlibPayloadSplitAcrossMessagesIsReassembledWithoutReconnecting(t *testing.T) {
	r := runShard(t, CompressionZlibStream, Limits{})
	// Every payload from here on comes in three messages, cut at arbitrary
	// points: some inside the suffix, some so that a piece ends with part
	// of it.
	r.sim.SetSplit(0, 3)

	const n = 60
	var want []simDispatched
	for i := 0; i < n; i++ {
		if i == n/2 {
			// A heartbeat request and its ACK are split too.
			if err := r.sim.RequestHeartbeat(0); err != nil {
				t.Errorf("heartbeat request: %v: the shard left its connection", err)
			}
		}
		note := fmt.Sprintf("member %d ", i) + strings.Repeat("of a large guild ", i%7)
		want = append(want, sendDispatch(t, r.sim, "GUILD_MEMBER_ADD", memberAddBody(i, note)))
	}
	last := want[len(want)-1].Seq
	r.waitUnlessReconnected(t, "every split dispatch published and acked", func() bool {
		return r.pub.has(last) && r.shard.Status().LastAckedSeq >= last
	})

	expectPublishedExactly(t, r.pub, want)
	r.expectOneConnection(t)
	if bad := r.counterByLabel(t, "gateway_frames_malformed_total", "reason"); len(bad) != 0 {
		t.Errorf("gateway_frames_malformed_total by reason %v, want none", bad)
	}
	if acked := r.shard.Status().LastAckedSeq; acked < last {
		t.Errorf("resume point seq %d, want %d", acked, last)
	}
}

package discordsim

import (
	"bytes"
	"compress/zlib"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// docsZlibSource reads a zlib-stream connection the way Discord's docs say
// a client must: it buffers websocket messages until one ends with
// 00 00 ff ff and only then hands the buffer to the (single) inflater. It
// remembers how each payload was cut.
type docsZlibSource struct {
	t      *testing.T
	ws     *websocket.Conn
	cur    []byte
	pieces [][][]byte // per payload, the websocket messages it came in
}

func (s *docsZlibSource) Read(p []byte) (int, error) {
	for len(s.cur) == 0 {
		var buf []byte
		var msgs [][]byte
		for !bytes.HasSuffix(buf, zlibSuffix) {
			_ = s.ws.SetReadDeadline(time.Now().Add(waitTimeout))
			typ, data, err := s.ws.ReadMessage()
			if err != nil {
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				s.t.Errorf("zlib-stream message of type %d, want binary", typ)
			}
			msgs = append(msgs, data)
			buf = append(buf, data...)
		}
		s.pieces = append(s.pieces, msgs)
		s.cur = buf
	}
	n := copy(p, s.cur)
	s.cur = s.cur[n:]
	return n, nil
}

// docsZlibClient is a raw zlib-stream gateway client that decodes payloads
// one at a time on the test goroutine.
type docsZlibClient struct {
	t   *testing.T
	ws  *websocket.Conn
	src *docsZlibSource
	dec *json.Decoder
}

func dialDocsZlib(t *testing.T, srv *Server) *docsZlibClient {
	t.Helper()
	u := wsURL(srv.URL()) + "/gateway?v=10&encoding=json&compress=" + string(CompressZlib)
	ws, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	_ = resp.Body.Close()
	t.Cleanup(func() { _ = ws.Close() })
	src := &docsZlibSource{t: t, ws: ws}
	zr, err := zlib.NewReader(src) // reads the header, in HELLO
	if err != nil {
		t.Fatalf("zlib header: %v", err)
	}
	return &docsZlibClient{t: t, ws: ws, src: src, dec: json.NewDecoder(zr)}
}

// next decodes the next payload and returns it with the messages it came
// in; one payload must never need more than its own messages.
func (c *docsZlibClient) next() (payload, [][]byte) {
	c.t.Helper()
	var p payload
	if err := c.dec.Decode(&p); err != nil {
		c.t.Fatalf("decode payload %d: %v", len(c.src.pieces), err)
	}
	if len(c.src.cur) != 0 {
		c.t.Fatalf("payload %d (op %d %s) did not use all of its buffered messages", len(c.src.pieces), p.Op, p.typ())
	}
	return p, c.src.pieces[len(c.src.pieces)-1]
}

func (c *docsZlibClient) send(v any) {
	c.t.Helper()
	b, _ := json.Marshal(v)
	if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		c.t.Fatal(err)
	}
}

func TestSplitCutsZlibPayloadsIntoPiecesAtArbitraryPoints(t *testing.T) {
	srv := startServer(t, Config{Shards: 2, MaxConcurrency: 2})
	const pieces = 3
	srv.SetSplit(0, pieces)
	if got := srv.Split(0); got != pieces {
		t.Fatalf("Split(0) = %d, want %d", got, pieces)
	}
	c := dialDocsZlib(t, srv)
	if p, msgs := c.next(); p.Op != OpHello || len(msgs) != 1 {
		t.Fatalf("first payload op %d in %d messages, want HELLO whole (the connection is not bound to a shard yet)", p.Op, len(msgs))
	}
	c.send(identifyPayload(srv.cfg.Token, 0, 2, 0))
	// Another shard's connection is not split: testClient fails on a
	// payload that needs more than one message.
	other, _ := connectReady(t, srv, CompressZlib, 1, 2, 0)

	const n = 40
	for i := 0; i < n; i++ {
		body := fmt.Sprintf(`{"i":%d,"pad":%q}`, i, strings.Repeat("x", i*37))
		if _, err := srv.Dispatch(0, "MARKER", []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := srv.Dispatch(1, "MARKER", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	other.expectDispatch("MARKER")

	var inSuffix, elsewhere int
	check := func(what string, msgs [][]byte) {
		t.Helper()
		if len(msgs) != pieces {
			t.Errorf("%s came in %d messages, want %d", what, len(msgs), pieces)
		}
		for i, m := range msgs[:len(msgs)-1] {
			if len(m) == 0 || bytes.HasSuffix(m, zlibSuffix) {
				t.Errorf("%s: piece %d of %d is empty or ends with the whole suffix", what, i, len(msgs))
			}
		}
		if last := msgs[len(msgs)-1]; len(last) <= len(zlibSuffix) {
			inSuffix++
		} else {
			elsewhere++
		}
	}
	p, msgs := c.next()
	if p.typ() != "READY" {
		t.Fatalf("got op %d %s, want READY", p.Op, p.typ())
	}
	check("READY", msgs)
	for i := 0; i < n; i++ {
		p, msgs := c.next()
		var d struct{ I int }
		if p.typ() != "MARKER" || json.Unmarshal(p.D, &d) != nil || d.I != i || p.seq() != int64(i+2) {
			t.Fatalf("payload %d: got %s s=%d d=%.60s, want MARKER i=%d s=%d", i, p.typ(), p.seq(), p.D, i, i+2)
		}
		check(fmt.Sprintf("MARKER %d", i), msgs)
	}
	// Non-dispatch payloads are split too.
	c.send(map[string]any{"op": OpHeartbeat, "d": n + 1})
	if p, msgs := c.next(); p.Op != OpHeartbeatACK {
		t.Fatalf("got op %d, want HEARTBEAT_ACK", p.Op)
	} else {
		check("HEARTBEAT_ACK", msgs)
	}
	if inSuffix == 0 || elsewhere == 0 {
		t.Errorf("%d payloads cut inside the suffix and %d elsewhere; want both kinds", inSuffix, elsewhere)
	}

	srv.SetSplit(0, 0)
	if _, err := srv.Dispatch(0, "MARKER", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if _, msgs := c.next(); len(msgs) != 1 {
		t.Errorf("payload after SetSplit(0, 0) came in %d messages, want 1", len(msgs))
	}
	var details []string
	for _, a := range srv.Record().Actions {
		if a.Kind == ActionSplit && a.Shard == 0 {
			details = append(details, a.Detail)
		}
	}
	if len(details) != 2 || details[0] != "3" || details[1] != "1" {
		t.Errorf("split actions %v, want [3 1]", details)
	}
}

func TestSplitLeavesZstdAndUncompressedPayloadsWhole(t *testing.T) {
	for _, comp := range []Compression{CompressZstd, CompressNone} {
		t.Run(compName(comp), func(t *testing.T) {
			srv := startServer(t, Config{})
			srv.SetSplit(0, 3)
			// testClient fails the test if a payload needs more than one
			// websocket message.
			c, _ := connectReady(t, srv, comp, 0, 1, 0)
			for i := 0; i < 10; i++ {
				if _, err := srv.Dispatch(0, "MARKER", []byte(fmt.Sprintf(`{"i":%d}`, i))); err != nil {
					t.Fatal(err)
				}
			}
			for i := 0; i < 10; i++ {
				c.expectDispatch("MARKER")
			}
		})
	}
}

func TestSplitZlibSplitterNeverEndsAPieceWithTheSuffix(t *testing.T) {
	// A message whose body happens to contain the suffix: cuts right after
	// it would make a client inflate half a payload.
	msg := bytes.Repeat([]byte{0x00, 0x00, 0xff, 0xff}, 64)
	z := newZlibSplitter(1)
	for k := 0; k < 200; k++ {
		cuts := z.cuts(msg, 5)
		for _, c := range cuts {
			if bytes.HasSuffix(msg[:c], zlibSuffix) {
				t.Fatalf("payload %d: cut at %d leaves a piece ending with the suffix", k, c)
			}
		}
	}
	if cuts := z.cuts([]byte{1, 2}, 5); len(cuts) != 1 {
		t.Errorf("a 2-byte message was cut %d times, want once (no empty pieces)", len(cuts))
	}
}

func TestOversizedDispatchIsWrittenAndReplayedOnResume(t *testing.T) {
	for _, comp := range []Compression{CompressNone, CompressZlib, CompressZstd} {
		t.Run(compName(comp), func(t *testing.T) {
			srv := startServer(t, Config{})
			c, ready := connectReady(t, srv, comp, 0, 1, 0)
			// 6 MiB: half incompressible, half one repeated byte, so every
			// write path (plain, deflate, zstd) sees a multi-MiB payload.
			big := oversizedBody(6 << 20)
			bigSeq, err := srv.Dispatch(0, "GUILD_CREATE", big)
			if err != nil {
				t.Fatal(err)
			}
			if p := c.expectDispatch("GUILD_CREATE"); !bytes.Equal(p.D, big) || p.seq() != bigSeq {
				t.Fatalf("live GUILD_CREATE s=%d (%d bytes) differs from the %d bytes sent as s=%d", p.seq(), len(p.D), len(big), bigSeq)
			}
			// The client goes away before acknowledging it; RESUME from
			// READY's seq must bring it back, followed by what came after.
			if err := srv.Drop(0); err != nil {
				t.Fatal(err)
			}
			c.close()
			if err := srv.WaitFor(waitCtx(t), func() bool { return srv.Stats().LiveConnections == 0 }); err != nil {
				t.Fatal(err)
			}
			if _, err := srv.Dispatch(0, "MARKER", []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			c2 := dial(t, srv, "/resume", comp)
			c2.expectOp(OpHello)
			c2.resume(srv.cfg.Token, ready.SessionID, 1)
			if p := c2.expectDispatch("GUILD_CREATE"); !bytes.Equal(p.D, big) || p.seq() != bigSeq {
				t.Fatalf("replayed GUILD_CREATE s=%d (%d bytes) differs from the %d bytes sent as s=%d", p.seq(), len(p.D), len(big), bigSeq)
			}
			c2.expectDispatch("MARKER")
			c2.expectDispatch("RESUMED")
			for _, a := range srv.Record().Actions {
				if a.Kind == ActionWriteError || a.Kind == ActionSlowClientDrop {
					t.Errorf("the big payload broke the write path: %+v", a)
				}
			}
		})
	}
}

// oversizedBody returns a JSON object of about n bytes: pseudo-random
// letters, then one letter repeated.
func oversizedBody(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"id":"41771983423143937","noise":"`)
	x := uint32(2463534242)
	for i := 0; i < n/2; i++ {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b.WriteByte('a' + byte(x%26))
	}
	b.WriteString(`","fill":"`)
	b.WriteString(strings.Repeat("z", n/2))
	b.WriteString(`"}`)
	return b.Bytes()
}

func compName(c Compression) string {
	if c == CompressNone {
		return "none"
	}
	return string(c)
}

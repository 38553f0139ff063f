package discordsim

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/klauspost/compress/zstd"
)

// waitTimeout is deliberately generous: tests wait for events, they never
// assert on how fast something happened.
const waitTimeout = 15 * time.Second

// payload is a decoded gateway payload as a client sees it.
type payload struct {
	Op int             `json:"op"`
	D  json.RawMessage `json:"d"`
	S  *int64          `json:"s"`
	T  *string         `json:"t"`
}

func (p payload) typ() string {
	if p.T == nil {
		return ""
	}
	return *p.T
}

func (p payload) seq() int64 {
	if p.S == nil {
		return -1
	}
	return *p.S
}

// testClient is a minimal gateway client: one goroutine reads and decodes
// frames (plain, zlib-stream with one inflate context, or zstd-stream with
// one decoder) into msgs; the test sends with send.
type testClient struct {
	t    *testing.T
	ws   *websocket.Conn
	comp Compression

	msgs    chan payload
	done    chan struct{}
	reading bool // readLoop was started

	mu        sync.Mutex
	errs      []string
	closeErr  error
	frames    [][]byte // raw binary frames (compressed modes only)
	sendMu    sync.Mutex
	lastSeq   int64
	closeOnce sync.Once
}

// frameSource feeds websocket binary frames to a streaming decompressor one
// at a time. Read only asks for the next frame once the current one is used
// up, so counting frames tells whether a message needed more than its own.
type frameSource struct {
	c     *testClient
	cur   []byte
	count int
}

func (f *frameSource) Read(p []byte) (int, error) {
	for len(f.cur) == 0 {
		typ, data, err := f.c.ws.ReadMessage()
		if err != nil {
			return 0, err
		}
		if typ != websocket.BinaryMessage {
			f.c.fail("compressed mode got message type %d, want binary", typ)
		}
		f.c.mu.Lock()
		f.c.frames = append(f.c.frames, append([]byte(nil), data...))
		f.c.mu.Unlock()
		if f.c.comp == CompressZlib {
			if f.count == 0 && (len(data) < 2 || data[0] != 0x78) {
				f.c.fail("first zlib-stream frame does not start with a zlib header: % x", data[:min(4, len(data))])
			}
			if !bytes.HasSuffix(data, []byte{0, 0, 0xff, 0xff}) {
				f.c.fail("zlib-stream frame %d does not end with 00 00 ff ff", f.count)
			}
		}
		if f.c.comp == CompressZstd {
			// One zstd frame spans the connection: only the first message
			// may start with the frame magic number.
			magic := bytes.HasPrefix(data, []byte{0x28, 0xb5, 0x2f, 0xfd})
			if magic != (f.count == 0) {
				f.c.fail("zstd-stream message %d: starts with frame magic = %v", f.count, magic)
			}
		}
		f.count++
		f.cur = data
	}
	n := copy(p, f.cur)
	f.cur = f.cur[n:]
	return n, nil
}

func dial(t *testing.T, srv *Server, path string, comp Compression) *testClient {
	t.Helper()
	c := dialNoRead(t, srv, path, comp)
	c.reading = true
	go c.readLoop()
	return c
}

// dialNoRead connects without starting the read goroutine (slow client tests).
func dialNoRead(t *testing.T, srv *Server, path string, comp Compression) *testClient {
	t.Helper()
	u := wsURL(srv.URL()) + path + "?v=10&encoding=json"
	if comp != CompressNone {
		u += "&compress=" + string(comp)
	}
	ws, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	_ = resp.Body.Close()
	c := &testClient{t: t, ws: ws, comp: comp, msgs: make(chan payload, 100000), done: make(chan struct{})}
	t.Cleanup(func() {
		c.close()
		if c.reading {
			select {
			case <-c.done:
			case <-time.After(waitTimeout):
			}
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, e := range c.errs {
			t.Error(e)
		}
	})
	return c
}

func (c *testClient) fail(format string, args ...any) {
	c.mu.Lock()
	c.errs = append(c.errs, fmt.Sprintf(format, args...))
	c.mu.Unlock()
}

func (c *testClient) close() {
	c.closeOnce.Do(func() { _ = c.ws.Close() })
}

func (c *testClient) readLoop() {
	defer close(c.done)
	defer close(c.msgs)
	var err error
	switch c.comp {
	case CompressNone:
		for {
			var typ int
			var data []byte
			typ, data, err = c.ws.ReadMessage()
			if err != nil {
				break
			}
			if typ != websocket.TextMessage {
				c.fail("uncompressed mode got message type %d, want text", typ)
			}
			var p payload
			if jerr := json.Unmarshal(data, &p); jerr != nil {
				c.fail("bad JSON from server: %v: %q", jerr, data)
				continue
			}
			c.deliver(p)
		}
	default:
		src := &frameSource{c: c}
		var r io.Reader
		if c.comp == CompressZlib {
			// Standard library zlib: an independent implementation from the
			// klauspost writer the server uses.
			zr, zerr := zlib.NewReader(src)
			if zerr != nil {
				err = zerr
				break
			}
			r = zr
		} else {
			zd, zerr := zstd.NewReader(src, zstd.WithDecoderConcurrency(1))
			if zerr != nil {
				err = zerr
				break
			}
			defer zd.Close()
			r = zd
		}
		dec := json.NewDecoder(r)
		for n := 1; ; n++ {
			var p payload
			if err = dec.Decode(&p); err != nil {
				break
			}
			// One websocket message carries exactly one payload: decoding
			// payload n must have needed exactly n frames.
			if src.count != n {
				c.fail("payload %d (op %d %s) decoded after %d frames", n, p.Op, p.typ(), src.count)
			}
			c.deliver(p)
		}
	}
	c.mu.Lock()
	c.closeErr = err
	c.mu.Unlock()
}

func (c *testClient) deliver(p payload) {
	if p.S != nil {
		c.sendMu.Lock()
		c.lastSeq = *p.S
		c.sendMu.Unlock()
	}
	c.msgs <- p
}

// next returns the next payload, failing the test after waitTimeout.
func (c *testClient) next() payload {
	c.t.Helper()
	select {
	case p, ok := <-c.msgs:
		if !ok {
			c.t.Fatalf("connection ended while waiting for a payload: %v", c.err())
		}
		return p
	case <-time.After(waitTimeout):
		c.t.Fatalf("timed out waiting for a payload")
	}
	return payload{}
}

// expectOp returns the next payload, which must have opcode op.
func (c *testClient) expectOp(op int) payload {
	c.t.Helper()
	p := c.next()
	if p.Op != op {
		c.t.Fatalf("got op %d (t=%s d=%.200s), want op %d", p.Op, p.typ(), p.D, op)
	}
	return p
}

// expectDispatch returns the next payload, which must be a dispatch of typ.
func (c *testClient) expectDispatch(typ string) payload {
	c.t.Helper()
	p := c.expectOp(OpDispatch)
	if p.typ() != typ {
		c.t.Fatalf("got dispatch %s (s=%d), want %s", p.typ(), p.seq(), typ)
	}
	return p
}

// untilDispatch skips payloads until a dispatch of typ arrives and returns
// the skipped ones.
func (c *testClient) untilDispatch(typ string) (payload, []payload) {
	c.t.Helper()
	var skipped []payload
	for {
		p := c.next()
		if p.Op == OpDispatch && p.typ() == typ {
			return p, skipped
		}
		skipped = append(skipped, p)
	}
}

func (c *testClient) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeErr
}

// expectClose waits for the server to close the connection and returns the
// close code (0 if it ended without a close frame).
func (c *testClient) expectClose() (int, string) {
	c.t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case _, ok := <-c.msgs:
			if ok {
				continue
			}
			// gorilla reports a connection that ended without a close frame
			// as 1006; report that as 0, "no close frame".
			var ce *websocket.CloseError
			if errors.As(c.err(), &ce) && ce.Code != websocket.CloseAbnormalClosure {
				return ce.Code, ce.Text
			}
			return 0, ""
		case <-deadline:
			c.t.Fatalf("timed out waiting for the connection to close")
		}
	}
}

func (c *testClient) send(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	c.sendRaw(b)
}

func (c *testClient) sendRaw(b []byte) {
	c.t.Helper()
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *testClient) seqSeen() int64 {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	return c.lastSeq
}

func (c *testClient) heartbeat() {
	c.t.Helper()
	if s := c.seqSeen(); s > 0 {
		c.send(map[string]any{"op": OpHeartbeat, "d": s})
	} else {
		c.send(map[string]any{"op": OpHeartbeat, "d": nil})
	}
}

func identifyPayload(token string, shard, total int, intents int64) map[string]any {
	return map[string]any{"op": OpIdentify, "d": map[string]any{
		"token":      token,
		"intents":    intents,
		"shard":      []int{shard, total},
		"properties": map[string]string{"os": "linux", "browser": "shardpool-test", "device": "shardpool-test"},
	}}
}

func (c *testClient) identify(token string, shard, total int, intents int64) {
	c.t.Helper()
	c.send(identifyPayload(token, shard, total, intents))
}

func (c *testClient) resume(token, sessionID string, seq int64) {
	c.t.Helper()
	c.send(map[string]any{"op": OpResume, "d": map[string]any{"token": token, "session_id": sessionID, "seq": seq}})
}

// readyInfo is the subset of READY the tests check.
type readyInfo struct {
	V    int `json:"v"`
	User struct {
		ID       string `json:"id"`
		Username string `json:"username"`
		Bot      bool   `json:"bot"`
	} `json:"user"`
	Guilds []struct {
		ID          string `json:"id"`
		Unavailable bool   `json:"unavailable"`
	} `json:"guilds"`
	SessionID        string `json:"session_id"`
	ResumeGatewayURL string `json:"resume_gateway_url"`
	Shard            []int  `json:"shard"`
	Application      struct {
		ID    string `json:"id"`
		Flags int    `json:"flags"`
	} `json:"application"`
}

// connectReady dials, checks HELLO, identifies and returns READY.
func connectReady(t *testing.T, srv *Server, comp Compression, shard, total int, intents int64) (*testClient, readyInfo) {
	t.Helper()
	c := dial(t, srv, "/gateway", comp)
	c.expectOp(OpHello)
	c.identify(srv.cfg.Token, shard, total, intents)
	p := c.expectDispatch("READY")
	var r readyInfo
	if err := json.Unmarshal(p.D, &r); err != nil {
		t.Fatalf("READY: %v", err)
	}
	return c, r
}

func startServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	srv := New(cfg)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

func getJSON(t *testing.T, url, auth string, v any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q", ct)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("decode %s: %v", url, err)
	}
	return resp.StatusCode
}

package shard

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"testing"

	"github.com/gorilla/websocket"
)

// fakeMessage is one websocket message of a fakeSource.
type fakeMessage struct {
	typ  int
	data []byte
	err  error // returned after data instead of io.EOF
}

// fakeSource is a messageSource over a slice of messages, no network.
type fakeSource struct {
	msgs  []fakeMessage
	next  int
	end   error // returned once the messages run out; a 1000 close if nil
	chunk int   // most bytes per Read, to split reads as a socket does; 0: no limit
	r     bytes.Reader
}

func (s *fakeSource) NextReader() (int, io.Reader, error) {
	if s.next == len(s.msgs) {
		if s.end != nil {
			return 0, nil, s.end
		}
		return 0, nil, &websocket.CloseError{Code: websocket.CloseNormalClosure}
	}
	m := s.msgs[s.next]
	s.next++
	if m.err == nil && s.chunk == 0 {
		s.r.Reset(m.data) // no allocation, for the benchmarks
		return m.typ, &s.r, nil
	}
	return m.typ, &messageReader{data: m.data, err: m.err, chunk: s.chunk}, nil
}

type messageReader struct {
	data  []byte
	err   error
	chunk int
}

func (m *messageReader) Read(p []byte) (int, error) {
	if len(m.data) == 0 {
		if m.err != nil {
			return 0, m.err
		}
		return 0, io.EOF
	}
	if m.chunk > 0 && len(p) > m.chunk {
		p = p[:m.chunk]
	}
	n := copy(p, m.data)
	m.data = m.data[n:]
	return n, nil
}

func binaryMessages(frames ...[]byte) []fakeMessage {
	msgs := make([]fakeMessage, len(frames))
	for i, f := range frames {
		msgs[i] = fakeMessage{typ: websocket.BinaryMessage, data: f}
	}
	return msgs
}

// encodeStream compresses payloads as one connection's stream, one websocket
// message per payload (text messages when uncompressed).
func encodeStream(t testing.TB, compression string, payloads [][]byte) []fakeMessage {
	switch compression {
	case CompressionZlibStream:
		return binaryMessages(zlibStream(t, payloads)...)
	case CompressionZstdStream:
		return binaryMessages(zstdStream(t, payloads)...)
	}
	msgs := make([]fakeMessage, len(payloads))
	for i, p := range payloads {
		msgs[i] = fakeMessage{typ: websocket.TextMessage, data: p}
	}
	return msgs
}

// splitAt cuts a message into pieces at the given offsets.
func splitAt(m fakeMessage, cuts ...int) []fakeMessage {
	var out []fakeMessage
	prev := 0
	for _, c := range append(cuts, len(m.data)) {
		out = append(out, fakeMessage{typ: m.typ, data: m.data[prev:c]})
		prev = c
	}
	return out
}

// randomText is JSON-safe text that compresses poorly (about 6 bits a byte).
func randomText(rng *rand.Rand, n int) []byte {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
	b := make([]byte, n)
	for i := range b {
		b[i] = letters[rng.Intn(len(letters))]
	}
	return b
}

func dispatch(seq int, d []byte) []byte {
	return []byte(fmt.Sprintf(`{"t":"GUILD_CREATE","s":%d,"op":0,"d":{"x":"%s"}}`, seq, d))
}

// wantPayloads reads len(want) payloads and compares them.
func wantPayloads(t *testing.T, r *payloadReader, want ...[]byte) {
	t.Helper()
	for i, w := range want {
		got, err := r.Next()
		if err != nil {
			t.Fatalf("payload %d: %v", i, err)
		}
		if !bytes.Equal(got, w) {
			t.Fatalf("payload %d: got %d bytes %.40q, want %d bytes %.40q", i, len(got), got, len(w), w)
		}
	}
}

func wantOversize(t *testing.T, r *payloadReader, limit string, max, size int64, payload []byte) {
	t.Helper()
	_, err := r.Next()
	var oe *OversizeError
	if !errors.As(err, &oe) || !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want an *OversizeError wrapping ErrTooLarge", err)
	}
	if oe.Limit != limit || oe.Max != max || oe.Size != size {
		t.Fatalf("got %s limit %d size %d, want %s limit %d size %d", oe.Limit, oe.Max, oe.Size, limit, max, size)
	}
	if want := payload[:min(len(payload), prefixBytes)]; !bytes.Equal(oe.Prefix, want) {
		t.Fatalf("prefix %.60q, want %.60q", oe.Prefix, want)
	}
}

func totalBytes(msgs []fakeMessage) (n int) {
	for _, m := range msgs {
		n += len(m.data)
	}
	return n
}

func TestZlibPayloadSplitOverMessagesDecodes(t *testing.T) {
	payloads := sampleMessages(60) // some over the 32 KiB window
	cases := map[string]func(n int) []int{
		"two pieces":   func(n int) []int { return []int{n / 2} },
		"three pieces": func(n int) []int { return []int{n / 3, 2 * n / 3} },
		"every byte a message": func(n int) []int {
			cuts := make([]int, n-1)
			for i := range cuts {
				cuts[i] = i + 1
			}
			return cuts
		},
		"cut 1 byte before the end, inside the suffix":  func(n int) []int { return []int{n - 1} },
		"cut 2 bytes before the end, inside the suffix": func(n int) []int { return []int{n - 2} },
		"cut 3 bytes before the end, inside the suffix": func(n int) []int { return []int{n - 3} },
		"cut just before the suffix":                    func(n int) []int { return []int{n - 4} },
		"empty messages around a cut":                   func(n int) []int { return []int{0, n / 2, n / 2, n} },
	}
	for name, cuts := range cases {
		t.Run(name, func(t *testing.T) {
			var msgs []fakeMessage
			for i, m := range encodeStream(t, CompressionZlibStream, payloads) {
				if i%3 == 1 { // and whole payloads in between
					msgs = append(msgs, m)
					continue
				}
				msgs = append(msgs, splitAt(m, cuts(len(m.data))...)...)
			}
			var wire int
			r := newPayloadReader(&fakeSource{msgs: msgs, chunk: 1000}, CompressionZlibStream, DefaultLimits, func(n int) { wire += n })
			defer r.Close()
			wantPayloads(t, r, payloads...)
			if want := totalBytes(msgs); wire != want {
				t.Errorf("wire bytes %d, want %d", wire, want)
			}
		})
	}
}

func TestZstdPayloadIsOneMessage(t *testing.T) {
	payloads := sampleMessages(60)
	msgs := encodeStream(t, CompressionZstdStream, payloads)
	var wire int
	r := newPayloadReader(&fakeSource{msgs: msgs, chunk: 1000}, CompressionZstdStream, DefaultLimits, func(n int) { wire += n })
	defer r.Close()
	wantPayloads(t, r, payloads...)
	if want := totalBytes(msgs); wire != want {
		t.Errorf("wire bytes %d, want %d", wire, want)
	}
}

// oversizeStream is a small payload, one too large, one that refers back to
// the end of the large one (so it decodes only if the compression window saw
// all of the large one) and another small one.
func oversizeStream(huge []byte) [][]byte {
	return [][]byte{
		[]byte(`{"op":10,"d":{"heartbeat_interval":41250}}`),
		huge,
		dispatch(3, huge[len(huge)-2000:len(huge)-10]),
		[]byte(`{"op":11}`),
	}
}

func TestOversizeFrameIsDroppedAndTheStreamContinues(t *testing.T) {
	huge := dispatch(2, randomText(rand.New(rand.NewSource(3)), 256<<10)) // compresses to ~190 KiB
	payloads := oversizeStream(huge)
	limits := Limits{MaxFrameBytes: 64 << 10, MaxMessageBytes: 1 << 20}
	for _, tc := range []struct {
		name, compression string
		split             bool // the large payload over several messages
	}{
		{"uncompressed", CompressionNone, false},
		{"zlib-stream", CompressionZlibStream, false},
		{"zlib-stream split over messages", CompressionZlibStream, true},
		{"zstd-stream", CompressionZstdStream, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msgs := encodeStream(t, tc.compression, payloads)
			hugeMsgs := msgs[1:2]
			if tc.split {
				n := len(msgs[1].data)
				hugeMsgs = splitAt(msgs[1], 1000, n/3, n-2)
			}
			msgs = append(append(append([]fakeMessage(nil), msgs[0]), hugeMsgs...), msgs[2:]...)
			var wire int
			r := newPayloadReader(&fakeSource{msgs: msgs, chunk: 4096}, tc.compression, limits, func(n int) { wire += n })
			defer r.Close()
			wantPayloads(t, r, payloads[0])
			wantOversize(t, r, "frame", limits.MaxFrameBytes, int64(totalBytes(hugeMsgs)), huge)
			wantPayloads(t, r, payloads[2:]...)
			if want := totalBytes(msgs); wire != want {
				t.Errorf("wire bytes %d, want %d", wire, want)
			}
		})
	}
}

func TestOversizeMessageIsDroppedAndTheStreamContinues(t *testing.T) {
	// Compressible, so only the decompressed size is over.
	rng := rand.New(rand.NewSource(4))
	var d bytes.Buffer
	for d.Len() < 2<<20 {
		fmt.Fprintf(&d, "member%d-", rng.Intn(500))
	}
	huge := dispatch(2, d.Bytes())
	payloads := oversizeStream(huge)
	limits := Limits{MaxFrameBytes: 4 << 20, MaxMessageBytes: 1 << 20}
	for _, compression := range []string{CompressionNone, CompressionZlibStream, CompressionZstdStream} {
		t.Run(compression, func(t *testing.T) {
			r := newPayloadReader(&fakeSource{msgs: encodeStream(t, compression, payloads)}, compression, limits, nil)
			defer r.Close()
			wantPayloads(t, r, payloads[0])
			wantOversize(t, r, "message", int64(limits.MaxMessageBytes), int64(len(huge)), huge)
			wantPayloads(t, r, payloads[2:]...)
		})
	}
}

func TestZipBombIsDroppedWithBoundedMemory(t *testing.T) {
	bomb := dispatch(2, bytes.Repeat([]byte("a"), 64<<20))
	payloads := oversizeStream(bomb)
	limits := Limits{MaxFrameBytes: 1 << 20, MaxMessageBytes: 1 << 20}
	for _, compression := range []string{CompressionZlibStream, CompressionZstdStream} {
		t.Run(compression, func(t *testing.T) {
			msgs := encodeStream(t, compression, payloads)
			if n := len(msgs[1].data); n > 256<<10 {
				t.Fatalf("the bomb is %d bytes compressed, want it small", n)
			}
			r := newPayloadReader(&fakeSource{msgs: msgs}, compression, limits, nil)
			defer r.Close()
			wantPayloads(t, r, payloads[0])
			wantOversize(t, r, "message", int64(limits.MaxMessageBytes), int64(len(bomb)), bomb)
			if in, out := r.bufferCaps(); in > 1<<20 || out > 2<<20 {
				t.Errorf("buffers grew to %d and %d bytes for a %d-byte limit", in, out, limits.MaxMessageBytes)
			}
			wantPayloads(t, r, payloads[2:]...)
		})
	}
}

func TestBuffersShrinkAfterAnOutsizedPayload(t *testing.T) {
	big := dispatch(2, randomText(rand.New(rand.NewSource(5)), 3<<20))
	payloads := [][]byte{big, []byte(`{"op":11}`)}
	for _, compression := range []string{CompressionNone, CompressionZlibStream, CompressionZstdStream} {
		t.Run(compression, func(t *testing.T) {
			r := newPayloadReader(&fakeSource{msgs: encodeStream(t, compression, payloads)}, compression, DefaultLimits, nil)
			defer r.Close()
			wantPayloads(t, r, payloads[0])
			in, out := r.bufferCaps()
			if max(in, out) <= retainBytes {
				t.Fatalf("buffers %d and %d bytes after a %d-byte payload: the test proves nothing", in, out, len(big))
			}
			wantPayloads(t, r, payloads[1])
			if in, out := r.bufferCaps(); in > retainBytes || out > retainBytes {
				t.Errorf("buffers kept %d and %d bytes, want at most %d", in, out, retainBytes)
			}
		})
	}
}

func TestBrokenStreamIsFatal(t *testing.T) {
	zlibFrames := zlibStream(t, [][]byte{[]byte(`{"op":10}`), []byte(`{"op":11}`)})
	zstdFrames := zstdStream(t, [][]byte{[]byte(`{"op":10}`), []byte(`{"op":11}`)})
	text := fakeMessage{typ: websocket.TextMessage, data: []byte(`{"op":11}`)}
	for _, tc := range []struct {
		name, compression string
		msgs              []fakeMessage
	}{
		{"zlib-stream without a zlib header", CompressionZlibStream, binaryMessages(zlibFrames[1])},
		{"zlib-stream garbage", CompressionZlibStream, binaryMessages(append([]byte{0x78, 0x9c, 0xff, 0xff, 0xff}, zlibSuffix...))},
		{"zlib-stream data past the final block", CompressionZlibStream, binaryMessages(append([]byte{0x78, 0x9c, 0x03, 0x00, 1, 2}, zlibSuffix...))},
		{"zlib-stream text message inside a split payload", CompressionZlibStream,
			append(splitAt(binaryMessages(zlibFrames[0])[0], 3)[:1], text)},
		{"zstd-stream garbage", CompressionZstdStream, binaryMessages([]byte("definitely not zstd"))},
		{"zstd-stream without its frame header", CompressionZstdStream, binaryMessages(zstdFrames[1])},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &fakeSource{msgs: append(tc.msgs, text)}
			r := newPayloadReader(src, tc.compression, DefaultLimits, nil)
			defer r.Close()
			_, err := r.Next()
			if !errors.Is(err, errBrokenStream) {
				t.Fatalf("got %v, want errBrokenStream", err)
			}
			read := src.next
			if _, again := r.Next(); again != err || src.next != read {
				t.Fatalf("Next after a fatal error read on and returned %v", again)
			}
		})
	}
}

func TestSocketErrorsAreReturnedAsIs(t *testing.T) {
	closed := &websocket.CloseError{Code: 4000, Text: "unknown error"}
	zlibFrame := zlibStream(t, [][]byte{dispatch(1, randomText(rand.New(rand.NewSource(6)), 64<<10))})[0]
	zstdFrame := zstdStream(t, [][]byte{dispatch(1, randomText(rand.New(rand.NewSource(6)), 64<<10))})[0]
	small := Limits{MaxFrameBytes: 16 << 10, MaxMessageBytes: 1 << 20}
	for _, tc := range []struct {
		name, compression string
		limits            Limits
		msgs              []fakeMessage
	}{
		{"before a payload", CompressionZlibStream, DefaultLimits, nil},
		{"inside an uncompressed message", CompressionNone, DefaultLimits,
			[]fakeMessage{{typ: websocket.TextMessage, data: []byte(`{"op":`), err: closed}}},
		{"between the messages of a split zlib-stream payload", CompressionZlibStream, DefaultLimits,
			splitAt(binaryMessages(zlibFrame)[0], 5000)[:1]},
		{"inside a streamed zlib-stream payload", CompressionZlibStream, small,
			[]fakeMessage{{typ: websocket.BinaryMessage, data: zlibFrame[:40<<10], err: closed}}},
		{"between the messages of a streamed zlib-stream payload", CompressionZlibStream, small,
			splitAt(binaryMessages(zlibFrame)[0], 40<<10)[:1]},
		{"inside a streamed zstd-stream message", CompressionZstdStream, small,
			[]fakeMessage{{typ: websocket.BinaryMessage, data: zstdFrame[:40<<10], err: closed}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newPayloadReader(&fakeSource{msgs: tc.msgs, end: closed}, tc.compression, tc.limits, nil)
			defer r.Close()
			_, err := r.Next()
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != 4000 {
				t.Fatalf("got %v, want the 4000 close", err)
			}
		})
	}
}

func TestBinaryMessageOnAnUncompressedConnectionIsSkipped(t *testing.T) {
	msgs := []fakeMessage{
		{typ: websocket.BinaryMessage, data: []byte{0x78, 0x9c, 1, 2, 3}},
		{typ: websocket.TextMessage, data: []byte(`{"op":11}`)},
	}
	var wire int
	r := newPayloadReader(&fakeSource{msgs: msgs}, CompressionNone, DefaultLimits, func(n int) { wire += n })
	if _, err := r.Next(); !errors.Is(err, errBinaryOnPlain) {
		t.Fatalf("got %v, want errBinaryOnPlain", err)
	}
	wantPayloads(t, r, msgs[1].data)
	if wire != totalBytes(msgs) {
		t.Errorf("wire bytes %d, want %d", wire, totalBytes(msgs))
	}
}

func TestTextMessageOnACompressedConnectionIsAPlainPayload(t *testing.T) {
	payloads := [][]byte{[]byte(`{"op":10}`), []byte(`{"op":11}`)}
	for _, compression := range []string{CompressionZlibStream, CompressionZstdStream} {
		t.Run(compression, func(t *testing.T) {
			msgs := encodeStream(t, compression, payloads)
			msgs = append(msgs[:1], fakeMessage{typ: websocket.TextMessage, data: []byte(`{"op":7}`)}, msgs[1])
			r := newPayloadReader(&fakeSource{msgs: msgs}, compression, DefaultLimits, nil)
			defer r.Close()
			wantPayloads(t, r, payloads[0], []byte(`{"op":7}`), payloads[1])
		})
	}
}

func TestSmallPayloadsAllocateNothing(t *testing.T) {
	payloads := benchPayloads()
	for len(payloads) < 300 {
		payloads = append(payloads, payloads...)
	}
	for _, compression := range []string{CompressionNone, CompressionZlibStream, CompressionZstdStream} {
		t.Run(compression, func(t *testing.T) {
			var wire int
			r := newPayloadReader(&fakeSource{msgs: encodeStream(t, compression, payloads)}, compression, DefaultLimits, func(n int) { wire += n })
			defer r.Close()
			for range 100 { // grow the buffers
				if _, err := r.Next(); err != nil {
					t.Fatal(err)
				}
			}
			allocs := testing.AllocsPerRun(150, func() {
				if _, err := r.Next(); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Errorf("%v allocations per payload, want 0", allocs)
			}
		})
	}
}

func TestCloseFreesTheZstdDecoder(t *testing.T) {
	r := newPayloadReader(&fakeSource{msgs: encodeStream(t, CompressionZstdStream, [][]byte{[]byte(`{"op":11}`)})},
		CompressionZstdStream, DefaultLimits, nil)
	wantPayloads(t, r, []byte(`{"op":11}`))
	r.Close()
	r.Close() // twice is harmless
	if r.zstd.dec != nil {
		t.Fatal("the decoder is still held")
	}
}

// fuzzOutcome is what Next made of a fuzzed message.
type fuzzOutcome struct {
	payload []byte // the payload, when not dropped
	head    []byte // its first prefixBytes (a dropped payload's Prefix)
	limit   string // OversizeError.Limit, when dropped
	fatal   error
}

// fuzzPayload reads a valid first payload, then the one msgs make, checking
// the bounds every outcome must keep.
func fuzzPayload(t *testing.T, compression string, limits Limits, chunk int, first []byte, msgs ...fakeMessage) fuzzOutcome {
	t.Helper()
	src := &fakeSource{msgs: append(binaryMessages(first), msgs...), chunk: chunk}
	r := newPayloadReader(src, compression, limits, nil)
	defer r.Close()
	if _, err := r.Next(); err != nil {
		t.Fatalf("valid first payload: %v", err)
	}
	p, err := r.Next()
	if in, out := r.bufferCaps(); int64(in) > limits.MaxFrameBytes+1 || out > limits.MaxMessageBytes+1 {
		t.Fatalf("buffers of %d and %d bytes for limits %+v", in, out, limits)
	}
	var oe *OversizeError
	switch {
	case err == nil:
		if len(p) > limits.MaxMessageBytes {
			t.Fatalf("%d-byte payload past the %d-byte limit", len(p), limits.MaxMessageBytes)
		}
		p = bytes.Clone(p)
		return fuzzOutcome{payload: p, head: p[:min(len(p), prefixBytes)]}
	case errors.As(err, &oe):
		if len(oe.Prefix) > prefixBytes {
			t.Fatalf("%d-byte prefix", len(oe.Prefix))
		}
		return fuzzOutcome{head: oe.Prefix, limit: oe.Limit}
	default:
		return fuzzOutcome{fatal: err}
	}
}

// sameOutcome reports whether two reads of the same bytes agree.
func sameOutcome(a, b fuzzOutcome) bool {
	if a.fatal != nil || b.fatal != nil {
		return a.fatal != nil && b.fatal != nil && errors.Is(a.fatal, errBrokenStream) == errors.Is(b.fatal, errBrokenStream)
	}
	return a.limit == b.limit && bytes.Equal(a.payload, b.payload) && bytes.Equal(a.head, b.head)
}

// checkStreamed compares a payload read over the frame limit (streamed and
// dropped) with the same payload buffered: dropped with the same first
// bytes, or fatal alike.
func checkStreamed(t *testing.T, buffered, streamed fuzzOutcome, overFrameLimit bool) {
	t.Helper()
	switch {
	case !overFrameLimit:
		if !sameOutcome(buffered, streamed) {
			t.Fatalf("buffered %+v, under the frame limit %+v", buffered, streamed)
		}
	case buffered.fatal != nil || streamed.fatal != nil:
		if buffered.fatal == nil || streamed.fatal == nil {
			t.Fatalf("buffered: %v; streamed: %v", buffered.fatal, streamed.fatal)
		}
	case streamed.limit != "frame" || !bytes.Equal(streamed.head, buffered.head):
		t.Fatalf("streamed %+v, want the frame dropped with prefix %q", streamed, buffered.head)
	}
}

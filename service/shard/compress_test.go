package shard

import (
	"bytes"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"testing"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"
)

// zlibStream compresses msgs the way Discord does: one zlib context for the
// connection, a sync flush after every message.
func zlibStream(t testing.TB, msgs [][]byte) [][]byte {
	var buf bytes.Buffer
	w := zlib.NewWriter(&buf)
	var frames [][]byte
	for _, m := range msgs {
		if _, err := w.Write(m); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		frames = append(frames, append([]byte(nil), buf.Bytes()...))
		buf.Reset()
	}
	return frames
}

// zstdStream compresses msgs as Discord's zstd-stream does: one zstd frame
// for the connection, flushed after every message.
func zstdStream(t testing.TB, msgs [][]byte) [][]byte {
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var frames [][]byte
	for _, m := range msgs {
		if _, err := w.Write(m); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		frames = append(frames, append([]byte(nil), buf.Bytes()...))
		buf.Reset()
	}
	return frames
}

func TestZlibStreamDecodesEveryPayload(t *testing.T) {
	payloads := sampleMessages(300) // later ones refer back to earlier ones; some exceed the window
	r := newPayloadReader(&fakeSource{msgs: encodeStream(t, CompressionZlibStream, payloads)}, CompressionZlibStream, DefaultLimits, nil)
	wantPayloads(t, r, payloads...)
}

func TestZstdStreamDecodesEveryPayload(t *testing.T) {
	payloads := sampleMessages(300)
	r := newPayloadReader(&fakeSource{msgs: encodeStream(t, CompressionZstdStream, payloads)}, CompressionZstdStream, DefaultLimits, nil)
	defer r.Close()
	wantPayloads(t, r, payloads...)
}

func sampleMessages(n int) [][]byte {
	rng := rand.New(rand.NewSource(2))
	var msgs [][]byte
	for i := 0; i < n; i++ {
		size := rng.Intn(2000)
		if i%50 == 7 {
			size = 70000
		}
		var b bytes.Buffer
		fmt.Fprintf(&b, `{"op":0,"s":%d,"t":"GUILD_MEMBER_ADD","d":{"guild_id":"%d","pad":"`, i, rng.Int63())
		for b.Len() < size {
			fmt.Fprintf(&b, "user%d-", rng.Intn(40))
		}
		b.WriteString(`"}}`)
		msgs = append(msgs, b.Bytes())
	}
	return msgs
}

// benchPayloads are small payloads, the hot path: one websocket message each.
func benchPayloads() [][]byte {
	msgs := sampleMessages(64)
	for i := range msgs {
		if len(msgs[i]) > 4096 {
			msgs[i] = append(msgs[i][:0], `{"op":11}`...)
		}
	}
	return msgs
}

func averageSize(msgs [][]byte) int64 {
	var total int
	for _, m := range msgs {
		total += len(m)
	}
	return int64(total / len(msgs))
}

// BenchmarkInflateZlibStream is the baseline: the old readLoop's inflater,
// fed frames already in memory.
func BenchmarkInflateZlibStream(b *testing.B) {
	msgs := benchPayloads()
	frames := zlibStream(b, msgs)
	b.SetBytes(averageSize(msgs))
	b.ReportAllocs()
	z := newBaselineInflater(1 << 20)
	for i := 0; i < b.N; i++ {
		k := i % len(frames)
		if k == 0 {
			z = newBaselineInflater(1 << 20)
		}
		if _, err := z.Inflate(frames[k]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInflateZlibStreamWithRead is the baseline with the read the old
// readLoop did before inflating: a copy of each message out of the socket.
func BenchmarkInflateZlibStreamWithRead(b *testing.B) {
	msgs := benchPayloads()
	src := &fakeSource{msgs: binaryMessages(zlibStream(b, msgs)...)}
	b.SetBytes(averageSize(msgs))
	b.ReportAllocs()
	var (
		z   *baselineInflater
		buf []byte
	)
	for i := 0; i < b.N; i++ {
		if i%len(msgs) == 0 {
			z, src.next = newBaselineInflater(1<<20), 0
		}
		_, m, err := src.NextReader()
		if err == nil {
			buf, _, err = readUpTo(m, buf[:0], 0)
		}
		if err == nil {
			_, err = z.Inflate(buf)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPayloadReaderZlibStream is the same work through payloadReader:
// read, limits, wire-byte count and inflate.
func BenchmarkPayloadReaderZlibStream(b *testing.B) {
	benchPayloadReader(b, CompressionZlibStream, zlibStream)
}

func BenchmarkPayloadReaderZstdStream(b *testing.B) {
	benchPayloadReader(b, CompressionZstdStream, zstdStream)
}

func benchPayloadReader(b *testing.B, compression string, encode func(testing.TB, [][]byte) [][]byte) {
	msgs := benchPayloads()
	src := &fakeSource{msgs: binaryMessages(encode(b, msgs)...)}
	var wire int
	b.SetBytes(averageSize(msgs))
	b.ReportAllocs()
	var r *payloadReader
	for i := 0; i < b.N; i++ {
		if i%len(msgs) == 0 {
			if r != nil {
				r.Close()
			}
			src.next = 0
			r = newPayloadReader(src, compression, DefaultLimits, func(n int) { wire += n })
		}
		if _, err := r.Next(); err != nil {
			b.Fatal(err)
		}
	}
	r.Close()
}

// baselineInflater is the zlib-stream decoder of the old Conn.readLoop (as of
// commit 802a4da), kept as the benchmarks' baseline: one websocket message per
// payload, and any error breaks the stream.
type baselineInflater struct {
	fr      io.ReadCloser
	src     bytes.Reader
	window  []byte // last 32 KiB of output
	out     []byte
	started bool
	max     int
}

func newBaselineInflater(maxSize int) *baselineInflater {
	return &baselineInflater{max: maxSize, window: make([]byte, 0, windowSize)}
}

func (z *baselineInflater) Inflate(frame []byte) ([]byte, error) {
	if !bytes.HasSuffix(frame, zlibSuffix) {
		return nil, errors.New("zlib-stream frame does not end with a sync flush")
	}
	if !z.started {
		if len(frame) < 2 || frame[0]&0x0f != 8 || (uint16(frame[0])<<8|uint16(frame[1]))%31 != 0 {
			return nil, errors.New("zlib-stream does not start with a zlib header")
		}
		frame = frame[2:]
		z.started = true
	}
	z.src.Reset(frame)
	if z.fr == nil {
		z.fr = flate.NewReaderDict(&z.src, z.window)
	} else if err := z.fr.(flate.Resetter).Reset(&z.src, z.window); err != nil {
		return nil, err
	}
	z.out = z.out[:0]
	for {
		if len(z.out) == cap(z.out) {
			z.out = append(z.out, 0)[:len(z.out)]
		}
		n, err := z.fr.Read(z.out[len(z.out):cap(z.out)])
		z.out = z.out[:len(z.out)+n]
		if z.max > 0 && len(z.out) > z.max {
			return nil, ErrTooLarge
		}
		if err == nil {
			continue
		}
		// The reader runs off the end of the message looking for the next
		// block header; that is the message boundary, provided every input
		// byte was consumed.
		if (err == io.ErrUnexpectedEOF || err == io.EOF) && z.src.Len() == 0 {
			break
		}
		return nil, fmt.Errorf("inflate zlib-stream: %w", err)
	}
	z.keepWindow(z.out)
	return z.out, nil
}

func (z *baselineInflater) keepWindow(out []byte) {
	if len(out) >= windowSize {
		z.window = append(z.window[:0], out[len(out)-windowSize:]...)
		return
	}
	if over := len(z.window) + len(out) - windowSize; over > 0 {
		n := copy(z.window, z.window[over:])
		z.window = z.window[:n]
	}
	z.window = append(z.window, out...)
}

package shard

import (
	"bytes"
	"compress/zlib"
	"errors"
	"io"
	"math/rand"
	"testing"

	"github.com/gorilla/websocket"
	kzlib "github.com/klauspost/compress/zlib"
)

// The inflater's 32 KiB history flushes its output when it fills, at every
// 32 KiB of the stream's output, wherever that falls in a payload. These
// put that point at each of the last bytes of a payload, and exactly at
// its end: every payload must still come out whole, and the ones after it
// too (they refer back into the history across the boundary).
func TestZlibStreamPayloadsAroundTheHistorysFillPoint(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	text := randomText(rng, 3*windowSize)
	for short := 0; short <= 48; short++ {
		// The first payload's output ends short bytes before 32 KiB; the
		// second crosses the point right away and the third repeats the
		// first (back-references into the history).
		first := dispatch(1, text[:windowSize-short-len(dispatch(1, nil))])
		if len(first) != windowSize-short {
			t.Fatalf("first payload %d bytes, want %d", len(first), windowSize-short)
		}
		payloads := [][]byte{first, dispatch(2, text[windowSize:windowSize+100]), first, []byte(`{"op":11}`)}
		r := newPayloadReader(&fakeSource{msgs: encodeStream(t, CompressionZlibStream, payloads)}, CompressionZlibStream, DefaultLimits, nil)
		wantPayloads(t, r, payloads...)
		// And as the simulator compresses (klauspost's zlib, BestSpeed).
		r = newPayloadReader(&fakeSource{msgs: klauspostZlibStream(t, payloads)}, CompressionZlibStream, DefaultLimits, nil)
		wantPayloads(t, r, payloads...)
	}
}

// klauspostZlibStream is zlibStream with klauspost's compressor at
// BestSpeed, the simulator's.
func klauspostZlibStream(t *testing.T, payloads [][]byte) []fakeMessage {
	var buf bytes.Buffer
	w, err := kzlib.NewWriterLevel(&buf, kzlib.BestSpeed)
	if err != nil {
		t.Fatal(err)
	}
	msgs := make([]fakeMessage, len(payloads))
	for i, p := range payloads {
		w.Write(p)
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		msgs[i] = fakeMessage{typ: websocket.BinaryMessage, data: bytes.Clone(buf.Bytes())}
		buf.Reset()
	}
	return msgs
}

// A payload whose output ends exactly where the history fills leaves the
// inflater spent (it ran into the end of the input); the next payload is
// decoded by a new one over the window kept aside, back-references and all.
func TestZlibStreamGoesOnAfterAPayloadEndingExactlyAtTheFillPoint(t *testing.T) {
	rng := rand.New(rand.NewSource(8))
	exact := bytes.Repeat([]byte("x"), 0)
	for len(exact) < windowSize {
		exact = append(exact, randomText(rng, 64)...)
	}
	exact = dispatch(1, exact[:windowSize-len(dispatch(1, nil))])
	payloads := [][]byte{exact, exact, dispatch(3, exact[100:2000]), exact[:windowSize/2], exact}
	for _, split := range []bool{false, true} {
		msgs := encodeStream(t, CompressionZlibStream, payloads)
		if split { // and over the frame limit: streamed and dropped, then the rest
			r := newPayloadReader(&fakeSource{msgs: msgs, chunk: 100}, CompressionZlibStream, Limits{MaxFrameBytes: 200, MaxMessageBytes: 1 << 20}, nil)
			for i := range payloads {
				if _, err := r.Next(); err != nil && !isOversize(err) {
					t.Fatalf("payload %d: %v", i, err)
				}
			}
			continue
		}
		r := newPayloadReader(&fakeSource{msgs: msgs}, CompressionZlibStream, DefaultLimits, nil)
		wantPayloads(t, r, payloads...)
		if r.zlib.spent {
			t.Fatal("the inflater is spent after a payload that did not end at the fill point")
		}
	}
}

func isOversize(err error) bool {
	var oe *OversizeError
	return errors.As(err, &oe)
}

// A long connection of payloads of every size, more and less compressible,
// from two compressors at several levels (each shapes the blocks
// differently; the simulator's is klauspost's at BestSpeed): every payload
// comes out whole, wherever the 32 KiB fill points fall.
func TestZlibStreamLongConnectionsDecodeEveryPayload(t *testing.T) {
	type writer interface {
		io.Writer
		Flush() error
	}
	for i, newWriter := range []func(io.Writer) writer{
		func(w io.Writer) writer { z, _ := zlib.NewWriterLevel(w, zlib.BestSpeed); return z },
		func(w io.Writer) writer { z, _ := zlib.NewWriterLevel(w, zlib.BestCompression); return z },
		func(w io.Writer) writer { z, _ := zlib.NewWriterLevel(w, zlib.HuffmanOnly); return z },
		func(w io.Writer) writer { z, _ := kzlib.NewWriterLevel(w, kzlib.BestSpeed); return z },
		func(w io.Writer) writer { z, _ := kzlib.NewWriterLevel(w, kzlib.DefaultCompression); return z },
	} {
		rng := rand.New(rand.NewSource(int64(i) + 100))
		words := randomText(rng, 4096)
		payloads := make([][]byte, 1500)
		for i := range payloads {
			n := 1 + rng.Intn(3000)
			if i%97 == 0 {
				n = 40000 + rng.Intn(40000)
			}
			var b bytes.Buffer
			for b.Len() < n {
				if rng.Intn(3) == 0 {
					b.Write(randomText(rng, 1+rng.Intn(64)))
				} else {
					start := rng.Intn(len(words) - 64)
					b.Write(words[start : start+1+rng.Intn(63)])
				}
			}
			payloads[i] = dispatch(i, b.Bytes()[:n])
		}
		var buf bytes.Buffer
		w := newWriter(&buf)
		msgs := make([]fakeMessage, len(payloads))
		for i, p := range payloads {
			w.Write(p)
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			msgs[i] = fakeMessage{typ: websocket.BinaryMessage, data: bytes.Clone(buf.Bytes())}
			buf.Reset()
		}
		r := newPayloadReader(&fakeSource{msgs: msgs}, CompressionZlibStream, DefaultLimits, nil)
		wantPayloads(t, r, payloads...)
	}
}

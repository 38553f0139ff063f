package shard

import (
	"bytes"
	"errors"
	"math/rand"
	"testing"
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
	}
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

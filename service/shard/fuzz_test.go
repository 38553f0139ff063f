package shard

import (
	"bytes"
	"testing"

	"github.com/gorilla/websocket"
)

// FuzzInflateZlibStream feeds an arbitrary message, after a valid payload,
// to a zlib-stream context three ways: buffered whole, split in two messages,
// and streamed past a tiny frame limit. Errors are fine; panics, output past
// the limits and the three ways disagreeing are not.
func FuzzInflateZlibStream(f *testing.F) {
	frames := zlibStream(f, [][]byte{[]byte(`{"op":10,"d":{"heartbeat_interval":41250}}`), []byte(`{"op":11}`)})
	f.Add(frames[1])
	f.Add(append([]byte{0x00, 0x01}, zlibSuffix...))
	f.Add(append(bytes.Repeat([]byte{0xff}, 64), zlibSuffix...))
	f.Add(zlibStream(f, [][]byte{[]byte("{}"), bytes.Repeat([]byte("a"), 1<<20)})[1]) // a zip bomb
	buffered := Limits{MaxFrameBytes: 1 << 20, MaxMessageBytes: 1 << 16}
	tiny := Limits{MaxFrameBytes: int64(len(frames[0])), MaxMessageBytes: 1 << 16}
	f.Fuzz(func(t *testing.T, frame []byte) {
		msg := fakeMessage{typ: websocket.BinaryMessage, data: frame}
		whole := fuzzPayload(t, CompressionZlibStream, buffered, 0, frames[0], msg)
		if h := len(frame) / 2; !bytes.HasSuffix(frame[:h], zlibSuffix) {
			split := fuzzPayload(t, CompressionZlibStream, buffered, 3, frames[0], splitAt(msg, h)...)
			if !sameOutcome(whole, split) {
				t.Fatalf("whole %+v, split %+v", whole, split)
			}
		}
		streamed := fuzzPayload(t, CompressionZlibStream, tiny, 5, frames[0], msg)
		checkStreamed(t, whole, streamed, int64(len(frame)) > tiny.MaxFrameBytes)
	})
}

// FuzzInflateZstdStream does the same for zstd-stream, where a payload is
// one message: buffered whole, and streamed past a tiny frame limit.
func FuzzInflateZstdStream(f *testing.F) {
	frames := zstdStream(f, [][]byte{[]byte(`{"op":10,"d":{"heartbeat_interval":41250}}`), []byte(`{"op":11}`)})
	f.Add(frames[1])
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x00})
	buffered := Limits{MaxFrameBytes: 1 << 20, MaxMessageBytes: 1 << 16}
	tiny := Limits{MaxFrameBytes: int64(len(frames[0])), MaxMessageBytes: 1 << 16}
	f.Fuzz(func(t *testing.T, frame []byte) {
		msg := fakeMessage{typ: websocket.BinaryMessage, data: frame}
		whole := fuzzPayload(t, CompressionZstdStream, buffered, 0, frames[0], msg)
		streamed := fuzzPayload(t, CompressionZstdStream, tiny, 5, frames[0], msg)
		checkStreamed(t, whole, streamed, int64(len(frame)) > tiny.MaxFrameBytes)
	})
}

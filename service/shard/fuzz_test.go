package shard

import (
	"bytes"
	"testing"
)

// FuzzInflateZlibStream feeds arbitrary frames, after a valid one, to a
// zlib-stream context: errors are fine, panics and unbounded output are not.
func FuzzInflateZlibStream(f *testing.F) {
	frames := zlibStream(f, [][]byte{[]byte(`{"op":10,"d":{"heartbeat_interval":41250}}`), []byte(`{"op":11}`)})
	f.Add(frames[1])
	f.Add(append([]byte{0x00, 0x01}, zlibSuffix...))
	f.Add(append(bytes.Repeat([]byte{0xff}, 64), zlibSuffix...))
	f.Fuzz(func(t *testing.T, frame []byte) {
		z := newInflater(1 << 16)
		if _, err := z.Inflate(frames[0]); err != nil {
			t.Fatal(err)
		}
		out, err := z.Inflate(frame)
		if err == nil && len(out) > 1<<16 {
			t.Fatalf("%d bytes past the limit", len(out))
		}
	})
}

// FuzzInflateZstdStream does the same for zstd-stream.
func FuzzInflateZstdStream(f *testing.F) {
	frames := zstdStream(f, [][]byte{[]byte(`{"op":10,"d":{"heartbeat_interval":41250}}`), []byte(`{"op":11}`)})
	f.Add(frames[1])
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x00})
	f.Fuzz(func(t *testing.T, frame []byte) {
		z := newZstdInflater(1 << 16)
		defer z.Close()
		if _, err := z.Inflate(frames[0]); err != nil {
			t.Fatal(err)
		}
		out, err := z.Inflate(frame)
		if err == nil && len(out) > 1<<16 {
			t.Fatalf("%d bytes past the limit", len(out))
		}
	})
}

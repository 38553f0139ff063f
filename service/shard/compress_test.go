package shard

import (
	"bytes"
	"compress/zlib"
	"fmt"
	"math/rand"
	"testing"

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

func TestInflaterDecodesEveryMessageOfOneStream(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	var msgs [][]byte
	for i := 0; i < 300; i++ {
		// Repetitive content so later messages back-reference earlier ones,
		// and some messages larger than the 32 KiB window.
		n := rng.Intn(2000)
		if i%50 == 7 {
			n = 70000
		}
		var b bytes.Buffer
		fmt.Fprintf(&b, `{"op":0,"s":%d,"t":"GUILD_MEMBER_ADD","d":{"guild_id":"%d","pad":"`, i, rng.Int63())
		for b.Len() < n {
			fmt.Fprintf(&b, "user%d-", rng.Intn(40))
		}
		b.WriteString(`"}}`)
		msgs = append(msgs, b.Bytes())
	}
	z := newInflater(1 << 20)
	for i, f := range zlibStream(t, msgs) {
		got, err := z.Inflate(f)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !bytes.Equal(got, msgs[i]) {
			t.Fatalf("message %d: got %d bytes, want %d", i, len(got), len(msgs[i]))
		}
	}
}

func TestInflaterRejectsBadInput(t *testing.T) {
	frames := zlibStream(t, [][]byte{[]byte(`{"op":10}`), []byte(`{"op":11}`)})
	cases := map[string][]byte{
		"no sync flush suffix": frames[0][:len(frames[0])-1],
		"no zlib header":       frames[1],
		"garbage":              append([]byte{0x78, 0x9c, 0xff, 0xff, 0xff}, zlibSuffix...),
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := newInflater(1 << 20).Inflate(f); err == nil {
				t.Fatal("want an error")
			}
		})
	}
}

func TestInflaterEnforcesSizeLimit(t *testing.T) {
	big := bytes.Repeat([]byte("a"), 1<<20)
	frames := zlibStream(t, [][]byte{big})
	if len(frames[0]) > 4096 {
		t.Fatalf("test frame should be small (a zip bomb), is %d", len(frames[0]))
	}
	if _, err := newInflater(64 << 10).Inflate(frames[0]); err != ErrTooLarge {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
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

func TestZstdInflaterDecodesEveryMessageOfOneStream(t *testing.T) {
	msgs := sampleMessages(300)
	z := newZstdInflater(1 << 20)
	defer z.Close()
	for i, f := range zstdStream(t, msgs) {
		got, err := z.Inflate(f)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !bytes.Equal(got, msgs[i]) {
			t.Fatalf("message %d: got %d bytes, want %d", i, len(got), len(msgs[i]))
		}
	}
}

func TestZstdInflaterReportsGarbageAndStaysResponsive(t *testing.T) {
	z := newZstdInflater(1 << 20)
	defer z.Close()
	for i := 0; i < 3; i++ {
		if _, err := z.Inflate([]byte("definitely not zstd")); err == nil {
			t.Fatalf("call %d: want an error", i)
		}
	}
}

func TestZstdInflaterEnforcesSizeLimit(t *testing.T) {
	frames := zstdStream(t, [][]byte{bytes.Repeat([]byte("a"), 4<<20)})
	z := newZstdInflater(64 << 10)
	defer z.Close()
	if _, err := z.Inflate(frames[0]); err == nil {
		t.Fatal("a 4 MiB message passed a 64 KiB limit")
	}
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

func BenchmarkInflateZlibStream(b *testing.B) {
	msgs := sampleMessages(64)
	for i := range msgs {
		if len(msgs[i]) > 4096 {
			msgs[i] = msgs[i][:0]
			msgs[i] = append(msgs[i], `{"op":11}`...)
		}
	}
	frames := zlibStream(b, msgs)
	var total int
	for _, m := range msgs {
		total += len(m)
	}
	b.SetBytes(int64(total / len(msgs)))
	b.ReportAllocs()
	z := newInflater(1 << 20)
	for i := 0; i < b.N; i++ {
		k := i % len(frames)
		if k == 0 {
			z = newInflater(1 << 20)
		}
		if _, err := z.Inflate(frames[k]); err != nil {
			b.Fatal(err)
		}
	}
}

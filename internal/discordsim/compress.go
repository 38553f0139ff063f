package discordsim

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/gorilla/websocket"
	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"
)

// Compression is the transport compression a client asked for with the
// compress query parameter.
type Compression string

// Transport compression modes.
const (
	CompressNone Compression = ""
	CompressZlib Compression = "zlib-stream"
	CompressZstd Compression = "zstd-stream"
)

func parseCompression(v string) (Compression, error) {
	switch Compression(v) {
	case CompressNone, CompressZlib, CompressZstd:
		return Compression(v), nil
	}
	return "", fmt.Errorf("unsupported compress=%q (want zlib-stream or zstd-stream)", v)
}

// frameEncoder turns one gateway payload into one websocket message (which
// SetSplit may cut into several for zlib-stream). Both
// stream modes keep a single compression context for the whole connection,
// as Discord does, so a client must use one decompression context too.
// An encoder is owned by the connection's writer goroutine.
type frameEncoder interface {
	// encode returns the message type and bytes to write; the bytes are
	// valid until the next call.
	encode(payload []byte) (int, []byte, error)
	close()
}

func newFrameEncoder(c Compression) (frameEncoder, error) {
	switch c {
	case CompressZlib:
		e := &zlibEncoder{}
		// BestSpeed keeps the simulator cheap under load; the stream format
		// (one context, Z_SYNC_FLUSH per message) is what matters to clients.
		w, err := zlib.NewWriterLevel(&e.buf, zlib.BestSpeed)
		if err != nil {
			return nil, err
		}
		e.w = w
		return e, nil
	case CompressZstd:
		e := &zstdEncoder{}
		w, err := zstd.NewWriter(&e.buf,
			zstd.WithEncoderConcurrency(1),
			zstd.WithEncoderLevel(zstd.SpeedFastest),
			zstd.WithWindowSize(1<<20),
			zstd.WithLowerEncoderMem(true),
		)
		if err != nil {
			return nil, err
		}
		e.w = w
		return e, nil
	default:
		return plainEncoder{}, nil
	}
}

// plainEncoder sends uncompressed JSON as text frames.
type plainEncoder struct{}

func (plainEncoder) encode(p []byte) (int, []byte, error) { return websocket.TextMessage, p, nil }
func (plainEncoder) close()                               {}

// zlibEncoder implements zlib-stream: every message is the output of
// Write+Flush on one shared zlib writer, so it ends with the 00 00 ff ff
// Z_SYNC_FLUSH marker and only the first message carries the zlib header.
type zlibEncoder struct {
	buf bytes.Buffer
	w   *zlib.Writer
}

func (e *zlibEncoder) encode(p []byte) (int, []byte, error) {
	e.buf.Reset()
	if _, err := e.w.Write(p); err != nil {
		return 0, nil, err
	}
	if err := e.w.Flush(); err != nil {
		return 0, nil, err
	}
	return websocket.BinaryMessage, e.buf.Bytes(), nil
}

func (e *zlibEncoder) close() { _ = e.w.Close() }

// zstdEncoder implements zstd-stream: one zstd frame spans the connection and
// every message is the block(s) emitted by Flush, so a message never ends
// the frame and the client must keep one decoder alive.
type zstdEncoder struct {
	buf bytes.Buffer
	w   *zstd.Encoder
}

func (e *zstdEncoder) encode(p []byte) (int, []byte, error) {
	e.buf.Reset()
	if _, err := e.w.Write(p); err != nil {
		return 0, nil, err
	}
	if err := e.w.Flush(); err != nil {
		return 0, nil, err
	}
	return websocket.BinaryMessage, e.buf.Bytes(), nil
}

func (e *zstdEncoder) close() { _ = e.w.Close() }

// zlibSuffix ends every zlib-stream payload: the empty stored block a
// Z_SYNC_FLUSH writes. Discord's docs tell clients to inflate only once a
// message ends with it.
var zlibSuffix = []byte{0x00, 0x00, 0xff, 0xff}

// zlibSplitter cuts a connection's zlib-stream payloads into several
// websocket messages (SetSplit). It is owned by the connection's writer
// goroutine; its random source is seeded with the connection id, so a run
// is repeatable.
type zlibSplitter struct {
	rng *rand.Rand
	n   uint64 // payloads cut so far
}

func newZlibSplitter(connID int64) *zlibSplitter {
	return &zlibSplitter{rng: rand.New(rand.NewPCG(uint64(connID), 0x5eed))}
}

// cuts returns the increasing offsets at which to cut msg into at most
// pieces messages; nil sends it whole. Every other payload has its last cut
// 1 to 4 bytes before the end, inside or just before the suffix, which
// catches clients that look for the suffix in the last message only; the
// other cuts are random. A cut after which the piece would end with the
// whole suffix is left out: a client following the docs would take that
// piece for the end of the payload.
func (z *zlibSplitter) cuts(msg []byte, pieces int) []int {
	n := len(msg)
	pieces = min(pieces, n)
	if pieces < 2 {
		return nil
	}
	k := z.n
	z.n++
	at := make(map[int]bool, pieces-1)
	if k%2 == 0 && n > len(zlibSuffix) {
		at[n-1-int(k/2%4)] = true
	}
	for len(at) < pieces-1 {
		at[1+z.rng.IntN(n-1)] = true
	}
	cuts := make([]int, 0, len(at))
	for c := range at {
		if !bytes.HasSuffix(msg[:c], zlibSuffix) {
			cuts = append(cuts, c)
		}
	}
	slices.Sort(cuts)
	return cuts
}

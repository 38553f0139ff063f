package shard

import (
	"errors"
	"io"

	"github.com/klauspost/compress/zstd"
)

// maxZstdWindow is the largest zstd window accepted (Discord uses far less).
const maxZstdWindow = 64 << 20

// CompressionZstdStream selects zstd transport compression.
const CompressionZstdStream = "zstd-stream"

// decompressor turns one websocket frame into one gateway message. The
// result is valid until the next call.
type decompressor interface {
	Inflate(frame []byte) ([]byte, error)
	Close()
}

func (z *inflater) Close() {}

// zstdInflater decodes one connection's zstd-stream: a single zstd frame
// spanning the connection, whose blocks are flushed at message boundaries.
//
// Blocks depend on the history and entropy state of the blocks before them,
// so they need one streaming decoder; the decoder pulls its input, so it runs
// on a goroutine of its own fed one websocket frame at a time. In synchronous
// mode the decoder returns each block's output before it asks for more
// input, so the moment it asks for input beyond the current frame is the
// message boundary: everything decoded since the last boundary is exactly
// that frame's message.
type zstdInflater struct {
	in  chan []byte
	out chan zstdResult
	max int
}

type zstdResult struct {
	msg []byte
	err error
}

func newZstdInflater(maxSize int) *zstdInflater {
	z := &zstdInflater{in: make(chan []byte), out: make(chan zstdResult), max: maxSize}
	go z.run()
	return z
}

// Inflate implements decompressor.
func (z *zstdInflater) Inflate(frame []byte) ([]byte, error) {
	z.in <- frame
	r, ok := <-z.out
	if !ok {
		return nil, errors.New("zstd-stream decoder stopped")
	}
	return r.msg, r.err
}

// Close stops the decoder goroutine.
func (z *zstdInflater) Close() { close(z.in) }

// zstdFeeder is the decoder's input: the current frame, and the boundary
// hand-off when the decoder asks for more.
type zstdFeeder struct {
	z       *zstdInflater
	cur     []byte
	acc     []byte // decoded since the last boundary
	started bool
	closed  bool
}

func (f *zstdFeeder) Read(p []byte) (int, error) {
	if len(f.cur) == 0 {
		if f.started {
			// Boundary: all of the frame is decoded and returned.
			f.z.out <- zstdResult{msg: f.acc}
			f.acc = f.acc[:0]
		}
		frame, ok := <-f.z.in
		if !ok {
			f.closed = true
			return 0, io.EOF
		}
		f.started = true
		f.cur = frame
	}
	n := copy(p, f.cur)
	f.cur = f.cur[n:]
	return n, nil
}

func (z *zstdInflater) run() {
	defer close(z.out)
	// The window bounds what one connection may make us keep in memory.
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxZstdWindow))
	feeder := &zstdFeeder{z: z}
	if err == nil {
		err = dec.Reset(feeder)
	}
	if err != nil {
		z.fail(feeder, err)
		return
	}
	defer dec.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := dec.Read(buf)
		feeder.acc = append(feeder.acc, buf[:n]...)
		if z.max > 0 && len(feeder.acc) > z.max {
			z.fail(feeder, ErrTooLarge)
			return
		}
		if err != nil {
			z.fail(feeder, err)
			return
		}
	}
}

// fail reports err for the frame being decoded (if a caller waits for one)
// and then for every later frame until Close.
func (z *zstdInflater) fail(f *zstdFeeder, err error) {
	if f.closed {
		return // Close ended the input: nobody waits
	}
	if f.started {
		z.out <- zstdResult{err: err}
	}
	for range z.in {
		z.out <- zstdResult{err: err}
	}
}

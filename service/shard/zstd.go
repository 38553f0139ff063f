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

// readZstd reads one zstd-stream payload. Discord's docs: "each websocket
// message corresponds to a single gateway message, but does not end a zstd
// frame", so a payload is exactly one message and nothing is buffered across
// messages. A message over MaxFrameBytes is decoded as it streams in, and
// dropped.
func (r *payloadReader) readZstd(m io.Reader) ([]byte, error) {
	in, over, err := readUpTo(m, r.in[:0], r.limits.MaxFrameBytes)
	r.in = in
	z := r.zstd
	if !over {
		r.wireBytes(len(in))
		if err != nil {
			return nil, err
		}
		z.input = zstdInput{buffered: in}
		out, size, err := z.decode(r.limits.MaxMessageBytes)
		if err != nil {
			return nil, r.brokenStream(err)
		}
		if err := r.tooLarge(out, size); err != nil {
			return nil, err
		}
		return out, nil
	}
	return r.decodeZstdStreamed(m)
}

// decodeZstdStreamed decodes a message too large to buffer, whose first
// bytes are in r.in and the rest in m, keeping only its prefix, and drops it.
func (r *payloadReader) decodeZstdStreamed(m io.Reader) ([]byte, error) {
	z := r.zstd
	z.input = zstdInput{buffered: r.in, cur: m, total: int64(len(r.in))}
	out, _, err := z.decode(prefixBytes)
	total, inputErr := z.input.total, z.input.err
	z.input = zstdInput{} // let go of the payload and the socket's reader
	r.wireBytes(int(total))
	if inputErr != nil {
		return nil, inputErr // the socket's error
	}
	if err != nil {
		return nil, r.brokenStream(err)
	}
	return nil, &OversizeError{Limit: "frame", Max: r.limits.MaxFrameBytes, Size: total, Prefix: prefixOf(out)}
}

// zstdDecoder decodes one connection's zstd-stream: a single zstd frame
// spanning the connection, whose blocks are flushed at message boundaries.
//
// Blocks depend on the history and entropy state of the blocks before them,
// so one decoder decodes the connection. In synchronous mode it reads
// exactly the bytes of one block, decodes it and, once it has output,
// returns it without reading on: so a read that used the message's last
// byte returned its last block, and the decoder is never asked for input
// past the message (which would end the stream). It needs no goroutine:
// the first version ran the decoder on one, fed a chunk at a time, and
// paid two goroutine hand-offs per message.
type zstdDecoder struct {
	dec   *zstd.Decoder
	input zstdInput
	stage []byte // output as the decoder returns it: one block
	out   []byte // kept output of the message
	peek  [512]byte
}

// zstdStageSize exceeds the largest block's output (128 KiB by the
// format), so that every read returns its block whole.
const zstdStageSize = 128<<10 + 1

func newZstdDecoder() *zstdDecoder {
	return &zstdDecoder{stage: make([]byte, zstdStageSize)}
}

// decode decodes the message in z.input, keeping the first keep bytes of
// output (all if keep <= 0). out is valid until the next call; size is the
// message's whole decoded size. An error leaves the stream unusable.
func (z *zstdDecoder) decode(keep int) (out []byte, size int64, err error) {
	if cap(z.out) > retainBytes {
		z.out = nil // an outsized message grew it
	}
	z.out = z.out[:0]
	if z.dec == nil {
		// The window bounds what one connection may make us keep in memory.
		z.dec, err = zstd.NewReader(&z.input, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxZstdWindow))
		if err != nil {
			return nil, 0, err
		}
	}
	for {
		n, err := z.dec.Read(z.stage)
		size += int64(n)
		z.keepOutput(z.stage[:n], keep)
		if err != nil {
			if z.input.err != nil {
				return nil, size, z.input.err
			}
			if err == io.EOF {
				err = errors.New("zstd-stream ended")
			}
			return nil, size, err
		}
		if n == len(z.stage) {
			continue // a block larger than the format allows: read on
		}
		if !z.input.used() {
			z.input.settle(z.peek[:])
		}
		if z.input.used() {
			return z.out, size, nil
		}
	}
}

// keepOutput appends what fits of keep bytes (all if keep <= 0) to out,
// growing it no further than that.
func (z *zstdDecoder) keepOutput(b []byte, keep int) {
	if keep > 0 {
		b = b[:min(len(b), max(0, keep-len(z.out)))]
	}
	for len(z.out)+len(b) > cap(z.out) {
		z.out = grow(z.out, int64(keep))
	}
	z.out = append(z.out, b...)
}

// Close frees the decoder.
func (z *zstdDecoder) Close() {
	if z.dec != nil {
		z.dec.Close()
		z.dec = nil
	}
}

// zstdInput is one message's compressed bytes as the decoder reads them:
// those buffered, then, for a message too large to buffer, the rest of it
// from the socket.
type zstdInput struct {
	buffered []byte
	cur      io.Reader // the rest of a streamed message; nil once it ended
	total    int64     // bytes of a streamed message so far
	err      error     // the socket's read error
}

func (s *zstdInput) Read(p []byte) (int, error) {
	if len(s.buffered) > 0 {
		n := copy(p, s.buffered)
		s.buffered = s.buffered[n:]
		return n, nil
	}
	for s.cur != nil && s.err == nil {
		n, err := s.cur.Read(p)
		s.total += int64(n)
		switch {
		case err == io.EOF:
			s.cur = nil
		case err != nil:
			s.err = err
		}
		if n > 0 {
			return n, nil
		}
	}
	if s.err != nil {
		return 0, s.err
	}
	return 0, io.EOF // past the message: the stream is broken
}

// used reports whether every byte of the message has been handed over.
func (s *zstdInput) used() bool { return len(s.buffered) == 0 && s.cur == nil }

// settle reads on in a streamed message, into peek, until it ends (the
// message is used) or yields bytes, which are handed over next: the decoder
// must not be asked for more to find out.
func (s *zstdInput) settle(peek []byte) {
	if len(s.buffered) > 0 {
		return
	}
	for s.cur != nil && s.err == nil {
		n, err := s.cur.Read(peek)
		s.total += int64(n)
		s.buffered = peek[:n]
		switch {
		case err == io.EOF:
			s.cur = nil
		case err != nil:
			s.err = err
		}
		if n > 0 {
			return
		}
	}
}

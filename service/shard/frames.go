package shard

import (
	"errors"
	"fmt"
	"io"

	"github.com/gorilla/websocket"
)

// The frame layer: one connection's websocket messages in, gateway payloads
// out, with transport compression undone and the size limits enforced in a
// way that keeps the connection alive.
//
// A payload over a limit is dropped, not fatal: closing the socket would
// make Discord replay the same payload on RESUME, and the shard would loop.
// Dropping it keeps the compression context intact, because the decoder still
// sees every byte of the payload; only the output past the limit is thrown
// away.

// messageSource is the websocket side of a connection; *websocket.Conn
// (gorilla) satisfies it.
type messageSource interface {
	NextReader() (messageType int, r io.Reader, err error)
}

var _ messageSource = (*websocket.Conn)(nil)

const (
	// retainBytes is the most capacity a read or decode buffer keeps from one
	// payload to the next. Most payloads are a few KiB, but one GUILD_CREATE
	// of a large guild can take many MiB; kept for the connection's life, that
	// would cost every shard of the process its largest payload ever. A buffer
	// grown past retainBytes is dropped before the next payload is read, so an
	// outsized payload pays for its own allocation, which is small next to
	// decoding it.
	retainBytes = 1 << 20

	// prefixBytes of a dropped payload are kept for the log: Discord sends
	// op, t and s before d, so the type and sequence are in them.
	prefixBytes = 4 << 10
)

// ErrTooLarge is wrapped by the error for a payload dropped for its size (an
// *OversizeError).
var ErrTooLarge = errors.New("gateway message too large")

// errBinaryOnPlain reports a binary message on a connection without transport
// compression. The message was skipped; the connection is fine.
var errBinaryOnPlain = errors.New("binary message on an uncompressed connection")

// errBrokenStream wraps every error that leaves the transport compression
// context undecodable (corrupt data, a text message inside a split payload).
// The connection must be replaced: a new one starts a fresh context.
var errBrokenStream = errors.New("broken compression stream")

// OversizeError reports a payload dropped for exceeding a limit. The stream
// is intact: the next payload decodes normally.
type OversizeError struct {
	// Limit is "frame" (the raw websocket bytes of the payload, every message
	// of a split one) or "message" (the decompressed bytes).
	Limit string
	// Max is the limit and Size the payload's size, in bytes of that kind.
	Max, Size int64
	// Prefix holds the first bytes of the decompressed payload, at most
	// prefixBytes and maybe fewer, to log its type and seq. It is a copy.
	Prefix []byte
}

func (e *OversizeError) Error() string {
	return fmt.Sprintf("%v: %d-byte %s over the %d-byte limit, dropped", ErrTooLarge, e.Size, e.Limit, e.Max)
}

// Unwrap makes errors.Is(err, ErrTooLarge) true.
func (e *OversizeError) Unwrap() error { return ErrTooLarge }

// payloadReader turns one connection's websocket messages into gateway
// payloads. It enforces Limits itself (the socket's own read limit must be
// off): MaxFrameBytes bounds the raw bytes of one payload, over all the
// messages it spans; MaxMessageBytes bounds it decompressed. A limit <= 0 is
// no limit. Memory stays bounded by the limits whatever arrives.
type payloadReader struct {
	src         messageSource
	compression string
	limits      Limits
	wireBytes   func(n int)

	in   []byte       // raw bytes of the payload being read
	zlib *zlibDecoder // zlib-stream context, or nil
	zstd *zstdDecoder // zstd-stream context, or nil
	err  error        // the fatal error that ended the stream
}

// newPayloadReader reads src, compressed as compression (CompressionNone or
// an unknown name: uncompressed). wireBytes, if not nil, is called with the
// size of each websocket message as received, dropped ones included.
func newPayloadReader(src messageSource, compression string, limits Limits, wireBytes func(n int)) *payloadReader {
	if wireBytes == nil {
		wireBytes = func(int) {}
	}
	r := &payloadReader{src: src, compression: compression, limits: limits, wireBytes: wireBytes}
	switch compression {
	case CompressionZlibStream:
		r.zlib = newZlibDecoder()
	case CompressionZstdStream:
		r.zstd = newZstdDecoder()
	}
	return r
}

// Next returns the next gateway payload; it is valid until the next call.
//   - An error wrapping ErrTooLarge is an *OversizeError: the payload was
//     dropped, the stream is intact, call Next again.
//   - errBinaryOnPlain: a binary message on an uncompressed connection was
//     skipped; call Next again.
//   - Any other error is fatal for the connection, and Next returns it again
//     if called: the socket's read error as the source returned it (a
//     *websocket.CloseError carries Discord's close code), or an error
//     wrapping errBrokenStream.
//
// A text message on a compressed connection is taken as an uncompressed
// payload, as before transport compression existed.
func (r *payloadReader) Next() ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	r.release()
	p, err := r.next()
	if err != nil && !errors.Is(err, ErrTooLarge) && !errors.Is(err, errBinaryOnPlain) {
		r.err = err
	}
	return p, err
}

// Close frees the decompressor. Call it once, not concurrently with Next.
func (r *payloadReader) Close() {
	if r.zstd != nil {
		r.zstd.Close()
	}
}

func (r *payloadReader) next() ([]byte, error) {
	typ, m, err := r.src.NextReader()
	if err != nil {
		return nil, err
	}
	switch {
	case typ != websocket.BinaryMessage:
		return r.readPlain(m)
	case r.zlib != nil:
		return r.readZlib(m)
	case r.zstd != nil:
		return r.readZstd(m)
	default:
		n, err := io.Copy(io.Discard, m)
		r.wireBytes(int(n))
		if err != nil {
			return nil, err
		}
		return nil, errBinaryOnPlain
	}
}

// readPlain reads an uncompressed payload: one message, which is both the
// frame and the message, so it must fit both limits. Past the smaller one the
// rest is discarded unbuffered.
func (r *payloadReader) readPlain(m io.Reader) ([]byte, error) {
	limit, name := r.limits.MaxFrameBytes, "frame"
	if max := int64(r.limits.MaxMessageBytes); max > 0 && (limit <= 0 || max < limit) {
		limit, name = max, "message"
	}
	in, over, err := readUpTo(m, r.in[:0], limit)
	r.in = in
	if !over {
		r.wireBytes(len(in))
		if err != nil {
			return nil, err
		}
		return in, nil
	}
	rest, err := io.Copy(io.Discard, m)
	size := int64(len(in)) + rest
	r.wireBytes(int(size))
	if err != nil {
		return nil, err
	}
	return nil, &OversizeError{Limit: name, Max: limit, Size: size, Prefix: prefixOf(in)}
}

// nextBinary opens the next message of a payload that spans several.
func (r *payloadReader) nextBinary() (io.Reader, error) {
	typ, m, err := r.src.NextReader()
	if err != nil {
		return nil, err
	}
	if typ != websocket.BinaryMessage {
		return nil, fmt.Errorf("%w: text message inside a split %s payload", errBrokenStream, r.compression)
	}
	return m, nil
}

// release drops buffers an outsized payload left behind (see retainBytes).
// The previous payload is no longer in use when Next is called again.
func (r *payloadReader) release() {
	if cap(r.in) > retainBytes {
		r.in = nil
	}
	if r.zlib != nil {
		r.zlib.release()
	}
	if r.zstd != nil {
		r.zstd.input.buffered = nil
	}
}

// bufferCaps reports the capacity of the read buffer and of the decode
// buffer, for tests (valid between calls to Next).
func (r *payloadReader) bufferCaps() (in, out int) {
	switch {
	case r.zlib != nil:
		out = cap(r.zlib.out)
	case r.zstd != nil:
		out = cap(r.zstd.out)
	}
	return cap(r.in), out
}

func (r *payloadReader) brokenStream(err error) error {
	return fmt.Errorf("%w (%s): %w", errBrokenStream, r.compression, err)
}

func (r *payloadReader) tooLarge(out []byte, size int64) error {
	if max := r.limits.MaxMessageBytes; max > 0 && size > int64(max) {
		return &OversizeError{Limit: "message", Max: int64(max), Size: size, Prefix: prefixOf(out)}
	}
	return nil
}

// readUpTo appends r's bytes to buf until r ends or buf holds more than
// limit bytes (limit <= 0: no limit). over reports the latter; the rest of r
// is then unread. buf grows to at most limit+1 bytes.
func readUpTo(r io.Reader, buf []byte, limit int64) (_ []byte, over bool, _ error) {
	for {
		if limit > 0 && int64(len(buf)) > limit {
			return buf, true, nil
		}
		if len(buf) == cap(buf) {
			buf = grow(buf, limit)
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, limit > 0 && int64(len(buf)) > limit, nil
		}
		if err != nil {
			return buf, false, err
		}
	}
}

// grow returns b with spare capacity, doubling it but to no more than
// limit+1 bytes (limit <= 0: no bound). len(b) must not exceed limit.
func grow(b []byte, limit int64) []byte {
	c := max(2*cap(b), 4<<10)
	if limit > 0 && int64(c) > limit+1 {
		c = int(limit + 1)
	}
	nb := make([]byte, len(b), c)
	copy(nb, b)
	return nb
}

// prefixOf copies the start of a dropped payload, which outlives the buffer.
func prefixOf(b []byte) []byte {
	return append([]byte(nil), b[:min(len(b), prefixBytes)]...)
}

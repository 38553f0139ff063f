package shard

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/klauspost/compress/flate"
	"io"
)

// Compression names accepted in GATEWAY_COMPRESSION and sent as the gateway's
// compress query parameter.
const (
	CompressionNone       = "none"
	CompressionZlibStream = "zlib-stream"
)

// zlibSuffix ends every zlib-stream message: the empty stored block of a
// Z_SYNC_FLUSH.
var zlibSuffix = []byte{0x00, 0x00, 0xff, 0xff}

// ErrTooLarge is returned when a frame inflates past the configured limit.
var ErrTooLarge = errors.New("gateway message too large")

// inflater decodes one connection's zlib-stream: a single deflate stream that
// spans every message of the connection, flushed at each message boundary.
//
// Go's flate reader treats the end of its input as a sticky error, so it
// cannot be fed message by message. After a sync flush the stream sits on a
// byte-aligned block boundary and the only state carried into the next block
// is the 32 KiB window, so each message is inflated by a reader reset onto
// the message with the window as its preset dictionary. This needs no
// goroutine per connection and makes the size limit trivial to enforce.
type inflater struct {
	fr      io.ReadCloser
	src     bytes.Reader
	window  []byte // last 32 KiB of output
	out     []byte
	started bool
	max     int
}

const windowSize = 32 << 10

func newInflater(maxSize int) *inflater {
	return &inflater{max: maxSize, window: make([]byte, 0, windowSize)}
}

// Inflate returns the message carried by frame. The result is valid until the
// next call. Any error leaves the stream unusable: the connection must be
// replaced (a fresh connection has a fresh context).
func (z *inflater) Inflate(frame []byte) ([]byte, error) {
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

func (z *inflater) keepWindow(out []byte) {
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

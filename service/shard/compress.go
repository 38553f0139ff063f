package shard

import (
	"bufio"
	"bytes"
	"errors"
	"io"

	"github.com/klauspost/compress/flate"
)

// Compression names accepted in GATEWAY_COMPRESSION and sent as the gateway's
// compress query parameter.
const (
	CompressionNone       = "none"
	CompressionZlibStream = "zlib-stream"
)

// zlibSuffix ends every zlib-stream payload: the empty stored block of a
// Z_SYNC_FLUSH.
var zlibSuffix = []byte{0x00, 0x00, 0xff, 0xff}

// windowSize is deflate's window: all the history a block may refer to.
const windowSize = 32 << 10

// readZlib reads one zlib-stream payload. Discord may split a payload over
// several websocket messages; its docs say to buffer messages until the
// data ends with the sync-flush suffix, then inflate. The suffix is looked
// for at the end of everything buffered, not of the last message alone, so
// a split inside the suffix is no problem. A payload whose compressed bytes
// exceed MaxFrameBytes is not buffered: it is inflated as it streams in and
// dropped.
func (r *payloadReader) readZlib(m io.Reader) ([]byte, error) {
	in, start := r.in[:0], 0
	for {
		var (
			over bool
			err  error
		)
		in, over, err = readUpTo(m, in, r.limits.MaxFrameBytes)
		r.in = in
		if over {
			return r.inflateStreamed(m, len(in)-start)
		}
		r.wireBytes(len(in) - start)
		if err != nil {
			return nil, err
		}
		if bytes.HasSuffix(in, zlibSuffix) {
			return r.inflateBuffered()
		}
		if m, err = r.nextBinary(); err != nil {
			return nil, err
		}
		start = len(in)
	}
}

// inflateBuffered inflates the payload in r.in: the fast path, with no
// copy beyond the output and no allocation.
func (r *payloadReader) inflateBuffered() ([]byte, error) {
	z := r.zlib
	z.src.Reset(r.in)
	out, size, err := z.inflate(&z.src, r.limits.MaxMessageBytes)
	if err != nil {
		return nil, r.brokenStream(err)
	}
	if err := r.tooLarge(out, size); err != nil {
		return nil, err
	}
	return out, nil
}

// inflateStreamed inflates a payload too large to buffer, whose first bytes
// are in r.in and whose current message m has curBytes in r.in, and drops it.
func (r *payloadReader) inflateStreamed(m io.Reader, curBytes int) ([]byte, error) {
	s := &zlibStreamedInput{r: r, buffered: r.in, cur: m, curBytes: curBytes}
	s.note(r.in)
	z := r.zlib
	if z.br == nil {
		z.br = bufio.NewReaderSize(s, windowSize)
	} else {
		z.br.Reset(s)
	}
	out, _, err := z.inflate(z.br, prefixBytes)
	z.br.Reset(nil) // let go of the payload
	if s.err != nil {
		return nil, s.err // the socket's error, or a message that broke the stream
	}
	if err != nil {
		return nil, r.brokenStream(err)
	}
	return nil, &OversizeError{Limit: "frame", Max: r.limits.MaxFrameBytes, Size: s.total, Prefix: prefixOf(out)}
}

// zlibStreamedInput is the compressed input of a zlib-stream payload too
// large to buffer: the bytes buffered so far, then the rest of the current
// websocket message and of the messages after it, up to the one after which
// the input ends with the sync-flush suffix.
type zlibStreamedInput struct {
	r        *payloadReader
	buffered []byte
	cur      io.Reader // nil between messages
	curBytes int       // read from cur so far, for wireBytes
	total    int64     // compressed bytes of the payload so far
	tail     uint32    // the last four bytes, big-endian
	done     bool      // the payload's last message is read
	err      error     // fatal: the socket's read error, or a text message
}

func (s *zlibStreamedInput) Read(p []byte) (int, error) {
	if len(s.buffered) > 0 {
		n := copy(p, s.buffered)
		s.buffered = s.buffered[n:]
		return n, nil
	}
	for !s.done && s.err == nil {
		if s.cur == nil {
			if s.cur, s.err = s.r.nextBinary(); s.err != nil {
				break
			}
			s.curBytes = 0
		}
		n, err := s.cur.Read(p)
		s.note(p[:n])
		s.curBytes += n
		if err == io.EOF {
			s.r.wireBytes(s.curBytes)
			s.cur = nil
			s.done = s.total >= int64(len(zlibSuffix)) && s.tail == 0x0000ffff
		} else if err != nil {
			s.r.wireBytes(s.curBytes)
			s.err = err
		}
		if n > 0 {
			return n, nil
		}
	}
	if s.err != nil {
		return 0, s.err
	}
	return 0, io.EOF
}

// note accounts for input b: its size, and the last four bytes seen.
func (s *zlibStreamedInput) note(b []byte) {
	s.total += int64(len(b))
	for _, c := range b[max(0, len(b)-4):] {
		s.tail = s.tail<<8 | uint32(c)
	}
}

// zlibDecoder decodes one connection's zlib-stream: a single deflate stream
// that spans every payload of the connection, flushed at each payload's end.
//
// Go's flate reader treats the end of its input as a sticky error, so it
// cannot be fed message by message. After a sync flush the stream sits on a
// byte-aligned block boundary and the only state carried into the next block
// is the 32 KiB window, so each payload is inflated by a reader reset onto
// the payload with the window as its preset dictionary. This needs no
// goroutine per connection and makes the size limit easy to enforce.
type zlibDecoder struct {
	fr      io.ReadCloser
	src     bytes.Reader  // input of a buffered payload
	br      *bufio.Reader // input of a streamed one
	window  []byte        // last 32 KiB of output
	out     []byte
	scratch []byte // output past the kept part, which only the window sees
	started bool   // the zlib header was read
}

func newZlibDecoder() *zlibDecoder {
	return &zlibDecoder{window: make([]byte, 0, windowSize)}
}

// inflate decodes one payload from src, which must end where the payload
// ends. It keeps the first keep bytes of output (all if keep <= 0); the rest
// is decoded into the window only. out is valid until the next call; size
// is the payload's whole decoded size. An error leaves the stream unusable.
func (z *zlibDecoder) inflate(src flate.Reader, keep int) (out []byte, size int64, err error) {
	if err := z.readHeader(src); err != nil {
		return nil, 0, err
	}
	if z.fr == nil {
		z.fr = flate.NewReaderDict(src, z.window)
	} else if err := z.fr.(flate.Resetter).Reset(src, z.window); err != nil {
		return nil, 0, err
	}
	err = z.fill(keep)
	size = int64(len(z.out))
	z.keepWindow(z.out)
	if keep > 0 && len(z.out) > keep {
		var n int64
		n, err = z.discard()
		size += n
	}
	// The reader runs off the end of the payload looking for the next block
	// header; that is the payload's end, provided all the input was used.
	if err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, 0, err
	}
	if _, err := src.ReadByte(); err != io.EOF {
		return nil, 0, errors.New("zlib-stream payload has data past its end")
	}
	return z.out, size, nil
}

// readHeader checks the zlib header that starts the connection's stream.
func (z *zlibDecoder) readHeader(src io.ByteReader) error {
	if z.started {
		return nil
	}
	cmf, err1 := src.ReadByte()
	flg, err2 := src.ReadByte()
	if err1 != nil || err2 != nil || cmf&0x0f != 8 || (uint16(cmf)<<8|uint16(flg))%31 != 0 || flg&0x20 != 0 {
		return errors.New("zlib-stream does not start with a zlib header")
	}
	z.started = true
	return nil
}

// fill inflates into z.out until the payload ends (the reader's error) or
// z.out holds more than keep bytes (nil).
func (z *zlibDecoder) fill(keep int) error {
	z.out = z.out[:0]
	for {
		if len(z.out) == cap(z.out) {
			z.out = grow(z.out, int64(keep))
		}
		n, err := z.fr.Read(z.out[len(z.out):cap(z.out)])
		z.out = z.out[:len(z.out)+n]
		if err != nil {
			return err
		}
		if keep > 0 && len(z.out) > keep {
			return nil
		}
	}
}

// discard inflates the rest of the payload into the window alone.
func (z *zlibDecoder) discard() (int64, error) {
	if z.scratch == nil {
		z.scratch = make([]byte, windowSize)
	}
	var total int64
	for {
		n, err := z.fr.Read(z.scratch)
		z.keepWindow(z.scratch[:n])
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
}

func (z *zlibDecoder) keepWindow(out []byte) {
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

// release drops an output buffer grown past retainBytes, and the input
// reference, which may hold a dropped read buffer.
func (z *zlibDecoder) release() {
	z.src.Reset(nil)
	if cap(z.out) > retainBytes {
		z.out = nil
	}
}

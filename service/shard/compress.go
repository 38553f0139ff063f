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
// allocation.
func (r *payloadReader) inflateBuffered() ([]byte, error) {
	z := r.zlib
	z.input = zlibInput{r: r, buffered: r.in, done: true}
	out, size, err := z.inflate(r.limits.MaxMessageBytes)
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
	z := r.zlib
	z.input = zlibInput{r: r, buffered: r.in, cur: m, curBytes: curBytes}
	z.input.note(r.in)
	out, _, err := z.inflate(prefixBytes)
	total := z.input.total
	z.input = zlibInput{} // let go of the payload and the socket's reader
	if z.inputErr != nil {
		return nil, z.inputErr // the socket's error, or a message that broke the stream
	}
	if err != nil {
		return nil, r.brokenStream(err)
	}
	return nil, &OversizeError{Limit: "frame", Max: r.limits.MaxFrameBytes, Size: total, Prefix: prefixOf(out)}
}

// zlibInput is the compressed input of one zlib-stream payload, as the
// inflater reads it: the bytes buffered so far, then, for a payload too
// large to buffer, the rest of the current websocket message and of the
// messages after it, up to the one after which the input ends with the
// sync-flush suffix.
type zlibInput struct {
	r        *payloadReader
	buffered []byte
	cur      io.Reader // nil between messages
	curBytes int       // read from cur so far, for wireBytes
	total    int64     // compressed bytes of a streamed payload so far
	tail     uint32    // the last four bytes, big-endian
	done     bool      // the payload's last message is read (always, when buffered)
	err      error     // fatal: the socket's read error, or a text message
}

func (s *zlibInput) Read(p []byte) (int, error) {
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
func (s *zlibInput) note(b []byte) {
	s.total += int64(len(b))
	for _, c := range b[max(0, len(b)-4):] {
		s.tail = s.tail<<8 | uint32(c)
	}
}

// used reports whether every byte of the payload has been handed over.
func (s *zlibInput) used() bool { return s.done && len(s.buffered) == 0 && s.cur == nil }

// atSuffix reports whether the input handed over so far ends with the
// sync-flush suffix in the middle of a streamed message: the payload ends
// there if the message does.
func (s *zlibInput) atSuffix() bool {
	return len(s.buffered) == 0 && s.cur != nil && s.total >= int64(len(zlibSuffix)) && s.tail == 0x0000ffff
}

// settle reads on in the current message, into peek, until it ends (then
// the payload is used) or yields bytes, which are handed over next. The
// inflater must not be asked for more to find out: past the payload's end
// it would fail on the missing input for good.
func (s *zlibInput) settle(peek []byte) {
	for s.cur != nil && s.err == nil {
		n, err := s.cur.Read(peek)
		s.note(peek[:n])
		s.curBytes += n
		s.buffered = peek[:n]
		switch {
		case err == io.EOF:
			s.r.wireBytes(s.curBytes)
			s.cur = nil
			s.done = s.tail == 0x0000ffff
		case err != nil:
			s.r.wireBytes(s.curBytes)
			s.err = err
		}
		if n > 0 {
			return
		}
	}
}

// zlibDecoder decodes one connection's zlib-stream: a single deflate stream
// that spans every payload of the connection, flushed at each payload's end.
//
// One inflater decodes the connection, so the 32 KiB window lives in the
// inflater and is not copied into a new one per payload. (The first
// version reset a reader onto each payload with the window as its preset
// dictionary: two 32 KiB copies per payload, a third of the inflate time of
// a small one.) The inflater treats the end of its input as a sticky error,
// so it must not be asked for more than the payload: after a sync flush the
// stream sits on a block boundary, and the inflater hands over what it
// decoded (flushes) when it reads the flush's empty stored block, the
// payload's last bytes. Its only other flush is when its 32 KiB history
// fills up, at every 32 KiB of output; so a read that ends with all the
// input used and the history not at such a boundary ends the payload.
//
// At a boundary the inflater is asked again: it decodes on from the bits
// it holds, or, when the payload's output ended exactly where the history
// filled (one payload in 32768), runs into the end of the input. The
// payload is complete then, but that inflater is done for; the next
// payload gets a new one with the window kept here as its dictionary.
type zlibDecoder struct {
	fr       io.Reader     // the connection's inflater, from the first payload on
	br       *bufio.Reader // its input, over input
	input    zlibInput     // the payload being inflated
	inputErr error         // of the last streamed payload, set by inflate
	stage    []byte        // output as the inflater returns it
	out      []byte        // kept output of the payload
	window   []byte        // the last 32 KiB of output (or more, up to cap 64 KiB)
	filled   int           // output since the inflater's history was last full, mod 32 KiB
	spent    bool          // the inflater ran into the end of a payload: replace it
	started  bool          // the zlib header was read
	peek     [512]byte     // input read to find where a streamed message ends
}

// stageSize exceeds the most one inflater read returns (its 32 KiB
// history), so that a read returns all the inflater has decoded.
const stageSize = 2 * windowSize

func newZlibDecoder() *zlibDecoder {
	z := &zlibDecoder{stage: make([]byte, stageSize), window: make([]byte, 0, 2*windowSize)}
	z.br = bufio.NewReaderSize(&z.input, 16<<10)
	return z
}

// inflate decodes the payload in z.input. It keeps the first keep bytes of
// output (all if keep <= 0). out is valid until the next call; size is the
// payload's whole decoded size. An error leaves the stream unusable.
func (z *zlibDecoder) inflate(keep int) (out []byte, size int64, err error) {
	z.out, z.inputErr = z.out[:0], nil
	if err := z.start(); err != nil {
		z.inputErr = z.input.err
		return nil, 0, err
	}
	for {
		n, err := z.fr.Read(z.stage)
		size += int64(n)
		z.keepOutput(z.stage[:n], keep)
		z.remember(z.stage[:n])
		z.filled = (z.filled + n) % windowSize
		used := z.br.Buffered() == 0 && z.input.used()
		switch {
		case err == io.ErrUnexpectedEOF && used && z.input.err == nil:
			z.spent = true // the payload ended where the history filled
			return z.out, size, nil
		case err != nil:
			// io.EOF too: a final block ends the connection's stream.
			z.inputErr = z.input.err
			return nil, size, err
		case z.br.Buffered() > 0:
			continue
		}
		if !used && z.input.atSuffix() {
			z.input.settle(z.peek[:])
			used = z.input.used()
		}
		if used && z.filled != 0 {
			return z.out, size, nil
		}
	}
}

// remember keeps the last 32 KiB of output for a new inflater, moving it
// to the front once per 32 KiB rather than per payload.
func (z *zlibDecoder) remember(b []byte) {
	if len(b) >= windowSize {
		z.window = append(z.window[:0], b[len(b)-windowSize:]...)
		return
	}
	if len(z.window)+len(b) > cap(z.window) {
		n := copy(z.window, z.window[len(z.window)-windowSize:])
		z.window = z.window[:n]
	}
	z.window = append(z.window, b...)
}

// start reads the zlib header that opens the connection's stream, once,
// and creates the inflater after it; it replaces a spent inflater.
func (z *zlibDecoder) start() error {
	if z.spent {
		history := z.window[max(0, len(z.window)-windowSize):]
		z.spent, z.filled = false, len(history)%windowSize
		return z.fr.(flate.Resetter).Reset(z.br, history)
	}
	if z.started {
		return nil
	}
	cmf, err1 := z.br.ReadByte()
	flg, err2 := z.br.ReadByte()
	if err1 != nil || err2 != nil || cmf&0x0f != 8 || (uint16(cmf)<<8|uint16(flg))%31 != 0 || flg&0x20 != 0 {
		return errors.New("zlib-stream does not start with a zlib header")
	}
	z.started = true
	z.fr = flate.NewReader(z.br)
	return nil
}

// keepOutput appends what fits of keep bytes (all if keep <= 0) to out,
// growing it no further than that.
func (z *zlibDecoder) keepOutput(b []byte, keep int) {
	if keep > 0 {
		b = b[:min(len(b), max(0, keep-len(z.out)))]
	}
	for len(z.out)+len(b) > cap(z.out) {
		z.out = grow(z.out, int64(keep))
	}
	z.out = append(z.out, b...)
}

// release drops an output buffer grown past retainBytes, and the input
// reference, which may hold a dropped read buffer.
func (z *zlibDecoder) release() {
	z.input.buffered = nil
	if cap(z.out) > retainBytes {
		z.out = nil
	}
}

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
// messages. A message over MaxFrameBytes is decoded as it streams in, in
// chunks, and dropped.
func (r *payloadReader) readZstd(m io.Reader) ([]byte, error) {
	in, over, err := readUpTo(m, r.in[:0], r.limits.MaxFrameBytes)
	r.in = in
	if !over {
		r.wireBytes(len(in))
		if err != nil {
			return nil, err
		}
		rep := r.zstd.decode(zstdChunk{b: in, last: true, keep: r.limits.MaxMessageBytes})
		if rep.err != nil {
			return nil, r.brokenStream(rep.err)
		}
		if err := r.tooLarge(rep.out, rep.size); err != nil {
			return nil, err
		}
		return rep.out, nil
	}
	return r.decodeZstdStreamed(m)
}

// decodeZstdStreamed decodes a message too large to buffer, whose first
// bytes are in r.in, keeping only its prefix, and drops it. The decoder
// consumes each chunk before it asks for the next, so r.in is reused for
// the rest of the message.
func (r *payloadReader) decodeZstdStreamed(m io.Reader) ([]byte, error) {
	total := int64(len(r.in))
	rep := r.zstd.decode(zstdChunk{b: r.in, keep: prefixBytes})
	buf := r.in[:cap(r.in)]
	for rep.more {
		n, err := m.Read(buf)
		total += int64(n)
		if err != nil && err != io.EOF {
			r.wireBytes(int(total))
			return nil, err
		}
		rep = r.zstd.decode(zstdChunk{b: buf[:n], last: err == io.EOF})
	}
	r.wireBytes(int(total))
	if rep.err != nil {
		return nil, r.brokenStream(rep.err)
	}
	return nil, &OversizeError{Limit: "frame", Max: r.limits.MaxFrameBytes, Size: total, Prefix: prefixOf(rep.out)}
}

// zstdDecoder decodes one connection's zstd-stream: a single zstd frame
// spanning the connection, whose blocks are flushed at message boundaries.
//
// Blocks depend on the history and entropy state of the blocks before them,
// so they need one streaming decoder; the decoder pulls its input, so it runs
// on a goroutine of its own (zstdWorker), fed one chunk at a time. In
// synchronous mode the decoder returns each block's output before it asks
// for more input, so the moment it asks for input past a message's last
// chunk is the message boundary: everything decoded since the last boundary
// is exactly that message's payload.
type zstdDecoder struct {
	in     chan zstdChunk
	out    chan zstdReply
	w      *zstdWorker
	closed bool
}

// zstdChunk is input for the decoder. Each chunk gets one zstdReply.
type zstdChunk struct {
	b    []byte // not used by the caller until the reply
	last bool   // b ends the message
	keep int    // first chunk of a message: output bytes to keep (<= 0: all)
}

// zstdReply answers a chunk: more (send the next chunk of the message), or
// the decoded message, or the error that broke the stream.
type zstdReply struct {
	more bool
	out  []byte // the kept output, valid until the next message
	size int64  // the message's whole decoded size
	err  error
}

func newZstdDecoder() *zstdDecoder {
	z := &zstdDecoder{in: make(chan zstdChunk), out: make(chan zstdReply)}
	z.w = &zstdWorker{in: z.in, out: z.out}
	go z.w.run()
	return z
}

func (z *zstdDecoder) decode(c zstdChunk) zstdReply {
	z.in <- c
	rep, ok := <-z.out
	if !ok {
		return zstdReply{err: errors.New("zstd-stream decoder stopped")}
	}
	return rep
}

// Close stops the decoder goroutine.
func (z *zstdDecoder) Close() {
	if !z.closed {
		z.closed = true
		close(z.in)
	}
}

// zstdWorker is the decoder goroutine's state; it is the decoder's input.
type zstdWorker struct {
	in  <-chan zstdChunk
	out chan<- zstdReply

	cur    []byte // input not yet given to the decoder
	last   bool   // cur ends the message
	inMsg  bool   // a caller waits for a reply
	closed bool   // the input channel is closed

	acc  []byte // kept output of the message, read by the caller after a reply
	size int64
	keep int
}

// Read hands the decoder its input, replying to the caller each time a
// chunk is used up.
func (w *zstdWorker) Read(p []byte) (int, error) {
	for len(w.cur) == 0 {
		if w.inMsg {
			rep := zstdReply{more: true}
			if w.last {
				// Boundary: all of the message is decoded and returned.
				rep = zstdReply{out: w.acc, size: w.size}
				w.inMsg = false
			}
			w.out <- rep
		}
		c, ok := <-w.in
		if !ok {
			w.closed = true
			return 0, io.EOF
		}
		if !w.inMsg {
			w.begin(c.keep)
		}
		w.cur, w.last = c.b, c.last
	}
	n := copy(p, w.cur)
	if w.cur = w.cur[n:]; len(w.cur) == 0 {
		w.cur = nil // the caller reuses or drops the chunk's buffer
	}
	return n, nil
}

// begin starts a message. The caller is done with the previous one, so its
// buffer may be reused, or dropped if an outsized message grew it.
func (w *zstdWorker) begin(keep int) {
	w.inMsg, w.size, w.keep = true, 0, keep
	if cap(w.acc) > retainBytes {
		w.acc = nil
	}
	w.acc = w.acc[:0]
}

func (w *zstdWorker) run() {
	defer close(w.out)
	// The window bounds what one connection may make us keep in memory.
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxZstdWindow))
	if err == nil {
		err = dec.Reset(w)
	}
	if err != nil {
		w.fail(err)
		return
	}
	defer dec.Close()
	// Output goes through buf, not straight into acc: the read that crosses
	// a boundary returns the next message's output, and which buffer that
	// belongs in is only known once the read returns.
	buf := make([]byte, 32<<10)
	for {
		n, err := dec.Read(buf)
		w.size += int64(n)
		w.keepOutput(buf[:n])
		if err != nil {
			w.fail(err)
			return
		}
	}
}

// keepOutput appends what fits of the message's limit to acc, growing it
// no further than the limit allows.
func (w *zstdWorker) keepOutput(b []byte) {
	if w.keep > 0 {
		b = b[:min(len(b), max(0, w.keep-len(w.acc)))]
	}
	for len(w.acc)+len(b) > cap(w.acc) {
		w.acc = grow(w.acc, int64(w.keep))
	}
	w.acc = append(w.acc, b...)
}

// fail reports err for the message being decoded (if a caller waits for
// one) and then for every later chunk until Close.
func (w *zstdWorker) fail(err error) {
	if w.closed {
		return // Close ended the input: nobody waits
	}
	if w.inMsg {
		w.out <- zstdReply{err: err}
	}
	for range w.in {
		w.out <- zstdReply{err: err}
	}
}

package jsonscan

import (
	"encoding/binary"
	"math/bits"
)

// The lexer's functions take the document and an offset and return the
// offset after what they consumed, keeping the cursor in a register on the
// hot path; on failure they return the offset of the problem and what it is.

// problem is what is wrong at an offset; ok when nothing is.
type problem uint8

const (
	ok problem = iota
	endOfData
	invalidChar
	invalidLiteral
	invalidNumber
	invalidEscape
	controlChar
	wantKey
	wantColon
	wantCommaOrBrace
	wantCommaOrBracket
	tooDeep
)

var problems = [...]string{
	endOfData:          "unexpected end of data",
	invalidChar:        "invalid character",
	invalidLiteral:     "invalid literal",
	invalidNumber:      "invalid number",
	invalidEscape:      "invalid escape",
	controlChar:        "control character in string",
	wantKey:            "want an object key",
	wantColon:          "want ':'",
	wantCommaOrBrace:   "want ',' or '}'",
	wantCommaOrBracket: "want ',' or ']'",
	tooDeep:            "nesting too deep",
}

// container consumes the array or object at i and everything in it, with
// a loop and a stack of container kinds rather than by recursion. room is
// how many containers may open, this one included.
func container(d []byte, i, room int) (int, problem) {
	var open kinds
	var p problem
	for {
		// i is at the first byte of a value.
		if i >= len(d) {
			return i, endOfData
		}
		switch c := d[i]; c {
		case '{', '[':
			if open.n == room {
				return i, tooDeep
			}
			open.push(c == '{')
			i = skipSpace(d, i+1)
			if i < len(d) && d[i] == open.closer() {
				i++
				open.pop()
				break // an empty container is a complete value
			}
			if open.object() {
				if i, p = member(d, i); p != ok {
					return i, p
				}
			}
			continue
		case '"':
			if end := shortString(d, i); end > 0 {
				i = end
			} else {
				i, _, p = str(d, i)
			}
		case 't':
			i, p = literal(d, i, "true")
		case 'f':
			i, p = literal(d, i, "false")
		case 'n':
			i, p = literal(d, i, "null")
		default:
			i, p = number(d, i)
		}
		if p != ok {
			return i, p
		}
		if i, p = next(d, i, &open); p != ok || open.n == 0 {
			return i, p
		}
	}
}

// next moves past what follows a complete value inside the open
// containers: the closers of those it completes, then the ',' (and for an
// object the member name) before the next value, if any.
func next(d []byte, i int, open *kinds) (int, problem) {
	for open.n > 0 {
		i = skipSpace(d, i)
		if i >= len(d) {
			return i, endOfData
		}
		switch d[i] {
		case open.closer():
			i++
			open.pop()
			continue
		case ',':
		default:
			if open.object() {
				return i, wantCommaOrBrace
			}
			return i, wantCommaOrBracket
		}
		i = skipSpace(d, i+1)
		if open.object() {
			return member(d, i)
		}
		return i, ok
	}
	return i, ok
}

// kinds is a stack of open containers, true for an object. A word holds
// the first 64 levels, enough for every real payload; only deeper (hostile)
// input spills to a slice.
type kinds struct {
	word   uint64 // bit n: level n+1
	deeper []bool // levels 65 and beyond
	n      int    // levels open
}

func (k *kinds) push(object bool) {
	if k.n < 64 {
		k.word = k.word&^(1<<k.n) | b2u(object)<<k.n
	} else {
		k.deeper = append(k.deeper[:k.n-64], object)
	}
	k.n++
}

func (k *kinds) pop() { k.n-- }

// object reports whether the innermost open container is an object.
func (k *kinds) object() bool {
	if k.n > 64 {
		return k.deeper[k.n-65]
	}
	return k.word&(1<<(k.n-1)) != 0
}

// closer is the byte that closes the innermost open container.
func (k *kinds) closer() byte {
	if k.object() {
		return '}'
	}
	return ']'
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// member consumes a member's name at i and the ':' after it, and returns
// the offset of the member's value.
func member(d []byte, i int) (int, problem) {
	if i < len(d) && d[i] == '"' {
		if end := shortString(d, i); end > 0 && end < len(d) && d[end] == ':' {
			return skipSpace(d, end+1), ok
		}
	}
	if i >= len(d) {
		return i, endOfData
	}
	if d[i] != '"' {
		return i, wantKey
	}
	i, _, p := str(d, i)
	if p != ok {
		return i, p
	}
	i = skipSpace(d, i)
	if i >= len(d) {
		return i, endOfData
	}
	if d[i] != ':' {
		return i, wantColon
	}
	return skipSpace(d, i+1), ok
}

// skipSpace returns the offset of the first byte at or after i that is not
// JSON whitespace. Gateway JSON is compact, so the first test usually ends it.
func skipSpace(d []byte, i int) int {
	for i < len(d) && d[i] <= ' ' && (d[i] == ' ' || d[i] == '\n' || d[i] == '\r' || d[i] == '\t') {
		i++
	}
	return i
}

// literal consumes the exact bytes of lit (true, false or null) at i.
func literal(d []byte, i int, lit string) (int, problem) {
	if len(d)-i >= len(lit) && string(d[i:i+len(lit)]) == lit {
		return i + len(lit), ok
	}
	if len(d)-i < len(lit) && string(d[i:]) == lit[:len(d)-i] {
		return len(d), endOfData
	}
	return i, invalidLiteral
}

// shortString returns the offset after the string whose opening quote is
// at i if the string is short and plain (at most eight bytes, no escapes:
// most keys and IDs); otherwise 0, and str has the last word. Unlike str, it
// inlines. When no byte of the word is special, TrailingZeros64 is 64 and j
// the byte after the word, which closes a string of exactly eight bytes.
func shortString(d []byte, i int) int {
	if i+10 > len(d) {
		return 0
	}
	j := i + 1 + bits.TrailingZeros64(special(binary.LittleEndian.Uint64(d[i+1:])))>>3
	if d[j] != '"' {
		return 0
	}
	return j + 1
}

// ascii8 reports whether d[i:j], at most eight bytes with eight readable
// from i, is ASCII, with one load.
func ascii8(d []byte, i, j int) bool {
	const highs = 0x8080808080808080
	return binary.LittleEndian.Uint64(d[i:])&(highs>>(64-8*(j-i))) == 0
}

// stringFlags say what a string holds besides plain ASCII.
type stringFlags uint8

const (
	escapes  stringFlags = 1 << iota // backslash escapes
	nonASCII                         // bytes from 0x80 up, which may or may not be valid UTF-8
)

// str consumes the string whose opening quote is at i and reports what it
// holds. Like encoding/json, it accepts any byte from 0x20 up, invalid
// UTF-8 included, and rejects control characters.
//
// It looks for the bytes that end a run of plain ones ('"', '\\' or a
// control character) eight at a time, which makes strings, the bulk of
// gateway JSON, several times cheaper than a byte-at-a-time loop; the high
// bits of the plain bytes are gathered on the way, so that telling ASCII
// from the rest costs nothing more.
func str(d []byte, i int) (end int, f stringFlags, p problem) {
	const highs = 0x8080808080808080
	var high uint64 // the plain bytes ORed together, for their high bits
	i++
	for {
		for i+8 <= len(d) {
			w := binary.LittleEndian.Uint64(d[i:])
			if m := special(w); m != 0 {
				n := bits.TrailingZeros64(m) >> 3
				high |= w & (highs >> (64 - 8*n)) // the n plain bytes before it
				i += n
				break
			}
			high |= w
			i += 8
		}
		for i < len(d) && plain[d[i]] { // the last bytes, fewer than eight
			high |= uint64(d[i])
			i++
		}
		if high&highs != 0 {
			f |= nonASCII
		}
		if i >= len(d) {
			return i, f, endOfData
		}
		switch d[i] {
		case '"':
			return i + 1, f, ok
		case '\\':
			f |= escapes
			if i, p = escape(d, i); p != ok {
				return i, f, p
			}
		default:
			return i, f, controlChar
		}
	}
}

// escape consumes the escape sequence whose backslash is at i.
func escape(d []byte, i int) (int, problem) {
	if i+1 >= len(d) {
		return len(d), endOfData
	}
	switch d[i+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return i + 2, ok
	case 'u':
		for k := i + 2; k < i+6; k++ {
			if k >= len(d) {
				return k, endOfData
			}
			if !isHex(d[k]) {
				return k, invalidEscape
			}
		}
		return i + 6, ok
	}
	return i, invalidEscape
}

// special has the high bit set in the bytes of w that are '"', '\\' or
// below 0x20, the lowest one at least exactly (a borrow can mark bytes above
// a marked byte, never below). Each term is the classic "has a byte less
// than n" test, (x - n*ones) &^ x & highs, on w, w^'"' and w^'\\'; the &^ w
// is shared because xoring with a byte below 0x80 keeps each high bit.
func special(w uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	control := w - 0x20*ones
	quote := (w ^ '"'*ones) - ones
	backslash := (w ^ '\\'*ones) - ones
	return (control | quote | backslash) &^ w & highs
}

// plain marks the bytes that stand for themselves inside a JSON string.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// number consumes -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? at i.
// What follows is the caller's to check, so "01" and "1x" fail there, on
// the byte that is not a delimiter.
func number(d []byte, i int) (int, problem) {
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i >= len(d):
		return i, endOfData
	case d[i] == '0':
		i++
	case '1' <= d[i] && d[i] <= '9':
		i = digits(d, i+1)
	default:
		return i, invalidChar
	}
	if i < len(d) && d[i] == '.' {
		j := digits(d, i+1)
		if j == i+1 {
			return j, missingDigits(d, j)
		}
		i = j
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		j := digits(d, i)
		if j == i {
			return j, missingDigits(d, j)
		}
		i = j
	}
	return i, ok
}

// missingDigits is the problem of a number missing the digits due at i.
func missingDigits(d []byte, i int) problem {
	if i >= len(d) {
		return endOfData
	}
	return invalidNumber
}

// digits returns the offset of the first byte at or after i that is not a
// decimal digit.
func digits(d []byte, i int) int {
	for i < len(d) && '0' <= d[i] && d[i] <= '9' {
		i++
	}
	return i
}

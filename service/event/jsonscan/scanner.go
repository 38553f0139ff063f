// Package jsonscan is a strict JSON tokenizer that locates values instead
// of decoding them, for the gateway's hot path: the envelope of every frame
// (service/shard) and the routing fields of every published dispatch
// (service/event) are read with it, without allocating.
//
// Strict means that it accepts exactly what encoding/json accepts (RFC 8259,
// with encoding/json's nesting limit and its tolerance of invalid UTF-8
// inside strings), so a frame that passes here also decodes there; a fuzz
// test holds the two to that.
package jsonscan

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// MaxDepth is the deepest nesting of arrays and objects encoding/json
// accepts: a document nested deeper is invalid JSON to it, so to us too.
const MaxDepth = 10000

// Kind is the type of a JSON value.
type Kind uint8

// The kinds of JSON values; the zero Kind is no value at all.
const (
	None Kind = iota
	Object
	Array
	String
	Number
	True
	False
	Null
)

// Value is a JSON value located in its document: doc[Start:End] is its
// text, quotes included for a string.
type Value struct {
	Start, End int
	Kind       Kind
	// Escaped is true for a String with backslash escapes, whose text is
	// therefore not its content.
	Escaped bool
}

// Bytes returns the value's text in doc.
func (v Value) Bytes(doc []byte) []byte { return doc[v.Start:v.End] }

// Content returns a String's text between its quotes, still escaped.
func (v Value) Content(doc []byte) []byte { return doc[v.Start+1 : v.End-1] }

// Text returns the string a String denotes, as encoding/json decodes it. The
// common case (no escapes, valid UTF-8) is a plain copy; otherwise
// encoding/json decodes it, so that surrogate pairs and invalid UTF-8 come
// out exactly as any Go consumer of the same JSON sees them.
func (v Value) Text(doc []byte) string {
	content := v.Content(doc)
	if !v.Escaped && utf8.Valid(content) {
		return string(content)
	}
	var s string
	if err := json.Unmarshal(v.Bytes(doc), &s); err != nil {
		// Unreachable: the scanner has validated the string.
		return string(content)
	}
	return s
}

// Int returns the integer a Number denotes if it has bitSize bits or fewer,
// as encoding/json decodes a number into a Go integer: a fraction, an
// exponent or an overflow is not an integer.
func (v Value) Int(doc []byte, bitSize int) (int64, bool) {
	if v.Kind != Number {
		return 0, false
	}
	n, err := strconv.ParseInt(string(v.Bytes(doc)), 10, bitSize)
	return n, err == nil
}

// SyntaxError is a place where a document is not JSON.
type SyntaxError struct {
	// Offset is the byte offset of the problem in the document.
	Offset int
	what   string
}

func (e *SyntaxError) Error() string {
	return e.what + " at offset " + strconv.Itoa(e.Offset)
}

// Scanner is a cursor over one JSON document. A consumer walks the objects
// it cares about member by member (Object, Key, Next) and lets Skip consume
// and validate every other value, so that a document is validated whole
// while only the interesting parts are looked at.
type Scanner struct {
	doc []byte
	pos int
	// depth is the number of objects entered with Object and not yet
	// left, counted against maxDepth.
	depth, maxDepth int
}

// New returns a scanner at the start of doc that rejects nesting deeper than
// maxDepth: MaxDepth for a document of its own, less for one that will be
// embedded in another.
func New(doc []byte, maxDepth int) Scanner {
	return Scanner{doc: doc, maxDepth: maxDepth}
}

// Peek returns the next byte that is not whitespace, without consuming it,
// or 0 at the end of the document.
func (s *Scanner) Peek() byte {
	s.pos = skipSpace(s.doc, s.pos)
	if s.pos < len(s.doc) {
		return s.doc[s.pos]
	}
	return 0
}

// Doc returns the document the scanner walks.
func (s *Scanner) Doc() []byte { return s.doc }

// Offset returns the cursor's offset in the document: after Peek, that of
// the next value; after a value is consumed, that of the byte after it.
func (s *Scanner) Offset() int { return s.pos }

// Object consumes the '{' that opens an object and reports whether the
// object has a member (false for {}, which is then consumed whole).
func (s *Scanner) Object() (more bool, err error) {
	switch c := s.Peek(); {
	case s.pos >= len(s.doc):
		return false, s.problem(s.pos, endOfData)
	case c != '{':
		return false, s.fail(s.pos, "want an object")
	case s.depth == s.maxDepth:
		return false, s.problem(s.pos, tooDeep)
	}
	s.pos = skipSpace(s.doc, s.pos+1)
	if s.pos < len(s.doc) && s.doc[s.pos] == '}' {
		s.pos++
		return false, nil
	}
	s.depth++
	return true, nil
}

// Key consumes a member's name and the ':' after it, and returns the name
// as encoding/json decodes it. The name aliases the document unless it has
// escapes or invalid UTF-8 (which Discord never sends; decoding allocates).
func (s *Scanner) Key() ([]byte, error) {
	d := s.doc
	start := skipSpace(d, s.pos)
	if start+10 <= len(d) && d[start] == '"' {
		// Most names are short and ASCII, and followed by the colon.
		if end := shortString(d, start); end > 0 && end < len(d) && d[end] == ':' && ascii8(d, start+1, end-1) {
			s.pos = end + 1
			return d[start+1 : end-1], nil
		}
	}
	switch {
	case start >= len(d):
		return nil, s.problem(start, endOfData)
	case d[start] != '"':
		return nil, s.problem(start, wantKey)
	}
	end, flags, p := str(d, start)
	if p != ok {
		return nil, s.problem(end, p)
	}
	i := skipSpace(d, end)
	switch {
	case i >= len(d):
		return nil, s.problem(i, endOfData)
	case d[i] != ':':
		return nil, s.problem(i, wantColon)
	}
	s.pos = i + 1
	name := Value{Start: start, End: end, Kind: String, Escaped: flags&escapes != 0}
	if flags == 0 || flags == nonASCII && utf8.Valid(name.Content(d)) {
		return name.Content(d), nil
	}
	return []byte(name.Text(d)), nil
}

// Next consumes what follows a member's value: a ',' (more is true, another
// member follows) or the '}' that closes the object (more is false).
func (s *Scanner) Next() (more bool, err error) {
	switch c := s.Peek(); {
	case s.pos >= len(s.doc):
		return false, s.problem(s.pos, endOfData)
	case c == ',':
		s.pos++
		return true, nil
	case c == '}':
		s.pos++
		s.depth--
		return false, nil
	}
	return false, s.problem(s.pos, wantCommaOrBrace)
}

// End checks that only whitespace follows the top-level value.
func (s *Scanner) End() error {
	if s.Peek(); s.pos != len(s.doc) {
		return s.fail(s.pos, "data after the top-level value")
	}
	return nil
}

// Skip consumes the value at the cursor, validating all of it, and returns
// where it is and what kind it is.
func (s *Scanner) Skip() (Value, error) {
	d := s.doc
	v := Value{Start: skipSpace(d, s.pos)}
	if v.Start >= len(d) {
		return v, s.problem(v.Start, endOfData)
	}
	var p problem
	switch d[v.Start] {
	case '"':
		v.Kind = String
		if v.End = shortString(d, v.Start); v.End == 0 {
			var f stringFlags
			v.End, f, p = str(d, v.Start)
			v.Escaped = f&escapes != 0
		}
	case '{':
		v.Kind = Object
		v.End, p = container(d, v.Start, s.maxDepth-s.depth)
	case '[':
		v.Kind = Array
		v.End, p = container(d, v.Start, s.maxDepth-s.depth)
	case 't':
		v.Kind = True
		v.End, p = literal(d, v.Start, "true")
	case 'f':
		v.Kind = False
		v.End, p = literal(d, v.Start, "false")
	case 'n':
		v.Kind = Null
		v.End, p = literal(d, v.Start, "null")
	default:
		v.Kind = Number
		v.End, p = number(d, v.Start)
	}
	if p != ok {
		return v, s.problem(v.End, p)
	}
	s.pos = v.End
	return v, nil
}

// problem returns the error of problem p at offset i and moves the cursor
// there.
func (s *Scanner) problem(i int, p problem) error {
	return s.fail(i, problems[p])
}

func (s *Scanner) fail(i int, what string) error {
	s.pos = i
	return &SyntaxError{Offset: i, what: what}
}

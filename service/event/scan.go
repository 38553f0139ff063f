package event

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// ErrMalformed is wrapped by every error about a dispatch's data: not a JSON
// object, invalid JSON, or a routing field of the wrong type. The message
// names the problem and its byte offset, not the dispatch type and seq,
// which the caller knows and logs.
var ErrMalformed = errors.New("event: malformed dispatch data")

// maxDepth is the deepest nesting of containers the scanner accepts in d:
// one less than encoding/json's limit of 10000, because the body nests d one
// level deeper and must stay decodable. It also bounds the scanner's
// recursion on hostile input.
const maxDepth = 10000 - 1

// Fields are a dispatch's routing fields, decoded. An ID is "" when the
// dispatch has none (absent or null).
type Fields struct {
	// GuildID is the guild's own "id" for GUILD_CREATE and GUILD_DELETE, the
	// top-level "guild_id" otherwise.
	GuildID string
	// ChannelID is the top-level "channel_id".
	ChannelID string
	// UserID is "user.id", or "member.user.id" when there is no user.id.
	UserID string
	// Unavailable is true for a GUILD_CREATE or GUILD_DELETE with
	// "unavailable": true, i.e. a guild outage rather than a join or leave.
	// It is always false for other dispatch types.
	Unavailable bool
}

// ParseFields extracts the routing fields of the dispatch d of type t. It
// reads d once, decoding only those fields, and checks on the way that d is
// a well-formed JSON object; it returns an error wrapping ErrMalformed if
// not, or if a routing field has a type other than the expected one or null.
func ParseFields(t string, d []byte) (Fields, error) {
	r, err := scan(t, d)
	if err != nil {
		return Fields{}, err
	}
	return Fields{
		GuildID:     r.guild(t).decode(d),
		ChannelID:   r.channelID.span.decode(d),
		UserID:      r.user().decode(d),
		Unavailable: r.unavailable,
	}, nil
}

// span is a JSON string value inside d, located rather than decoded so the
// hot path can copy it into the message body without allocating.
type span struct {
	// start and end bound the string's content, between the quotes.
	start, end int
	// escaped is true when the content has a backslash escape.
	escaped bool
	// present is false when the field was absent or null.
	present bool
}

// decode returns the string span denotes, "" when it is not present. The
// common case (no escapes, valid UTF-8) is a plain copy; otherwise
// encoding/json decodes it, so surrogate pairs and invalid UTF-8 come out
// exactly as any Go consumer of the body would see them.
func (s span) decode(d []byte) string {
	if !s.present {
		return ""
	}
	raw := d[s.start:s.end]
	if !s.escaped && utf8.Valid(raw) {
		return string(raw)
	}
	var v string
	if err := json.Unmarshal(d[s.start-1:s.end+1], &v); err != nil {
		// Unreachable: the scanner has validated the string.
		return string(raw)
	}
	return v
}

// field is the last occurrence of a routing field in d.
type field struct {
	span
	// err is set when the field has the wrong type. It is reported only
	// once the whole of d is known to be well-formed, because a later
	// occurrence of the same key replaces this one.
	err error
}

// raw are the routing fields as located in d.
type raw struct {
	id           field // top-level "id"; the guild ID for GUILD_CREATE/GUILD_DELETE
	guildID      field // top-level "guild_id"
	channelID    field
	userID       field // user.id
	memberUserID field // member.user.id
	unavailable  bool
	unavailErr   error // "unavailable" has the wrong type
}

// guild returns the span of the guild ID for dispatch type t.
func (r *raw) guild(t string) span {
	if guildIsSelf(t) {
		return r.id.span
	}
	return r.guildID.span
}

// user returns the span of the user ID: user.id, else member.user.id.
func (r *raw) user() span {
	if r.userID.present {
		return r.userID.span
	}
	return r.memberUserID.span
}

// typeErr returns the first wrong-typed routing field for dispatch type t.
// Fields t does not route on are never checked (see scan).
func (r *raw) typeErr() error {
	for _, err := range [...]error{r.id.err, r.guildID.err, r.channelID.err, r.userID.err, r.memberUserID.err, r.unavailErr} {
		if err != nil {
			return err
		}
	}
	return nil
}

// scan walks the top level of d, descending only into "user" and
// "member.user", and validates everything it skips.
//
// A repeated key counts with its last occurrence, as it does for
// encoding/json decoding into a map; keys are compared after unescaping and
// case-sensitively, as for a map.
func scan(t string, d []byte) (raw, error) {
	var r raw
	s := scanner{d: d}
	s.ws()
	if s.i >= len(d) || d[s.i] != '{' {
		return r, s.fail("not a JSON object")
	}
	guildIsID := guildIsSelf(t)
	empty, err := s.open(0)
	if err != nil || empty {
		return r, s.end(err)
	}
	for {
		k, err := s.key()
		if err != nil {
			return r, err
		}
		switch string(k) {
		case "id":
			if guildIsID {
				r.id, err = s.id(1, "id")
			} else {
				err = s.skip(1)
			}
		case "guild_id":
			if !guildIsID {
				r.guildID, err = s.id(1, "guild_id")
			} else {
				err = s.skip(1)
			}
		case "channel_id":
			r.channelID, err = s.id(1, "channel_id")
		case "user":
			r.userID, err = s.user(1, "user")
		case "member":
			r.memberUserID, err = s.member(1)
		case "unavailable":
			if guildIsID {
				r.unavailable, r.unavailErr, err = s.boolean(1, "unavailable")
			} else {
				err = s.skip(1)
			}
		default:
			err = s.skip(1)
		}
		if err != nil {
			return r, err
		}
		more, err := s.next('}')
		if err != nil {
			return r, err
		}
		if !more {
			if err := s.end(nil); err != nil {
				return r, err
			}
			return r, r.typeErr()
		}
	}
}

// scanner is a cursor over a JSON document. Its methods validate what they
// consume with the grammar of RFC 8259, like encoding/json (which, like this
// scanner, does not insist on valid UTF-8 inside strings).
type scanner struct {
	d []byte
	i int
}

func (s *scanner) fail(what string) error {
	return fmt.Errorf("%w: %s at offset %d", ErrMalformed, what, s.i)
}

func (s *scanner) eof() error {
	return fmt.Errorf("%w: unexpected end of data", ErrMalformed)
}

// end checks that only whitespace follows the top-level object.
func (s *scanner) end(err error) error {
	if err != nil {
		return err
	}
	s.ws()
	if s.i != len(s.d) {
		return s.fail("data after the top-level object")
	}
	return nil
}

func (s *scanner) ws() {
	for s.i < len(s.d) {
		switch s.d[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// open consumes the '{' or '[' at the cursor, which opens a container inside
// depth others, and reports whether the container is empty (closer consumed).
func (s *scanner) open(depth int) (empty bool, err error) {
	if depth+1 > maxDepth {
		return false, s.fail("nesting too deep")
	}
	closer := byte('}')
	if s.d[s.i] == '[' {
		closer = ']'
	}
	s.i++
	s.ws()
	if s.i < len(s.d) && s.d[s.i] == closer {
		s.i++
		return true, nil
	}
	return false, nil
}

// next consumes the ',' or the closer after a member or element and reports
// whether another one follows.
func (s *scanner) next(closer byte) (more bool, err error) {
	s.ws()
	if s.i >= len(s.d) {
		return false, s.eof()
	}
	switch s.d[s.i] {
	case ',':
		s.i++
		return true, nil
	case closer:
		s.i++
		return false, nil
	}
	return false, s.fail("want ',' or '" + string(closer) + "'")
}

// key consumes `"name" :` and returns the name, unescaped. The slice aliases
// d unless the name has escapes (rare: Discord never sends them).
func (s *scanner) key() ([]byte, error) {
	s.ws()
	if s.i >= len(s.d) {
		return nil, s.eof()
	}
	if s.d[s.i] != '"' {
		return nil, s.fail("want an object key")
	}
	k, err := s.str()
	if err != nil {
		return nil, err
	}
	s.ws()
	if s.i >= len(s.d) {
		return nil, s.eof()
	}
	if s.d[s.i] != ':' {
		return nil, s.fail("want ':'")
	}
	s.i++
	if !k.escaped {
		return s.d[k.start:k.end], nil
	}
	return []byte(k.decode(s.d)), nil
}

// str consumes the string at the cursor (which is on its opening quote).
func (s *scanner) str() (span, error) {
	d := s.d
	i := s.i + 1
	sp := span{start: i, present: true}
	for i < len(d) {
		c := d[i]
		if plain[c] {
			i++
			continue
		}
		switch c {
		case '"':
			sp.end = i
			s.i = i + 1
			return sp, nil
		case '\\':
			sp.escaped = true
			if i+1 >= len(d) {
				return sp, s.eof()
			}
			switch d[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(d) {
					return sp, s.eof()
				}
				for _, h := range d[i+2 : i+6] {
					if !isHex(h) {
						s.i = i
						return sp, s.fail("invalid \\u escape")
					}
				}
				i += 6
			default:
				s.i = i
				return sp, s.fail("invalid escape")
			}
		default:
			s.i = i
			return sp, s.fail("control character in string")
		}
	}
	return sp, s.eof()
}

// plain marks the bytes that stand for themselves inside a JSON string, so
// the scanner's inner loop is one table lookup per byte.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// id consumes a value inside depth containers that should be a string or
// null; any other value is consumed too and reported in the field's err.
func (s *scanner) id(depth int, name string) (field, error) {
	s.ws()
	if s.i >= len(s.d) {
		return field{}, s.eof()
	}
	switch s.d[s.i] {
	case '"':
		sp, err := s.str()
		return field{span: sp}, err
	case 'n':
		return field{}, s.literal("null")
	}
	return s.wrongType(depth, name+": want a string or null")
}

// boolean consumes a value inside depth containers that should be true,
// false or null (false); any other value is consumed and reported in typeErr.
func (s *scanner) boolean(depth int, name string) (v bool, typeErr, err error) {
	s.ws()
	if s.i >= len(s.d) {
		return false, nil, s.eof()
	}
	switch s.d[s.i] {
	case 't':
		return true, nil, s.literal("true")
	case 'f':
		return false, nil, s.literal("false")
	case 'n':
		return false, nil, s.literal("null")
	}
	f, err := s.wrongType(depth, name+": want a boolean or null")
	return false, f.err, err
}

// wrongType consumes the value at the cursor, which has the wrong type for
// a routing field, and returns a field carrying that as its error.
func (s *scanner) wrongType(depth int, what string) (field, error) {
	typeErr := s.fail(what)
	if err := s.skip(depth); err != nil {
		return field{}, err
	}
	return field{err: typeErr}, nil
}

// user consumes a value inside depth containers that should be a user
// object or null, and returns its "id".
func (s *scanner) user(depth int, name string) (field, error) {
	var id field
	s.ws()
	if s.i >= len(s.d) {
		return id, s.eof()
	}
	switch s.d[s.i] {
	case 'n':
		return id, s.literal("null")
	case '{':
	default:
		return s.wrongType(depth, name+": want an object or null")
	}
	empty, err := s.open(depth)
	if err != nil || empty {
		return id, err
	}
	for {
		k, err := s.key()
		if err != nil {
			return id, err
		}
		if string(k) == "id" {
			id, err = s.id(depth+1, name+".id")
		} else {
			err = s.skip(depth + 1)
		}
		if err != nil {
			return id, err
		}
		more, err := s.next('}')
		if err != nil || !more {
			return id, err
		}
	}
}

// member consumes a value inside depth containers that should be a member
// object or null, and returns its "user.id".
func (s *scanner) member(depth int) (field, error) {
	var id field
	s.ws()
	if s.i >= len(s.d) {
		return id, s.eof()
	}
	switch s.d[s.i] {
	case 'n':
		return id, s.literal("null")
	case '{':
	default:
		return s.wrongType(depth, "member: want an object or null")
	}
	empty, err := s.open(depth)
	if err != nil || empty {
		return id, err
	}
	for {
		k, err := s.key()
		if err != nil {
			return id, err
		}
		if string(k) == "user" {
			id, err = s.user(depth+1, "member.user")
		} else {
			err = s.skip(depth + 1)
		}
		if err != nil {
			return id, err
		}
		more, err := s.next('}')
		if err != nil || !more {
			return id, err
		}
	}
}

// skip consumes and validates any value inside depth containers.
func (s *scanner) skip(depth int) error {
	s.ws()
	if s.i >= len(s.d) {
		return s.eof()
	}
	switch c := s.d[s.i]; c {
	case '"':
		_, err := s.str()
		return err
	case '{':
		empty, err := s.open(depth)
		if err != nil || empty {
			return err
		}
		for {
			if _, err := s.key(); err != nil {
				return err
			}
			if err := s.skip(depth + 1); err != nil {
				return err
			}
			more, err := s.next('}')
			if err != nil || !more {
				return err
			}
		}
	case '[':
		empty, err := s.open(depth)
		if err != nil || empty {
			return err
		}
		for {
			if err := s.skip(depth + 1); err != nil {
				return err
			}
			more, err := s.next(']')
			if err != nil || !more {
				return err
			}
		}
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		return s.literal("null")
	default:
		if c == '-' || '0' <= c && c <= '9' {
			return s.number()
		}
		return s.fail("invalid character")
	}
}

// literal consumes the exact bytes of lit (true, false or null).
func (s *scanner) literal(lit string) error {
	if len(s.d)-s.i < len(lit) {
		return s.eof()
	}
	if string(s.d[s.i:s.i+len(lit)]) != lit {
		return s.fail("invalid literal")
	}
	s.i += len(lit)
	return nil
}

// number consumes a number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
// What follows it is checked by the caller, which wants a delimiter, so
// "01" or "1x" fail there.
func (s *scanner) number() error {
	d := s.d
	i := s.i
	if d[i] == '-' {
		i++
	}
	switch {
	case i >= len(d):
		return s.eof()
	case d[i] == '0':
		i++
	case '1' <= d[i] && d[i] <= '9':
		i = digits(d, i+1)
	default:
		s.i = i
		return s.fail("invalid number")
	}
	if i < len(d) && d[i] == '.' {
		j := digits(d, i+1)
		if j == i+1 {
			s.i = j
			return s.fail("invalid number")
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
			s.i = j
			return s.fail("invalid number")
		}
		i = j
	}
	s.i = i
	return nil
}

// digits returns the index of the first non-digit at or after i.
func digits(d []byte, i int) int {
	for i < len(d) && '0' <= d[i] && d[i] <= '9' {
		i++
	}
	return i
}

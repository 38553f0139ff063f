package event

import (
	"errors"
	"fmt"

	"github.com/shardpool/gateway/service/event/jsonscan"
)

// ErrMalformed is wrapped by every error about a dispatch's data: not a JSON
// object, invalid JSON, or a routing field of the wrong type. The message
// names the problem and its byte offset, not the dispatch type and seq,
// which the caller knows and logs.
var ErrMalformed = errors.New("event: malformed dispatch data")

// maxDepth is the deepest nesting of containers accepted in d: one less than
// encoding/json's limit, because the body nests d one level deeper and must
// stay decodable.
const maxDepth = jsonscan.MaxDepth - 1

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
		GuildID:     text(d, r.guild(t)),
		ChannelID:   text(d, r.channelID.Value),
		UserID:      text(d, r.user()),
		Unavailable: r.unavailable,
	}, nil
}

// text decodes an ID: "" unless it is a string.
func text(d []byte, v jsonscan.Value) string {
	if v.Kind != jsonscan.String {
		return ""
	}
	return v.Text(d)
}

// field is the last occurrence of a routing field in d: a String, or no
// value (Kind None) when absent or null.
type field struct {
	jsonscan.Value
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

// guild returns the guild ID for dispatch type t.
func (r *raw) guild(t string) jsonscan.Value {
	if guildIsSelf(t) {
		return r.id.Value
	}
	return r.guildID.Value
}

// user returns the user ID: user.id, else member.user.id.
func (r *raw) user() jsonscan.Value {
	if r.userID.Kind == jsonscan.String {
		return r.userID.Value
	}
	return r.memberUserID.Value
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
	s := jsonscan.New(d, maxDepth)
	if s.Peek() != '{' {
		return raw{}, fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	r, err := scanObject(&s, guildIsSelf(t))
	if err == nil {
		err = s.End()
	}
	if err != nil {
		return r, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return r, r.typeErr()
}

// scanObject consumes the object at the cursor of s (which must be at its
// '{'), locating the routing fields, with offsets in the document s walks.
// guildIsID says the guild ID is the top-level "id" (see guildIsSelf).
func scanObject(s *jsonscan.Scanner, guildIsID bool) (raw, error) {
	var r raw
	more, err := s.Object()
	for more && err == nil {
		var k []byte
		if k, err = s.Key(); err != nil {
			break
		}
		switch {
		case string(k) == "id" && guildIsID:
			r.id, err = idField(s, "id")
		case string(k) == "guild_id" && !guildIsID:
			r.guildID, err = idField(s, "guild_id")
		case string(k) == "channel_id":
			r.channelID, err = idField(s, "channel_id")
		case string(k) == "user":
			r.userID, err = user(s, "user", "user.id")
		case string(k) == "member":
			r.memberUserID, err = member(s)
		case string(k) == "unavailable" && guildIsID:
			r.unavailable, r.unavailErr, err = boolean(s, "unavailable")
		default:
			_, err = s.Skip()
		}
		if err == nil {
			more, err = s.Next()
		}
	}
	return r, err
}

// wrongType is the error of a routing field whose value v has the wrong type.
func wrongType(v jsonscan.Value, what string) error {
	return fmt.Errorf("%w: %s at offset %d", ErrMalformed, what, v.Start)
}

// idField consumes a value that should be a string or null; any other value is
// consumed too and reported in the field's err.
func idField(s *jsonscan.Scanner, name string) (field, error) {
	v, err := s.Skip()
	switch {
	case err != nil || v.Kind == jsonscan.Null:
		return field{}, err
	case v.Kind != jsonscan.String:
		return field{err: wrongType(v, name+": want a string or null")}, nil
	}
	return field{Value: v}, nil
}

// boolean consumes a value that should be true, false or null (false); any
// other value is consumed too and reported in typeErr.
func boolean(s *jsonscan.Scanner, name string) (v bool, typeErr, err error) {
	b, err := s.Skip()
	switch b.Kind {
	case jsonscan.True:
		return true, nil, err
	case jsonscan.False, jsonscan.Null:
		return false, nil, err
	}
	if err != nil {
		return false, nil, err
	}
	return false, wrongType(b, name+": want a boolean or null"), nil
}

// user consumes a value that should be a user object or null, and returns
// its "id".
func user(s *jsonscan.Scanner, name, idName string) (field, error) {
	if s.Peek() != '{' {
		return notObject(s, name)
	}
	var userID field
	more, err := s.Object()
	for more && err == nil {
		var k []byte
		if k, err = s.Key(); err != nil {
			break
		}
		if string(k) == "id" {
			userID, err = idField(s, idName)
		} else {
			_, err = s.Skip()
		}
		if err == nil {
			more, err = s.Next()
		}
	}
	return userID, err
}

// member consumes a value that should be a member object or null, and
// returns its "user.id".
func member(s *jsonscan.Scanner) (field, error) {
	if s.Peek() != '{' {
		return notObject(s, "member")
	}
	var userID field
	more, err := s.Object()
	for more && err == nil {
		var k []byte
		if k, err = s.Key(); err != nil {
			break
		}
		if string(k) == "user" {
			userID, err = user(s, "member.user", "member.user.id")
		} else {
			_, err = s.Skip()
		}
		if err == nil {
			more, err = s.Next()
		}
	}
	return userID, err
}

// notObject consumes a value where an object was expected: null stands for
// no object, anything else is a wrong type.
func notObject(s *jsonscan.Scanner, name string) (field, error) {
	v, err := s.Skip()
	if err != nil || v.Kind == jsonscan.Null {
		return field{}, err
	}
	return field{err: wrongType(v, name+": want an object or null")}, nil
}

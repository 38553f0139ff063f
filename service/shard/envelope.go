package shard

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/diamondburned/arikawa/v3/utils/ws"

	"github.com/shardpool/gateway/service/event"
	"github.com/shardpool/gateway/service/event/jsonscan"
)

// envelope is a gateway payload {op, s, t, d} with d located, not decoded.
type envelope struct {
	Op ws.OpCode
	S  int64
	T  string
	D  []byte // a sub-slice of the message; copy before keeping it
	// Fields are d's routing fields, located while d was validated, when
	// t came before d (as Discord sends it): event.Router.BuildScanned
	// then does not read d again.
	Fields event.Scanned
}

var errEnvelope = errors.New("malformed gateway payload")

// parseEnvelope reads a gateway message: op, s and t are decoded, d is
// located. It is the hot path's only pass over the whole frame, and a strict
// one: every byte is checked against the JSON grammar, so a payload it
// accepts is one encoding/json accepts too, d included.
//
// The payload is read as encoding/json reads it into a map: keys match
// exactly after unescaping, the last of repeated keys wins, unknown keys
// are skipped. op must be an integer, s an integer or null, t a string or
// null; d may be any value, or absent.
func parseEnvelope(msg []byte) (envelope, error) {
	var env envelope
	err := parseEnvelopeInto(msg, &env, nil)
	return env, err
}

// parseEnvelopeInto is parseEnvelope writing into env, which is large. The
// routing fields are located only for a t that publishes reports true (all
// when nil): for other types, walking d's members costs more than skipping
// it whole.
func parseEnvelopeInto(msg []byte, env *envelope, publishes func(t string) bool) error {
	top := topLevel{locate: true, publishes: publishes}
	s := jsonscan.New(msg, jsonscan.MaxDepth)
	err := top.scan(&s, false)
	if err == nil {
		err = s.End()
	}
	if err == nil {
		return top.envelope(msg, env)
	}
	*env = envelope{}
	return fmt.Errorf("%w: %w", errEnvelope, err)
}

// topLevel are the envelope's members as located in the payload: the last
// occurrence of each, Kind None when absent.
type topLevel struct {
	op, s, t, d jsonscan.Value
	// locate asks for d's routing fields to be located in fields if a
	// string t (that publishes reports true for) comes before an object d;
	// fieldsT is the t they were located for.
	locate    bool
	publishes func(t string) bool
	fields    event.Scanned
	fieldsT   jsonscan.Value
	textOf    jsonscan.Value // the t decoded in tText
	tText     string
}

// envelope decodes op, s and t into env, and checks their types.
func (top *topLevel) envelope(msg []byte, env *envelope) error {
	*env = envelope{}
	op, ok := top.op.Int(msg, strconv.IntSize)
	switch {
	case top.op.Kind == jsonscan.None:
		return fmt.Errorf("%w: no op", errEnvelope)
	case !ok:
		return fmt.Errorf("%w: op is not an integer", errEnvelope)
	}
	env.Op = ws.OpCode(op)
	if top.s.Kind != jsonscan.None && top.s.Kind != jsonscan.Null {
		if env.S, ok = top.s.Int(msg, 64); !ok {
			return fmt.Errorf("%w: s is not an integer", errEnvelope)
		}
	}
	switch top.t.Kind {
	case jsonscan.None, jsonscan.Null:
	case jsonscan.String:
		env.T = top.text(msg)
	default:
		return fmt.Errorf("%w: t is not a string", errEnvelope)
	}
	if top.d.Kind != jsonscan.None {
		env.D = top.d.Bytes(msg)
	}
	// The fields count only if they are those of the last d, located for
	// the last t (a repeated key's last occurrence wins).
	if top.fieldsT.Kind == jsonscan.String && top.t == top.fieldsT && top.d == top.fields.Value() {
		env.Fields = top.fields
	}
	return nil
}

// scan reads the payload's top-level object up to its closing brace, or,
// for a prefix, until op, s and t are all known. A member is recorded only
// once the ',' or '}' after it is read, so that a payload cut short (see
// peekEnvelope) never yields a truncated value.
func (top *topLevel) scan(s *jsonscan.Scanner, prefix bool) error {
	more, err := s.Object()
	for more && err == nil {
		var key []byte
		var v jsonscan.Value
		if key, err = s.Key(); err != nil {
			return err
		}
		if v, err = top.value(s, key); err != nil {
			return err
		}
		if more, err = s.Next(); err != nil {
			return err
		}
		switch string(key) {
		case "op":
			top.op = v
		case "s":
			top.s = v
		case "t":
			top.t = v
		case "d":
			top.d = v
		}
		if prefix && top.op.Kind != jsonscan.None && top.s.Kind != jsonscan.None && top.t.Kind != jsonscan.None {
			return nil
		}
	}
	return err
}

// value consumes a member's value: d, when a string t came before it and it
// is an object, with its routing fields located on the way (the one pass
// over d); anything else with Skip.
func (top *topLevel) value(s *jsonscan.Scanner, key []byte) (jsonscan.Value, error) {
	if !top.locate || string(key) != "d" || top.t.Kind != jsonscan.String || s.Peek() != '{' {
		return s.Skip()
	}
	t := top.text(s.Doc())
	if top.publishes != nil && !top.publishes(t) {
		return s.Skip()
	}
	sc, err := event.ScanData(s, t)
	if err != nil {
		return jsonscan.Value{}, err
	}
	top.fields, top.fieldsT = sc, top.t
	return sc.Value(), nil
}

// text decodes t, once per occurrence.
func (top *topLevel) text(doc []byte) string {
	if top.textOf != top.t {
		top.textOf, top.tText = top.t, eventType(doc, top.t)
	}
	return top.tText
}

// peekEnvelope reads the dispatch type and sequence number from the first
// bytes of a payload that was too large to keep, so that the frame can be
// reported and its sequence accounted for. The prefix may end anywhere,
// typically inside d: the top-level members are read in order until the
// prefix ends (or stops being JSON), and what was read before counts, the
// last occurrence of a repeated key winning. A member cut short is not
// reported. Discord sends t and s before d, so both are usually found.
//
// t is "" unless a string t was read, s is 0 unless an integer s was read,
// and ok reports that both were and that the payload is a dispatch as far
// as the prefix tells (op 0, or op not read).
func peekEnvelope(prefix []byte) (t string, s int64, ok bool) {
	var top topLevel
	sc := jsonscan.New(prefix, jsonscan.MaxDepth)
	_ = top.scan(&sc, true) // an error is where the prefix ends: keep what came before
	if top.t.Kind == jsonscan.String {
		t = eventType(prefix, top.t)
	}
	s, hasS := top.s.Int(prefix, 64)
	op, isInt := top.op.Int(prefix, strconv.IntSize)
	dispatch := top.op.Kind == jsonscan.None || isInt && ws.OpCode(op) == opDispatch
	return t, s, t != "" && hasS && dispatch
}

// knownTypes interns dispatch type names so the hot path does not allocate
// a string per event.
var knownTypes = map[string]string{}

func init() {
	for _, t := range []string{"READY", "RESUMED", "GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE",
		"GUILD_MEMBER_ADD", "GUILD_MEMBER_REMOVE", "GUILD_MEMBER_UPDATE", "GUILD_MEMBERS_CHUNK",
		"INTERACTION_CREATE", "MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_DELETE", "TYPING_START",
		"PRESENCE_UPDATE", "CHANNEL_CREATE", "CHANNEL_UPDATE", "CHANNEL_DELETE", "GUILD_ROLE_CREATE",
		"GUILD_ROLE_UPDATE", "GUILD_ROLE_DELETE", "THREAD_CREATE", "THREAD_UPDATE", "VOICE_STATE_UPDATE"} {
		knownTypes[t] = t
	}
}

// eventType decodes the string t of msg, interned when it is a known type.
func eventType(msg []byte, t jsonscan.Value) string {
	if !t.Escaped {
		if known, ok := knownTypes[string(t.Content(msg))]; ok {
			return known
		}
	}
	return t.Text(msg)
}

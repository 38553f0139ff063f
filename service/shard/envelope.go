package shard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/diamondburned/arikawa/v3/utils/ws"
)

// envelope is a gateway payload {op, s, t, d} with d located, not decoded.
type envelope struct {
	Op ws.OpCode
	S  int64
	T  string
	D  []byte // a sub-slice of the message; copy before keeping it
}

var errEnvelope = errors.New("malformed gateway payload")

// parseEnvelope reads the top level of a gateway message: op, s and t are
// decoded, d is only delimited. This is the hot path's only pass over the
// whole frame; d itself is validated later, and only when it is published
// (event.Build) or needed (READY, GUILD_*).
func parseEnvelope(msg []byte) (envelope, error) {
	var env envelope
	p := envParser{b: msg}
	p.ws()
	if !p.eat('{') {
		return env, p.fail("not a JSON object")
	}
	p.ws()
	if p.eat('}') {
		return env, p.fail("empty payload")
	}
	sawOp := false
	for {
		p.ws()
		key, err := p.key()
		if err != nil {
			return env, err
		}
		p.ws()
		if !p.eat(':') {
			return env, p.fail("missing ':'")
		}
		p.ws()
		start := p.i
		if err := p.skipValue(0); err != nil {
			return env, err
		}
		val := msg[start:p.i]
		switch string(key) {
		case "op":
			n, err := strconv.Atoi(string(val))
			if err != nil {
				return env, p.fail("op is not an integer")
			}
			env.Op, sawOp = ws.OpCode(n), true
		case "s":
			if string(val) != "null" {
				n, err := strconv.ParseInt(string(val), 10, 64)
				if err != nil {
					return env, p.fail("s is not an integer")
				}
				env.S = n
			}
		case "t":
			if string(val) != "null" {
				t, err := eventType(val)
				if err != nil {
					return env, p.fail("t is not a string")
				}
				env.T = t
			}
		case "d":
			env.D = val
		}
		p.ws()
		if p.eat(',') {
			continue
		}
		if p.eat('}') {
			break
		}
		return env, p.fail("expected ',' or '}'")
	}
	p.ws()
	if p.i != len(msg) {
		return env, p.fail("trailing data")
	}
	if !sawOp {
		return env, p.fail("no op")
	}
	return env, nil
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

func eventType(val []byte) (string, error) {
	if len(val) >= 2 && val[0] == '"' && bytes.IndexByte(val[1:len(val)-1], '\\') < 0 {
		raw := val[1 : len(val)-1]
		if t, ok := knownTypes[string(raw)]; ok {
			return t, nil
		}
		return string(raw), nil
	}
	var t string
	err := json.Unmarshal(val, &t)
	return t, err
}

type envParser struct {
	b []byte
	i int
}

func (p *envParser) fail(what string) error {
	return fmt.Errorf("%w: %s at offset %d", errEnvelope, what, p.i)
}

func (p *envParser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *envParser) eat(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// key returns a key's raw bytes (escapes are left as they are: gateway keys
// never need them, and an escaped key simply matches none of ours).
func (p *envParser) key() ([]byte, error) {
	if !p.eat('"') {
		return nil, p.fail("expected a key")
	}
	start := p.i
	if err := p.skipString(); err != nil {
		return nil, err
	}
	return p.b[start : p.i-1], nil
}

// skipString moves past a string whose opening quote was consumed.
func (p *envParser) skipString() error {
	for p.i < len(p.b) {
		i := bytes.IndexAny(p.b[p.i:], "\"\\")
		if i < 0 {
			break
		}
		p.i += i
		if p.b[p.i] == '"' {
			p.i++
			return nil
		}
		p.i += 2 // an escape: skip the backslash and the escaped byte
	}
	p.i = len(p.b)
	return p.fail("unterminated string")
}

// maxEnvelopeDepth bounds nesting, so hostile input cannot recurse deeply.
const maxEnvelopeDepth = 10000

// skipValue moves past one JSON value, checking its structure (brackets,
// strings) but not the contents of its scalars: d is validated by whoever
// needs it.
func (p *envParser) skipValue(depth int) error {
	if depth > maxEnvelopeDepth {
		return p.fail("nested too deeply")
	}
	if p.i >= len(p.b) {
		return p.fail("unexpected end")
	}
	switch c := p.b[p.i]; c {
	case '"':
		p.i++
		return p.skipString()
	case '{', '[':
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		p.i++
		p.ws()
		if p.eat(closer) {
			return nil
		}
		for {
			p.ws()
			if c == '{' {
				if _, err := p.key(); err != nil {
					return err
				}
				p.ws()
				if !p.eat(':') {
					return p.fail("missing ':'")
				}
				p.ws()
			}
			if err := p.skipValue(depth + 1); err != nil {
				return err
			}
			p.ws()
			if p.eat(',') {
				continue
			}
			if p.eat(closer) {
				return nil
			}
			return p.fail("expected ',' or a closing bracket")
		}
	default:
		// A number, true, false or null: up to the next delimiter.
		start := p.i
		for p.i < len(p.b) {
			switch p.b[p.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				if p.i == start {
					return p.fail("empty value")
				}
				return nil
			}
			p.i++
		}
		return p.fail("unexpected end")
	}
}

package event

import (
	"bytes"
	"crypto/sha1"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/shardpool/gateway/service/event/jsonscan"
)

// Content-derived event IDs, for resharding.
//
// While a bot runs two shard counts side by side, Discord sends every
// guild dispatch to two sessions, whose (shard, session, seq) event IDs
// differ. Published with an ID derived from what the event is instead,
// both copies carry the same Nats-Msg-Id and JetStream's duplicate window
// stores one. That is only sound where the content names one event and
// never two: a key shared by two distinct events would make JetStream drop
// the second as a duplicate. So ContentID answers ok only for the types in
// the table below, whose key Discord never repeats; everything else has no
// content key (ok is false) and needs a rule of the caller's.
//
// Keys (the type is part of every key, so a MESSAGE_CREATE and the
// MESSAGE_DELETE of the same message differ):
//
//	INTERACTION_CREATE            id                      a new snowflake per interaction
//	MESSAGE_CREATE                id                      a new snowflake per message
//	MESSAGE_DELETE                id                      a message is deleted once
//	MESSAGE_DELETE_BULK           ids (non-empty)         each message is deleted once, so no two bulks share one
//	GUILD_MEMBER_ADD              guild_id, user.id,      a rejoin has a new joined_at (microseconds)
//	                              joined_at
//	GUILD_ROLE_CREATE             guild_id, role.id       a new snowflake per role
//	GUILD_ROLE_DELETE             guild_id, role_id       a role is deleted once
//	THREAD_CREATE                 id, if newly_created    creation only: the bot being added to a thread
//	                                                      is a THREAD_CREATE of the same id, repeatable
//	GUILD_AUDIT_LOG_ENTRY_CREATE  id                      a new snowflake per entry
//
// No content key, with the reason (the same content can be two events):
//
//	GUILD_CREATE          id + joined_at names the membership, not the dispatch: Discord
//	                      sends it again after each outage of the guild
//	GUILD_DELETE          {id} only: leave, rejoin, leave gives two identical leaves
//	GUILD_MEMBER_REMOVE   {guild_id, user}: a member leaving twice in a minute (after
//	                      rejoining) is two identical payloads
//	GUILD_MEMBER_UPDATE   the member as it now is, with no version or time: a role
//	                      added, removed and added again repeats a payload
//	MESSAGE_UPDATE        edited_timestamp changes only on edits; embeds resolving, a
//	                      pin or a poll's results keep it, and pin, unpin, pin repeats
//	                      a payload
//	MESSAGE_REACTION_*    message, user and emoji: add, remove and add again within
//	                      the window are distinct events with the same content
//	TYPING_START          timestamp has whole seconds: two starts by one user in one
//	                      channel within a second would share it
//	PRESENCE_UPDATE,      the state as it now is: online, idle, online repeats a
//	VOICE_STATE_UPDATE,   payload
//	*_UPDATE
//	GUILD_BAN_ADD/REMOVE  ban, unban, ban repeats a payload
//	anything else         not studied: no key rather than a guess
//
// A hash of the payload bytes would not do either: it gives identical
// repeated payloads, the cases above, one ID.

// contentNamespace is the UUIDv5 namespace of content IDs. It differs from
// idNamespace, so a content ID never equals a (shard, session, seq) ID, and
// must never change: two gateway versions during a rolling upgrade must
// derive the same ID for the same event (a test pins a value).
var contentNamespace = uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://github.com/shardpool/gateway/content-id"))

// contentKey is how a dispatch type's content key is found in d: up to
// three members, each top-level ("id") or one level down ("user.id").
type contentKey struct {
	parts []string
	// whenTrue, if set, is a top-level member that must be true for the
	// key to hold (THREAD_CREATE's newly_created).
	whenTrue string
	// array makes the single part a non-empty array of strings
	// (MESSAGE_DELETE_BULK's ids) rather than a string.
	array bool
}

// maxContentPart is the most members a content key has.
const maxContentPart = 3

var (
	keyID         = contentKey{parts: []string{"id"}}
	keyMemberAdd  = contentKey{parts: []string{"guild_id", "user.id", "joined_at"}}
	keyRoleCreate = contentKey{parts: []string{"guild_id", "role.id"}}
	keyRoleDelete = contentKey{parts: []string{"guild_id", "role_id"}}
	keyThread     = contentKey{parts: []string{"id"}, whenTrue: "newly_created"}
	keyDeleteBulk = contentKey{parts: []string{"ids"}, array: true}
)

// contentKeyOf returns the content key of dispatch type t; ok is false for
// a type without one.
func contentKeyOf(t string) (k *contentKey, ok bool) {
	switch t {
	case "INTERACTION_CREATE", "MESSAGE_CREATE", "MESSAGE_DELETE", "GUILD_AUDIT_LOG_ENTRY_CREATE":
		return &keyID, true
	case "MESSAGE_DELETE_BULK":
		return &keyDeleteBulk, true
	case "GUILD_MEMBER_ADD":
		return &keyMemberAdd, true
	case "GUILD_ROLE_CREATE":
		return &keyRoleCreate, true
	case "GUILD_ROLE_DELETE":
		return &keyRoleDelete, true
	case "THREAD_CREATE":
		return &keyThread, true
	}
	return nil, false
}

// HasContentKey reports whether dispatch type t has a content key at all,
// without reading a payload: false means ContentID is always false for it.
func HasContentKey(t string) bool {
	_, ok := contentKeyOf(t)
	return ok
}

// ContentID returns the content-derived event ID of the dispatch (t, d): a
// UUIDv5 of the type and its key members (see the table above), the same
// for every copy of the event whichever session received it. ok is false
// when t has no content key, when d lacks a key member (or it is null, or
// not a string), when THREAD_CREATE is not newly_created, and when d is
// not a well-formed JSON object.
func ContentID(t string, d []byte) (id string, ok bool) {
	u, ok := ContentUUID(t, d)
	if !ok {
		return "", false
	}
	return u.String(), true
}

// ContentUUID is ContentID as a UUID, without allocating.
func ContentUUID(t string, d []byte) (uuid.UUID, bool) {
	k, ok := contentKeyOf(t)
	if !ok {
		return uuid.UUID{}, false
	}
	var found [maxContentPart]jsonscan.Value
	if !k.find(d, &found) {
		return uuid.UUID{}, false
	}
	return contentUUID(t, d, found[:len(k.parts)]), true
}

// contentUUID hashes the namespace, the type and each key member's JSON
// text. A JSON string or array is self-delimiting, so the concatenation
// is unambiguous; a member too long for the stack buffer (a large bulk
// delete) is replaced by '#' and its SHA-1, which no JSON text starts with.
func contentUUID(t string, d []byte, parts []jsonscan.Value) uuid.UUID {
	var buf [512]byte
	b := append(buf[:0], contentNamespace[:]...)
	b = append(b, t...)
	for _, v := range parts {
		text := v.Bytes(d)
		if len(b)+len(text) > len(buf) {
			sum := sha1.Sum(text)
			b = append(append(b, '#'), sum[:]...)
			continue
		}
		b = append(b, text...)
	}
	sum := sha1.Sum(b)
	var u uuid.UUID
	copy(u[:], sum[:])
	u[6] = u[6]&0x0f | 0x50 // version 5
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	return u
}

// find locates the key's members in d, checking that d is a well-formed
// JSON object. A repeated member counts with its last occurrence, as in
// the rest of the package.
func (k *contentKey) find(d []byte, found *[maxContentPart]jsonscan.Value) bool {
	s := jsonscan.New(d, maxDepth)
	if s.Peek() != '{' {
		return false
	}
	condition := k.whenTrue == ""
	more, err := s.Object()
	for more && err == nil {
		var name []byte
		if name, err = s.Key(); err != nil {
			break
		}
		switch {
		case k.whenTrue != "" && string(name) == k.whenTrue:
			var v jsonscan.Value
			v, err = s.Skip()
			condition = v.Kind == jsonscan.True
		case k.parent(name):
			err = k.findNested(&s, name, found)
		default:
			err = k.take(&s, name, found)
		}
		if err == nil {
			more, err = s.Next()
		}
	}
	if err != nil || s.End() != nil || !condition {
		return false
	}
	for i := range k.parts {
		if !k.usable(d, found[i]) {
			return false
		}
	}
	return true
}

// usable reports whether v can stand as a key member: a string, or for an
// array key a non-empty array (its elements are validated by the scanner
// and Discord's are snowflake strings).
func (k *contentKey) usable(d []byte, v jsonscan.Value) bool {
	if k.array {
		return v.Kind == jsonscan.Array && bytes.IndexByte(v.Bytes(d), '"') >= 0
	}
	return v.Kind == jsonscan.String
}

// parent reports whether name is the object of a nested part ("user" of
// "user.id").
func (k *contentKey) parent(name []byte) bool {
	for _, p := range k.parts {
		if i := indexDot(p); i >= 0 && p[:i] == string(name) {
			return true
		}
	}
	return false
}

// take consumes the value of the member at path ("id", or "user.id"
// inside findNested) and keeps it if it is a key part.
func (k *contentKey) take(s *jsonscan.Scanner, path []byte, found *[maxContentPart]jsonscan.Value) error {
	v, err := s.Skip()
	if err != nil {
		return err
	}
	for i, p := range k.parts {
		if p == string(path) {
			found[i] = v
		}
	}
	return nil
}

// findNested walks the object of member name, keeping the nested parts
// it holds; a null or any other value stands for no object. A later
// occurrence of name replaces an earlier one whole, as when decoding.
func (k *contentKey) findNested(s *jsonscan.Scanner, name []byte, found *[maxContentPart]jsonscan.Value) error {
	for i, p := range k.parts {
		if j := indexDot(p); j >= 0 && p[:j] == string(name) {
			found[i] = jsonscan.Value{}
		}
	}
	if s.Peek() != '{' {
		_, err := s.Skip()
		return err
	}
	more, err := s.Object()
	for more && err == nil {
		var member []byte
		if member, err = s.Key(); err != nil {
			return err
		}
		var path [64]byte
		p := append(append(append(path[:0], name...), '.'), member...)
		if err = k.take(s, p, found); err == nil {
			more, err = s.Next()
		}
	}
	return err
}

func indexDot(p string) int {
	for i := 0; i < len(p); i++ {
		if p[i] == '.' {
			return i
		}
	}
	return -1
}

// UseContentID gives ev, built by Build or Router.Build from the dispatch
// (t, d), the content-derived ID of (t, d) instead of the one derived from
// (shard, session, seq): Event.ID (the Nats-Msg-Id) and the body's
// event_id, rewritten in place. It reports false, leaving ev as it is,
// when (t, d) has no content key (see ContentID); the caller then applies
// its rule for such types. The orchestration calls it on the events it
// publishes while two shard counts overlap; Build itself is unchanged.
func UseContentID(ev *Event, t string, d []byte) (bool, error) {
	u, ok := ContentUUID(t, d)
	if !ok {
		return false, nil
	}
	if err := ev.setID(u); err != nil {
		return false, err
	}
	return true, nil
}

// bodyIDPrefix is how every body begins, with the event_id after it.
const bodyIDPrefix = `{"event_id":"`

// errBodyID is returned when an event's body does not begin with its ID.
var errBodyID = errors.New("event: body does not begin with the event's event_id")

// setID replaces ev's ID, in Event.ID and at the head of the body: both
// IDs are 36-character UUIDs, so the body keeps its length.
func (ev *Event) setID(u uuid.UUID) error {
	const n = len(bodyIDPrefix)
	b := ev.Body
	if len(ev.ID) != 36 || len(b) < n+36 || string(b[:n]) != bodyIDPrefix || string(b[n:n+36]) != ev.ID {
		return fmt.Errorf("%w (id %q)", errBodyID, ev.ID)
	}
	ev.ID = u.String()
	copy(b[n:n+36], ev.ID)
	return nil
}

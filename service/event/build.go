package event

import (
	"crypto/sha1"
	"strconv"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/google/uuid"

	"github.com/shardpool/gateway/service/event/jsonscan"
)

// idNamespace is the UUIDv5 namespace of event IDs. It must never change:
// JetStream deduplicates a replayed dispatch only if every gateway version
// derives the same ID for it (a test pins its value).
var idNamespace = uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://github.com/shardpool/gateway/event-id"))

// ID returns the event ID of the dispatch seq of session sessionID on shard
// shardID: the UUIDv5 of "shard:session:seq" in a fixed namespace. A
// dispatch replayed after a resume gets the same ID, so JetStream drops the
// copy (Nats-Msg-Id); a new session or another shard never collides.
func ID(shardID int, sessionID string, seq int64) string {
	return id(shardID, sessionID, seq).String()
}

// id computes what uuid.NewSHA1(idNamespace, name) does, hashing from a stack
// buffer so the common case does not allocate.
func id(shardID int, sessionID string, seq int64) uuid.UUID {
	var buf [128]byte
	b := append(buf[:0], idNamespace[:]...)
	// The name is unambiguous although a session ID could contain ':',
	// because the shard and the seq, first and last, cannot.
	b = strconv.AppendInt(b, int64(shardID), 10)
	b = append(b, ':')
	b = append(b, sessionID...)
	b = append(b, ':')
	b = strconv.AppendInt(b, seq, 10)
	sum := sha1.Sum(b)
	var u uuid.UUID
	copy(u[:], sum[:])
	u[6] = u[6]&0x0f | 0x50 // version 5
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	return u
}

// Build turns the dispatch (t, d) with sequence seq, received by shard
// shardID in session sessionID at receivedAt, into the event to publish.
//
// publish is false, with a nil event and no error, for a dispatch type the
// gateway does not publish (d is then not read at all) and for a GUILD_DELETE
// that announces an outage ("unavailable": true) rather than a leave. err
// wraps ErrMalformed when d is not a well-formed JSON object or a routing
// field has the wrong type.
//
// The body is
//
//	{"event_id","event_type","shard_id","timestamp","guild_id","channel_id","user_id","data"}
//
// with timestamp in Unix milliseconds, the IDs strings or null, and data the
// bytes of d exactly as Discord sent them.
func Build(shardID int, sessionID string, seq int64, t string, d []byte, receivedAt time.Time) (ev *Event, publish bool, err error) {
	eventType, subject, ok := Route(t)
	if !ok {
		return nil, false, nil
	}
	return build(eventType, subject, shardID, sessionID, seq, t, d, nil, receivedAt)
}

// build is Build once the route is known (Router.Build shares it). sc, if
// not nil, may hold d's routing fields already (see ScanData).
func build(eventType, subject string, shardID int, sessionID string, seq int64, t string, d []byte, sc *Scanned, receivedAt time.Time) (ev *Event, publish bool, err error) {
	r, ok := sc.fields(t, d)
	if !ok {
		if r, err = scan(t, d); err != nil {
			return nil, false, err
		}
	}
	if t == dispatchGuildDelete && r.unavailable {
		return nil, false, nil
	}
	guild, channel, user := r.guild(t), r.channelID.Value, r.user()

	// One buffer of at least the exact size: the constant parts, then the
	// variable ones. IDs are copied as they appear in d, still escaped,
	// because the scanner has checked that they are valid JSON strings.
	// Event.ID and GuildID are strings over the body's bytes (see Release).
	const fixed = len(`{"event_id":"","event_type":"","shard_id":,"timestamp":,"guild_id":,"channel_id":,"user_id":,"data":}`)
	n := fixed + uuidLen + len(eventType) + 20 + 20 +
		jsonLen(guild) + jsonLen(channel) + jsonLen(user) + len(d)
	ev = newEvent(n)
	b := append(ev.Body[:0], `{"event_id":"`...)
	idAt := len(b)
	b = appendUUID(b, id(shardID, sessionID, seq))
	b = append(b, `","event_type":"`...)
	b = append(b, eventType...)
	b = append(b, `","shard_id":`...)
	b = strconv.AppendInt(b, int64(shardID), 10)
	b = append(b, `,"timestamp":`...)
	b = strconv.AppendInt(b, receivedAt.UnixMilli(), 10)
	b = append(b, `,"guild_id":`...)
	guildAt := len(b) + 1
	b = appendID(b, d, guild)
	b = append(b, `,"channel_id":`...)
	b = appendID(b, d, channel)
	b = append(b, `,"user_id":`...)
	b = appendID(b, d, user)
	b = append(b, `,"data":`...)
	b = append(b, d...)
	b = append(b, '}')

	*ev = Event{
		ID:         unsafe.String(&b[idAt], uuidLen),
		Type:       eventType,
		Subject:    subject,
		ShardID:    shardID,
		Seq:        seq,
		GuildID:    textAt(b, guildAt, d, guild),
		ReceivedAt: receivedAt,
		Body:       b,
	}
	return ev, true, nil
}

// textAt decodes the ID v of d like text, as a string over its copy in the
// body at b[at:] when it needs no decoding (IDs always: digits).
func textAt(b []byte, at int, d []byte, v jsonscan.Value) string {
	if v.Kind != jsonscan.String {
		return ""
	}
	content := v.Content(d)
	if v.Escaped || len(content) == 0 || !utf8.Valid(content) {
		return v.Text(d)
	}
	return unsafe.String(&b[at], len(content))
}

// uuidLen is the length of a UUID's text.
const uuidLen = 36

// appendUUID appends u as uuid.UUID.String formats it.
func appendUUID(b []byte, u uuid.UUID) []byte {
	const hex = "0123456789abcdef"
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hex[c>>4], hex[c&0x0f])
	}
	return b
}

// jsonLen is the length of the ID v encoded in the body: quoted, or null.
func jsonLen(v jsonscan.Value) int {
	if v.Kind != jsonscan.String {
		return len("null")
	}
	return v.End - v.Start
}

// appendID appends the ID v of d as it is in d (a JSON string, quoted), or
// null if there is none.
func appendID(b, d []byte, v jsonscan.Value) []byte {
	if v.Kind != jsonscan.String {
		return append(b, "null"...)
	}
	return append(b, v.Bytes(d)...)
}

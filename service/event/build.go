package event

import (
	"crypto/sha1"
	"strconv"
	"time"

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

	eventID := ID(shardID, sessionID, seq)
	// One allocation of the exact size: the constant parts, then the
	// variable ones. IDs are copied as they appear in d, still escaped,
	// because the scanner has checked that they are valid JSON strings.
	const fixed = len(`{"event_id":"","event_type":"","shard_id":,"timestamp":,"guild_id":,"channel_id":,"user_id":,"data":}`)
	n := fixed + len(eventID) + len(eventType) + 20 + 20 +
		jsonLen(guild) + jsonLen(channel) + jsonLen(user) + len(d)
	b := make([]byte, 0, n)
	b = append(b, `{"event_id":"`...)
	b = append(b, eventID...)
	b = append(b, `","event_type":"`...)
	b = append(b, eventType...)
	b = append(b, `","shard_id":`...)
	b = strconv.AppendInt(b, int64(shardID), 10)
	b = append(b, `,"timestamp":`...)
	b = strconv.AppendInt(b, receivedAt.UnixMilli(), 10)
	b = append(b, `,"guild_id":`...)
	b = appendID(b, d, guild)
	b = append(b, `,"channel_id":`...)
	b = appendID(b, d, channel)
	b = append(b, `,"user_id":`...)
	b = appendID(b, d, user)
	b = append(b, `,"data":`...)
	b = append(b, d...)
	b = append(b, '}')

	return &Event{
		ID:         eventID,
		Type:       eventType,
		Subject:    subject,
		ShardID:    shardID,
		Seq:        seq,
		GuildID:    text(d, guild),
		ReceivedAt: receivedAt,
		Body:       b,
	}, true, nil
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

// Package event turns Discord gateway dispatches into the small JSON events
// the gateway publishes: the routing table (dispatch type → event_type and
// subject), the message body and the deterministic event ID.
package event

import "time"

// Event is one routed Discord dispatch, ready to publish.
type Event struct {
	// ID is a UUID derived from (shard, session, seq); it is sent as the
	// Nats-Msg-Id header so JetStream drops a replayed copy.
	ID string
	// Type is the event_type, e.g. "member.join".
	Type string
	// Subject is the NATS subject, e.g. "events.member.join".
	Subject string
	// ShardID is the shard that received the dispatch.
	ShardID int
	// Seq is the dispatch's gateway sequence number within its session.
	Seq int64
	// GuildID is the guild the event belongs to ("" when none), for logs.
	GuildID string
	// ReceivedAt is when the shard read the dispatch off the socket.
	ReceivedAt time.Time
	// Body is the JSON message body.
	Body []byte
}

// Size is the number of bytes the event occupies in a publish buffer.
func (e *Event) Size() int { return len(e.Body) + len(e.ID) + len(e.Subject) }

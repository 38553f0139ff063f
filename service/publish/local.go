package publish

import (
	"context"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/shardpool/gateway/service/event"
)

// Local is the publisher of local mode (no NATS_URL): each event is logged at
// debug level and acknowledged at once, so the rest of the pipeline (counts,
// resume points) behaves as with a broker.
func Local(logger log.Logger) Publisher {
	return PublisherFunc(func(_ context.Context, ev *event.Event, done Done) error {
		level.Debug(logger).Log("msg", "event", "subject", ev.Subject, "event_id", ev.ID, "shard_id", ev.ShardID, "guild_id", ev.GuildID, "bytes", len(ev.Body))
		done(nil)
		return nil
	})
}

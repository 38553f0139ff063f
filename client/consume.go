package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// The gateway's streams.
const (
	// StreamEvents holds events.> : the events table's guild and member
	// events and the EXTRA_EVENTS (events.dispatch.<NAME>).
	StreamEvents = "EVENTS"
	// StreamCommands holds commands.> : interactions.
	StreamCommands = "COMMANDS"
)

// Envelope is one event as the gateway publishes it; Data is the
// dispatch's d exactly as Discord sent it.
type Envelope struct {
	EventID   string          `json:"event_id"`
	EventType string          `json:"event_type"` // member.join, ..., or the dispatch NAME of an extra event
	ShardID   int             `json:"shard_id"`
	Timestamp int64           `json:"timestamp"` // unix ms when the shard read it
	GuildID   *string         `json:"guild_id"`
	ChannelID *string         `json:"channel_id"`
	UserID    *string         `json:"user_id"`
	Data      json.RawMessage `json:"data"`
	// Subject is the NATS subject it was published on.
	Subject string `json:"-"`
}

// ConsumeConfig names a durable consumer.
type ConsumeConfig struct {
	Stream string // StreamEvents or StreamCommands
	// Durable is the consumer's name: workers that share it share the
	// events; a restarted worker goes on where it stopped.
	Durable string
	// Subjects filter the stream (e.g. events.member.>); none: all of it.
	Subjects []string
}

// Handler handles one event; the event is acked when it returns nil and
// redelivered later otherwise.
type Handler func(ctx context.Context, e Envelope) error

// Consume creates (or updates) the durable consumer and hands each event to
// handle until ctx ends. An event whose body is not an envelope is
// terminated: redelivering it cannot help.
func (c *Client) Consume(ctx context.Context, cfg ConsumeConfig, handle Handler) error {
	js, err := jetstream.New(c.nc)
	if err != nil {
		return err
	}
	if cfg.Stream == "" || cfg.Durable == "" {
		return errors.New("consume: Stream and Durable are required")
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, cfg.Stream, jetstream.ConsumerConfig{
		Durable: cfg.Durable, FilterSubjects: cfg.Subjects, AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		return fmt.Errorf("consumer %s on %s: %w", cfg.Durable, cfg.Stream, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var e Envelope
		if err := json.Unmarshal(m.Data(), &e); err != nil {
			_ = m.Term()
			return
		}
		e.Subject = m.Subject()
		if err := handle(ctx, e); err != nil {
			_ = m.Nak()
			return
		}
		_ = m.Ack()
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	cc.Stop()
	return nil
}

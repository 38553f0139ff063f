package jetstream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Names of the streams the gateway publishes to.
const (
	StreamEvents   = "EVENTS"
	StreamCommands = "COMMANDS"
)

// DuplicateWindow is how long JetStream remembers a Nats-Msg-Id, capped at
// a stream's max age. It covers a gateway resume (Discord replays the missed
// dispatches within seconds) and the publish retries of a broker outage the
// circuit breaker rides out.
const DuplicateWindow = 2 * time.Minute

// StreamConfig is what differs between deployments.
type StreamConfig struct {
	// Storage is file (survives a NATS restart) or memory (faster).
	Storage jetstream.StorageType
	// Replicas is the number of copies in a cluster; below 1 means 1.
	Replicas int
}

// Streams returns the definitions of the EVENTS and COMMANDS streams. The
// unlimited limits are spelled out (-1, as the server reports them) so the
// definitions compare equal to what a server returns and to deploy/.
func Streams(cfg StreamConfig) []jetstream.StreamConfig {
	replicas := max(cfg.Replicas, 1)
	stream := func(name, description, subjects string, maxAge time.Duration) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:              name,
			Description:       description,
			Subjects:          []string{subjects},
			Retention:         jetstream.LimitsPolicy,
			MaxConsumers:      -1,
			MaxMsgs:           -1,
			MaxBytes:          -1,
			Discard:           jetstream.DiscardOld,
			MaxAge:            maxAge,
			MaxMsgsPerSubject: -1,
			MaxMsgSize:        -1,
			Storage:           cfg.Storage,
			Replicas:          replicas,
			// NATS refuses a duplicate window longer than the max age,
			// and a copy arriving after the original expired would find
			// nothing to be a duplicate of anyway.
			Duplicates: min(DuplicateWindow, maxAge),
		}
	}
	return []jetstream.StreamConfig{
		// Membership events feed consumers that may lag a little (a
		// deploy, a restart); 5 minutes covers that without turning the
		// stream into a store.
		stream(StreamEvents, "Discord guild and member events from the gateway", "events.>", 5*time.Minute),
		// An interaction must be answered within 3 s; one older than a
		// minute is useless to a command handler.
		stream(StreamCommands, "Discord interactions from the gateway", "commands.>", time.Minute),
	}
}

// NotEnabledError says that the NATS server, or the connection's account on
// it, has no JetStream, and how to turn it on. It unwraps to the client's
// jetstream.ErrJetStreamNotEnabled or ErrJetStreamNotEnabledForAccount.
type NotEnabledError struct {
	// Server is the URL of the server asked, credentials redacted.
	Server string
	// Account is true when the server runs JetStream but not for the
	// connection's account.
	Account bool
	err     error
}

func (e *NotEnabledError) Error() string {
	if e.Account {
		return "JetStream is not enabled for this account on the NATS server " + e.Server +
			": enable it for the account (jetstream: enabled in its block of the server configuration, or JetStream limits in its JWT)"
	}
	return "JetStream is not enabled on the NATS server " + e.Server +
		": start the server with -js (nats-server -js), or add jetstream {} to its configuration file"
}

func (e *NotEnabledError) Unwrap() error { return e.err }

// CheckJetStream asks the server for the account's JetStream information.
// It returns nil when JetStream answers, a *NotEnabledError when the server
// or the account has none (the request then finds no responders, or an
// error saying so), or else the request's error (not connected, a timeout).
func CheckJetStream(ctx context.Context, js jetstream.JetStream) error {
	_, err := js.AccountInfo(ctx)
	return notEnabled(js, err)
}

// notEnabled turns err into a *NotEnabledError when it says that JetStream
// is off, and returns it as it is otherwise.
func notEnabled(js jetstream.JetStream, err error) error {
	var e *NotEnabledError
	switch {
	case errors.As(err, &e):
		return err
	case errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return &NotEnabledError{Server: RedactURL(js.Conn().ConnectedUrl()), Account: true, err: err}
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled),
		// Without JetStream nobody serves the JetStream API.
		errors.Is(err, nats.ErrNoResponders):
		return &NotEnabledError{Server: RedactURL(js.Conn().ConnectedUrl()), err: jetstream.ErrJetStreamNotEnabled}
	}
	return err
}

// EnsureStreams creates the streams of Streams(cfg) that are missing and
// updates those whose settings differ, leaving settings Streams does not
// define as they are. A stream whose storage type differs is used as it is,
// with a warning, because NATS cannot change storage in place (the stream
// would have to be deleted, losing its messages); its other settings are
// still updated. Without JetStream it fails with a *NotEnabledError.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfg StreamConfig, logger log.Logger) error {
	for _, want := range Streams(cfg) {
		if err := ensureStream(ctx, js, want, logger); err != nil {
			var off *NotEnabledError
			if err := notEnabled(js, err); errors.As(err, &off) {
				return err // about the server, not this stream
			}
			return fmt.Errorf("stream %s: %w", want.Name, err)
		}
	}
	return nil
}

func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig, logger log.Logger) error {
	s, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := js.CreateStream(ctx, want); err != nil {
			return fmt.Errorf("create: %w", err)
		}
		level.Info(logger).Log("msg", "stream created", "stream", want.Name, "subjects", want.Subjects[0],
			"storage", want.Storage, "replicas", want.Replicas, "max_age", want.MaxAge)
		return nil
	}
	if err != nil {
		return err
	}
	have := s.CachedInfo().Config
	if have.Storage != want.Storage {
		level.Warn(logger).Log("msg", "stream exists with another storage type, which NATS cannot change in place; using it as it is (delete the stream to change it)",
			"stream", want.Name, "storage", have.Storage, "configured_storage", want.Storage)
		want.Storage = have.Storage
	}
	update := overlay(have, want)
	if sameDefined(have, update) {
		level.Debug(logger).Log("msg", "stream up to date", "stream", want.Name)
		return nil
	}
	if _, err := js.UpdateStream(ctx, update); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	level.Info(logger).Log("msg", "stream updated", "stream", want.Name, "subjects", want.Subjects[0],
		"storage", update.Storage, "replicas", want.Replicas, "max_age", want.MaxAge, "duplicates", want.Duplicates)
	return nil
}

// overlay returns have with the settings Streams defines taken from want.
func overlay(have, want jetstream.StreamConfig) jetstream.StreamConfig {
	c := have
	c.Description = want.Description
	c.Subjects = want.Subjects
	c.Retention = want.Retention
	c.MaxConsumers = want.MaxConsumers
	c.MaxMsgs = want.MaxMsgs
	c.MaxBytes = want.MaxBytes
	c.Discard = want.Discard
	c.MaxAge = want.MaxAge
	c.MaxMsgsPerSubject = want.MaxMsgsPerSubject
	c.MaxMsgSize = want.MaxMsgSize
	c.Storage = want.Storage
	c.Replicas = want.Replicas
	c.Duplicates = want.Duplicates
	return c
}

// sameDefined reports whether a and b agree on the settings Streams defines.
func sameDefined(a, b jetstream.StreamConfig) bool {
	return a.Description == b.Description &&
		slices.Equal(sorted(a.Subjects), sorted(b.Subjects)) &&
		a.Retention == b.Retention &&
		a.MaxConsumers == b.MaxConsumers &&
		a.MaxMsgs == b.MaxMsgs &&
		a.MaxBytes == b.MaxBytes &&
		a.Discard == b.Discard &&
		a.MaxAge == b.MaxAge &&
		a.MaxMsgsPerSubject == b.MaxMsgsPerSubject &&
		a.MaxMsgSize == b.MaxMsgSize &&
		a.Storage == b.Storage &&
		a.Replicas == b.Replicas &&
		a.Duplicates == b.Duplicates
}

func sorted(s []string) []string {
	return slices.Sorted(slices.Values(s))
}

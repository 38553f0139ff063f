package jetstream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
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

// StreamKeeper ensures the streams after every connect. A stream that is
// missing (a new deployment, a lone server with memory storage that
// restarted) is created with the settings of Streams. A stream that exists
// is used as it is: operators change max message size, limits or placement
// with the nats CLI or a NATS operator, and a gateway reconnecting must not
// undo that. Where an existing stream differs from Streams, the keeper says
// so once, at warn, and again only when the differences change.
type StreamKeeper struct {
	cfg    StreamConfig
	logger log.Logger

	mu     sync.Mutex
	warned map[string]string // stream name → the differences logged last
}

// NewStreamKeeper returns a StreamKeeper for the streams of Streams(cfg).
func NewStreamKeeper(cfg StreamConfig, logger log.Logger) *StreamKeeper {
	return &StreamKeeper{cfg: cfg, logger: logger, warned: map[string]string{}}
}

// Ensure creates the streams that are missing and checks those that exist.
// Without JetStream it fails with a *NotEnabledError.
func (k *StreamKeeper) Ensure(ctx context.Context, js jetstream.JetStream) error {
	for _, want := range Streams(k.cfg) {
		if err := k.ensure(ctx, js, want); err != nil {
			var off *NotEnabledError
			if err := notEnabled(js, err); errors.As(err, &off) {
				return err // about the server, not this stream
			}
			return fmt.Errorf("stream %s: %w", want.Name, err)
		}
	}
	return nil
}

// EnsureStreams ensures the streams once, as a new StreamKeeper does.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfg StreamConfig, logger log.Logger) error {
	return NewStreamKeeper(cfg, logger).Ensure(ctx, js)
}

func (k *StreamKeeper) ensure(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) error {
	s, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := js.CreateStream(ctx, want); err != nil {
			return fmt.Errorf("create: %w", err)
		}
		level.Info(k.logger).Log("msg", "stream created", "stream", want.Name, "subjects", want.Subjects[0],
			"storage", want.Storage, "replicas", want.Replicas, "max_age", want.MaxAge)
		return nil
	}
	if err != nil {
		return err
	}
	k.report(want.Name, differences(s.CachedInfo().Config, want))
	return nil
}

// report logs the differences of an existing stream, unless they are
// those it logged last time.
func (k *StreamKeeper) report(stream string, diffs []string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	joined := strings.Join(diffs, ", ")
	if len(diffs) == 0 {
		k.warned[stream] = ""
		level.Debug(k.logger).Log("msg", "stream up to date", "stream", stream)
		return
	}
	if k.warned[stream] == joined {
		return
	}
	k.warned[stream] = joined
	level.Warn(k.logger).Log("msg", "stream settings differ from the recommended ones; using the stream as it is (the gateway never changes an existing stream)",
		"stream", stream, "differ", joined)
}

// differences lists, as "name=have (recommended want)" with the names of
// the NATS stream configuration, each setting that Streams defines and
// have does not share. The description is left out: it changes nothing.
func differences(have, want jetstream.StreamConfig) []string {
	var d []string
	add := func(name string, same bool, h, w any) {
		if !same {
			d = append(d, fmt.Sprintf("%s=%v (recommended %v)", name, h, w))
		}
	}
	add("subjects", slices.Equal(sorted(have.Subjects), sorted(want.Subjects)), strings.Join(have.Subjects, " "), strings.Join(want.Subjects, " "))
	add("retention", have.Retention == want.Retention, have.Retention, want.Retention)
	add("max_consumers", have.MaxConsumers == want.MaxConsumers, have.MaxConsumers, want.MaxConsumers)
	add("max_msgs", have.MaxMsgs == want.MaxMsgs, have.MaxMsgs, want.MaxMsgs)
	add("max_bytes", have.MaxBytes == want.MaxBytes, have.MaxBytes, want.MaxBytes)
	add("discard", have.Discard == want.Discard, have.Discard, want.Discard)
	add("max_age", have.MaxAge == want.MaxAge, have.MaxAge, want.MaxAge)
	add("max_msgs_per_subject", have.MaxMsgsPerSubject == want.MaxMsgsPerSubject, have.MaxMsgsPerSubject, want.MaxMsgsPerSubject)
	add("max_msg_size", have.MaxMsgSize == want.MaxMsgSize, have.MaxMsgSize, want.MaxMsgSize)
	add("storage", have.Storage == want.Storage, have.Storage, want.Storage)
	add("num_replicas", have.Replicas == want.Replicas, have.Replicas, want.Replicas)
	add("duplicate_window", have.Duplicates == want.Duplicates, have.Duplicates, want.Duplicates)
	return d
}

func sorted(s []string) []string {
	return slices.Sorted(slices.Values(s))
}

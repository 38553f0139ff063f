package jetstream

import (
	"fmt"
	"strings"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/nats-io/nats.go"
)

// ReconnectWait is the pause between two reconnect attempts to the same
// server (the client adds jitter, so a pool of gateways does not reconnect
// in lockstep). Short, because while NATS is away events queue up in the
// publish buffer.
const ReconnectWait = time.Second

// Connect connects to the NATS servers at url (a comma-separated list) as
// name, and keeps reconnecting forever, also when no server is reachable at
// start: it fails only on an invalid url or option. onState, if not nil, is
// called with true on connect and reconnect, and false on disconnect and
// close. extra options are applied last, so they override these.
//
// The client's reconnect buffer is disabled: while disconnected, a publish
// fails at once instead of sitting in a buffer the publish path cannot see,
// and the circuit breaker and buffer above the Publisher take over.
//
// Credentials in url never reach a log line or the returned error.
func Connect(url, name string, logger log.Logger, onState func(connected bool), extra ...nats.Option) (*nats.Conn, error) {
	state := func(connected bool) {
		if onState != nil {
			onState(connected)
		}
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(ReconnectWait),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectBufSize(-1),
		nats.ConnectHandler(func(nc *nats.Conn) {
			level.Info(logger).Log("msg", "NATS connected", "url", RedactURL(nc.ConnectedUrl()), "server", nc.ConnectedServerName())
			state(true)
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err != nil {
				level.Warn(logger).Log("msg", "NATS disconnected; reconnecting", "err", err)
			} else {
				level.Info(logger).Log("msg", "NATS disconnected")
			}
			state(false)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			level.Info(logger).Log("msg", "NATS reconnected", "url", RedactURL(nc.ConnectedUrl()), "server", nc.ConnectedServerName())
			state(true)
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			level.Info(logger).Log("msg", "NATS connection closed")
			state(false)
		}),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			// Asynchronous protocol errors: a slow consumer on the ack
			// subscription, a permissions violation on publish, ...
			kv := []any{"msg", "NATS error", "err", err}
			if sub != nil {
				kv = append(kv, "subject", sub.Subject)
			}
			level.Error(logger).Log(kv...)
		}),
	}
	nc, err := nats.Connect(url, append(opts, extra...)...)
	if err != nil {
		// Parse errors quote the URL as given, password included.
		return nil, &redactedError{
			msg: fmt.Sprintf("nats: connect to %s: %s", RedactURL(url), strings.ReplaceAll(err.Error(), url, RedactURL(url))),
			err: err,
		}
	}
	return nc, nil
}

// redactedError is an error whose message has had credentials removed, but
// which still unwraps to the original for errors.Is.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// RedactURL replaces the user information (user:password, a token, or an
// nkey) of every URL in a comma-separated list with "redacted", leaving the
// scheme, host and port readable. It works on unparseable URLs too.
func RedactURL(urls string) string {
	if !strings.Contains(urls, "@") {
		return urls
	}
	parts := strings.Split(urls, ",")
	for i, u := range parts {
		authority := 0
		if j := strings.Index(u, "://"); j >= 0 {
			authority = j + len("://")
		}
		// Everything up to the last '@' goes, not just up to the first
		// '/': a password may hold an unescaped '/' or '@', and NATS URLs
		// have no path whose '@' this could over-redact.
		if at := strings.LastIndexByte(u[authority:], '@'); at >= 0 {
			parts[i] = u[:authority] + "redacted" + u[authority+at:]
		}
	}
	return strings.Join(parts, ",")
}

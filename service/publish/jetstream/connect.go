package jetstream

import (
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// ReconnectWait is the pause between two reconnect attempts to the same
// server (the client adds jitter, so a pool of gateways does not reconnect
// in lockstep). Short, because while NATS is away events queue up in the
// publish buffer.
const ReconnectWait = time.Second

// Connect connects to the NATS servers at url (a comma-separated list) as
// name, and keeps reconnecting forever, also when no server is reachable at
// start: it fails only on an invalid url or option. mon (nil: a silent one)
// logs the connection's life and keeps its last error. extra options are
// applied last, so they override these.
//
// The client's reconnect buffer is disabled: while disconnected, a publish
// fails at once instead of sitting in a buffer the publish path cannot see,
// and the circuit breaker and buffer above the Publisher take over.
//
// Credentials in url never reach a log line, mon or the returned error.
func Connect(url, name string, mon *Monitor, extra ...nats.Option) (*nats.Conn, error) {
	if mon == nil {
		mon = &Monitor{}
	}
	mon.watch(url)
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(ReconnectWait),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectBufSize(-1),
		nats.ConnectHandler(func(nc *nats.Conn) { mon.connected(nc, "NATS connected") }),
		nats.ReconnectHandler(func(nc *nats.Conn) { mon.connected(nc, "NATS reconnected") }),
		nats.DisconnectErrHandler(mon.disconnected),
		nats.ReconnectErrHandler(mon.attemptFailed),
		nats.ClosedHandler(mon.closed),
		nats.ErrorHandler(mon.asyncError),
	}
	nc, err := nats.Connect(url, append(opts, extra...)...)
	if err != nil {
		// Parse errors quote the URL as given, password included.
		return nil, &redactedError{
			msg: fmt.Sprintf("nats: connect to %s: %s", RedactURL(url), strings.ReplaceAll(err.Error(), url, RedactURL(url))),
			err: err,
		}
	}
	if !nc.IsConnected() {
		mon.startOutage()
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
		a := authority(u)
		if at := strings.LastIndexByte(u[a:], '@'); at >= 0 {
			parts[i] = u[:a] + "redacted" + u[a+at:]
		}
	}
	return strings.Join(parts, ",")
}

// userInfo returns the user information of a URL (user:password, a token,
// an nkey): everything up to the last '@', not just up to the first '/', as
// a password may hold an unescaped '/' or '@', and NATS URLs have no path
// whose '@' this could take.
func userInfo(u string) string {
	a := authority(u)
	if at := strings.LastIndexByte(u[a:], '@'); at >= 0 {
		return u[a : a+at]
	}
	return ""
}

// authority returns where a URL's authority starts: after "scheme://", or
// at 0 without a scheme.
func authority(u string) int {
	if j := strings.Index(u, "://"); j >= 0 {
		return j + len("://")
	}
	return 0
}

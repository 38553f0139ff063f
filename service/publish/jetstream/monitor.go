package jetstream

import (
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/nats-io/nats.go"
)

// DefaultSummaryEvery is how often, at most, a Monitor repeats itself about
// a connection that keeps failing.
const DefaultSummaryEvery = 30 * time.Second

// Monitor follows a NATS connection for its operator. Connect makes it log
// each state change once (connected, disconnected, reconnected, closed),
// with the server's URL (credentials redacted) and the reason. Failed
// connection attempts, one a second while NATS is away, are logged on the
// first and then summed up at most once per SummaryEvery, as are repeated
// asynchronous errors. It keeps the last error, for /status. One Monitor
// serves one connection; its methods are safe from any goroutine.
type Monitor struct {
	// Logger receives the lines; nil: none.
	Logger log.Logger
	// OnState, if not nil, is called with true on connect and reconnect,
	// and false on disconnect and close.
	OnState func(connected bool)
	// SummaryEvery bounds repeated lines; 0 means DefaultSummaryEvery.
	SummaryEvery time.Duration

	now func() time.Time // time.Now; tests move it

	mu        sync.Mutex
	urls      string   // the configured servers, credentials redacted
	secrets   []string // the user information in the configured URLs
	server    string   // the server last connected to, redacted
	lastErr   string
	lastErrAt time.Time
	outage    outage
	async     repeated
}

// outage is the time since the connection was lost or first tried.
type outage struct {
	since    time.Time // zero: connected (or never tried)
	attempts int       // failed connection attempts since
	lastLine time.Time // zero: no attempt logged yet
}

// repeated counts an asynchronous error logged recently.
type repeated struct {
	msg        string
	at         time.Time
	suppressed int
}

// LastError returns the connection's last error, credentials redacted, and
// when it happened; "" if there was none.
func (m *Monitor) LastError() (string, time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastErr, m.lastErrAt
}

// RecordError keeps err as the last error. Errors found above the
// connection (JetStream not enabled, say) go here too, so that /status has
// one place to look.
func (m *Monitor) RecordError(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.record(err)
}

func (m *Monitor) record(err error) {
	m.lastErr, m.lastErrAt = m.redact(err.Error()), m.clock()
}

// redact removes the configured URLs' credentials from s: the client's
// errors name hosts, but a parse or dial error may quote a URL.
func (m *Monitor) redact(s string) string {
	for _, secret := range m.secrets {
		s = strings.ReplaceAll(s, secret, "redacted")
	}
	return s
}

func (m *Monitor) watch(urls string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.urls = RedactURL(urls)
	for _, u := range strings.Split(urls, ",") {
		if info := userInfo(u); info != "" {
			m.secrets = append(m.secrets, info)
		}
	}
}

func (m *Monitor) logger() log.Logger {
	if m.Logger == nil {
		return log.NewNopLogger()
	}
	return m.Logger
}

func (m *Monitor) clock() time.Time {
	if m.now != nil {
		return m.now()
	}
	return time.Now()
}

func (m *Monitor) every() time.Duration {
	if m.SummaryEvery > 0 {
		return m.SummaryEvery
	}
	return DefaultSummaryEvery
}

func (m *Monitor) state(connected bool) {
	if m.OnState != nil {
		m.OnState(connected)
	}
}

// startOutage starts counting failed attempts: the first connect did not
// succeed.
func (m *Monitor) startOutage() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.outage.since.IsZero() {
		m.outage.since = m.clock()
	}
}

func (m *Monitor) connected(nc *nats.Conn, msg string) {
	m.mu.Lock()
	m.server = RedactURL(nc.ConnectedUrl())
	kv := []any{"msg", msg, "url", m.server, "server", nc.ConnectedServerName()}
	if o := m.outage; !o.since.IsZero() {
		kv = append(kv, "down_for", m.clock().Sub(o.since).Round(100*time.Millisecond))
		if o.attempts > 0 {
			kv = append(kv, "failed_attempts", o.attempts)
		}
	}
	m.outage = outage{}
	m.mu.Unlock()
	level.Info(m.logger()).Log(kv...)
	m.state(true)
}

func (m *Monitor) disconnected(nc *nats.Conn, err error) {
	if nc.IsClosed() { // closed says so
		m.state(false)
		return
	}
	m.mu.Lock()
	kv := []any{"msg", "NATS disconnected; reconnecting", "url", m.server}
	if err != nil {
		m.record(err)
		kv = append(kv, "err", m.lastErr)
	}
	if m.outage.since.IsZero() {
		m.outage.since = m.clock()
	}
	m.mu.Unlock()
	level.Warn(m.logger()).Log(kv...)
	m.state(false)
}

// attemptFailed logs the first failed attempt of an outage, with its
// reason, and then a summary at most once per SummaryEvery.
func (m *Monitor) attemptFailed(_ *nats.Conn, err error) {
	m.mu.Lock()
	// The client's first word when a server refuses the connection is "no
	// servers available"; the next attempt, a second later, says why.
	vague := errors.Is(err, nats.ErrNoServers)
	if !vague || m.lastErr == "" {
		m.record(err)
	}
	now, o := m.clock(), &m.outage
	if o.since.IsZero() {
		o.since = now
	}
	o.attempts++
	var kv []any
	switch {
	case o.lastLine.IsZero() && vague:
	case o.lastLine.IsZero():
		kv = []any{"msg", "cannot connect to NATS; retrying every " + ReconnectWait.String(), "url", m.urls, "err", m.lastErr}
	case now.Sub(o.lastLine) >= m.every():
		kv = []any{"msg", "still cannot connect to NATS; retrying", "url", m.urls, "err", m.lastErr,
			"down_for", now.Sub(o.since).Round(time.Second), "failed_attempts", o.attempts}
	}
	if kv != nil {
		o.lastLine = now
	}
	m.mu.Unlock()
	if kv != nil {
		level.Warn(m.logger()).Log(kv...)
	}
}

func (m *Monitor) closed(nc *nats.Conn) {
	err := nc.LastError()
	m.mu.Lock()
	server := m.server
	if err != nil {
		m.record(err)
	}
	m.mu.Unlock()
	if err != nil {
		// The client gives up on its own only when reconnecting cannot
		// help, as on an authorization error met twice.
		level.Error(m.logger()).Log("msg", "NATS connection closed; not reconnecting (fix the cause and restart the gateway)", "url", server, "err", m.redact(err.Error()))
	} else {
		level.Info(m.logger()).Log("msg", "NATS connection closed", "url", server)
	}
	m.state(false)
}

// asyncError logs an asynchronous protocol error (a slow consumer on the
// ack subscription, a permissions violation on publish, ...): the first of
// a kind, then the same one at most once per SummaryEvery with the count of
// those not logged.
func (m *Monitor) asyncError(_ *nats.Conn, sub *nats.Subscription, err error) {
	m.mu.Lock()
	m.record(err)
	now, msg, r := m.clock(), m.lastErr, &m.async
	if msg == r.msg && now.Sub(r.at) < m.every() {
		r.suppressed++
		m.mu.Unlock()
		return
	}
	kv := []any{"msg", "NATS error", "err", msg}
	if sub != nil {
		kv = append(kv, "subject", sub.Subject)
	}
	if r.suppressed > 0 && msg == r.msg {
		kv = append(kv, "repeated", r.suppressed)
	}
	*r = repeated{msg: msg, at: now}
	m.mu.Unlock()
	level.Error(m.logger()).Log(kv...)
}

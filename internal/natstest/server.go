// Package natstest runs real embedded NATS servers (nats-server/v2) for
// tests, as net/http/httptest runs HTTP servers: Run starts one server with
// JetStream, RunCluster a JetStream cluster routed on loopback. Each stops
// when the test ends.
//
// A server can be shut down and started again on the same port and store
// directory, as a restarted NATS would be: the outage tests need that.
package natstest

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// readyTimeout bounds a start: recovering a file store on a busy machine
// (two cores shared by parallel test packages) is the slow part.
const readyTimeout = 30 * time.Second

// Option adjusts the server's options before its first start.
type Option func(*server.Options)

// WithoutJetStream turns JetStream off: a plain NATS server.
func WithoutJetStream() Option { return func(o *server.Options) { o.JetStream = false } }

// WithPort listens on port instead of a free one.
func WithPort(port int) Option { return func(o *server.Options) { o.Port = port } }

// WithStoreDir keeps JetStream's store in dir instead of a new temporary
// directory.
func WithStoreDir(dir string) Option { return func(o *server.Options) { o.StoreDir = dir } }

// WithMaxPayload sets the largest message the server accepts, in bytes.
func WithMaxPayload(n int32) Option { return func(o *server.Options) { o.MaxPayload = n } }

// WithOptions lets edit set anything else: auth, TLS, limits.
func WithOptions(edit func(*server.Options)) Option { return edit }

// options are nats-server's own test defaults (loopback, a free port,
// JetStream), silent and deaf to signals, then opts in order. The store
// directory is left to the caller, which knows the test.
func options(opts []Option) *server.Options {
	o := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, NoLog: true, NoSigs: true}
	for _, opt := range opts {
		opt(o)
	}
	return o
}

// Server is an embedded NATS server. Its methods are safe from any
// goroutine.
type Server struct {
	tb   testing.TB
	mu   sync.Mutex
	opts *server.Options // every start's; the port is fixed by the first
	ns   *server.Server  // the latest instance, running or shut down
}

// Run starts a server (JetStream in a new temporary directory unless opts
// say otherwise) and shuts it down when the test ends.
func Run(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	o := options(opts)
	if o.JetStream && o.StoreDir == "" {
		o.StoreDir = tb.TempDir()
	}
	s := &Server{tb: tb, opts: o}
	tb.Cleanup(s.Shutdown)
	s.Start()
	return s
}

// Start starts the server; after Shutdown, again on the same port and store
// directory. It fails the test if the server does not become ready.
func (s *Server) Start() {
	s.tb.Helper()
	if err := s.start(); err != nil {
		s.tb.Fatalf("natstest: %v", err)
	}
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ns != nil && s.ns.Running() {
		return fmt.Errorf("start: the server on port %d is running", s.opts.Port)
	}
	// Each instance gets its own copy: nats-server fills in defaults.
	ns, err := start(s.opts.Clone())
	if err != nil {
		return err
	}
	s.ns = ns
	s.opts.Port = ns.Addr().(*net.TCPAddr).Port
	return nil
}

// start starts a server and waits until it takes clients, or says why it
// cannot (a port in use, a store it cannot open) as soon as the server
// knows.
func start(opts *server.Options) (*server.Server, error) {
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, err
	}
	fatal := make(chan error, 1)
	ns.SetLogger(fatalLogger(fatal), false, false)
	ns.Start()
	deadline := time.Now().Add(readyTimeout)
	for !ns.ReadyForConnections(50 * time.Millisecond) {
		select {
		case err := <-fatal:
			ns.Shutdown()
			return nil, fmt.Errorf("server on %s:%d: %w", opts.Host, opts.Port, err)
		default:
		}
		if time.Now().After(deadline) {
			ns.Shutdown()
			return nil, fmt.Errorf("server on %s:%d not ready after %v", opts.Host, opts.Port, readyTimeout)
		}
	}
	return ns, nil
}

// Shutdown stops the server and waits until it has let go of its port and
// store; it does nothing if the server is not running.
func (s *Server) Shutdown() {
	s.mu.Lock()
	ns := s.ns
	s.mu.Unlock()
	if ns != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
	}
}

// Restart shuts the server down and starts it again on the same port and
// store directory.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Shutdown()
	s.Start()
}

// Running reports whether the server is up.
func (s *Server) Running() bool {
	ns := s.NATS()
	return ns != nil && ns.Running()
}

// ClientURL is the URL clients connect to (tls:// with TLS); it stays the
// same across restarts.
func (s *Server) ClientURL() string { return s.NATS().ClientURL() }

// Port is the client port; it stays the same across restarts.
func (s *Server) Port() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opts.Port
}

// StoreDir is JetStream's store directory.
func (s *Server) StoreDir() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opts.StoreDir
}

// NATS is the nats-server instance, to ask it what a client cannot see;
// a restart replaces it.
func (s *Server) NATS() *server.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ns
}

// fatalLogger hands the server's fatal errors (it logs a port it cannot bind
// instead of returning an error) to start; the rest is dropped, as with
// NoLog.
type fatalLogger chan<- error

func (l fatalLogger) Fatalf(format string, v ...any) {
	select {
	case l <- fmt.Errorf(format, v...):
	default: // the first one says why
	}
}

func (fatalLogger) Noticef(string, ...any) {}
func (fatalLogger) Warnf(string, ...any)   {}
func (fatalLogger) Errorf(string, ...any)  {}
func (fatalLogger) Debugf(string, ...any)  {}
func (fatalLogger) Tracef(string, ...any)  {}

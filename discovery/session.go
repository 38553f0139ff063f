package discovery

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/hashicorp/consul/api"
)

// consulSession is a Consul session with behaviour release, tied to the
// node's serfHealth and to the instance's /health check, kept alive by
// renewals.
//
// Fencing: Consul never invalidates a session on its TTL sooner than TTL
// after the last renewal it received, and the renewal we count as the last
// good one started before Consul received it. So once no renewal has
// succeeded for half the TTL, the session is declared lost while at least
// half the TTL remains before Consul could expire it and another instance
// could take its locks (plus the lock-delay). A blocking watch on the session
// notices an invalidation by Consul (destroyed, or a tied check went
// critical) at once, as long as Consul can be reached.
type consulSession struct {
	c          *Consul
	id         string
	ttl        time.Duration
	fenceAfter time.Duration
	logger     log.Logger

	lost     chan struct{}
	lostOnce sync.Once
	mu       sync.Mutex
	err      error

	ctx  context.Context // ends when the goroutines must stop
	halt context.CancelFunc
	wg   sync.WaitGroup
}

var _ Session = (*consulSession)(nil)

// NewSession implements Coordinator. The instance must be registered first:
// the session is tied to its /health check.
func (c *Consul) NewSession(ctx context.Context) (Session, error) {
	// The api package leaves out a zero LockDelay (Consul would then
	// apply its 15 s default), so the body is written by hand.
	body := map[string]any{
		"Name":          c.cfg.ServiceName + " " + c.cfg.InstanceID,
		"TTL":           c.cfg.SessionTTL.String(),
		"Behavior":      api.SessionBehaviorRelease,
		"LockDelay":     c.cfg.LockDelay.String(),
		"NodeChecks":    []string{"serfHealth"},
		"ServiceChecks": []api.ServiceCheck{{ID: c.healthCheckID()}},
	}
	start := time.Now()
	var out struct{ ID string }
	if _, err := c.client.Raw().Write("/v1/session/create", body, &out, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return nil, fmt.Errorf("create consul session: %w", err)
	}
	s := &consulSession{
		c: c, id: out.ID, ttl: c.cfg.SessionTTL, fenceAfter: c.cfg.SessionTTL / 2,
		logger: log.With(c.logger, "session", out.ID),
		lost:   make(chan struct{}),
	}
	s.ctx, s.halt = context.WithCancel(context.Background())
	s.wg.Add(2)
	go s.renew(start)
	go s.watch()
	return s, nil
}

func (s *consulSession) ID() string            { return s.id }
func (s *consulSession) Lost() <-chan struct{} { return s.lost }

func (s *consulSession) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// lose declares the session lost, once, and stops its goroutines.
func (s *consulSession) lose(err error) {
	s.lostOnce.Do(func() {
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		close(s.lost)
	})
	s.halt()
}

// Close implements Session.
func (s *consulSession) Close(ctx context.Context) error {
	s.halt()
	s.wg.Wait()
	_, err := s.c.client.Session().Destroy(s.id, (&api.WriteOptions{}).WithContext(ctx))
	return err
}

// Abandon implements Session.
func (s *consulSession) Abandon() {
	s.halt()
	s.wg.Wait()
}

// renew renews every TTL/5 and declares the session lost when Consul says it
// is gone or when no renewal has succeeded for fenceAfter.
func (s *consulSession) renew(lastOK time.Time) {
	defer s.wg.Done()
	interval := s.ttl / 5
	var lastErr error
	next := interval
	for {
		deadline := lastOK.Add(s.fenceAfter)
		wait := min(next, time.Until(deadline))
		t := time.NewTimer(max(wait, 0))
		select {
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if !time.Now().Before(deadline) {
			s.lose(fmt.Errorf("consul session not renewed for %s (TTL %s): %w", time.Since(lastOK).Round(time.Millisecond), s.ttl, lastErr))
			return
		}
		start := time.Now()
		// A renewal that hangs must not hold the fence back.
		ctx, cancel := context.WithDeadline(s.ctx, deadline)
		entry, _, err := s.c.client.Session().Renew(s.id, (&api.WriteOptions{}).WithContext(ctx))
		cancel()
		if s.ctx.Err() != nil {
			return
		}
		switch {
		case err == nil && entry == nil:
			s.lose(errors.New("consul session invalidated (expired, destroyed, or a health check it is tied to failed)"))
			return
		case err == nil:
			lastOK, lastErr, next = start, nil, interval
		default:
			lastErr = err
			s.c.cfg.Metrics.RenewFailures.Inc()
			level.Warn(s.logger).Log("msg", "consul session renewal failed; retrying", "err", err,
				"fence_in", time.Until(deadline).Round(time.Millisecond))
			next = min(interval, time.Second)
		}
	}
}

// watch blocks on the session's entry and declares it lost as soon as Consul
// no longer has it.
func (s *consulSession) watch() {
	defer s.wg.Done()
	ctx := s.ctx
	var index uint64
	for {
		entry, meta, err := s.c.client.Session().Info(s.id, (&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Minute}).WithContext(ctx))
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// Unreachable: renew decides when that becomes a fence.
			if sleep(ctx, time.Second) != nil {
				return
			}
			index = 0
			continue
		}
		if entry == nil {
			s.lose(errors.New("consul session invalidated (destroyed, or a health check it is tied to failed)"))
			return
		}
		index = nextIndex(index, meta.LastIndex)
	}
}

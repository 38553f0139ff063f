package shard

// This file is the bot's daily budget of session starts (session_start_limit
// of GET /gateway/bot). Every IDENTIFY spends one, whatever made the shard
// identify (startup, op 9, close 4007/4009, a fence or spare take-over), and
// an IDENTIFY beyond the budget makes Discord terminate every session and
// reset the bot's token. So the driver takes a start before it dials for an
// IDENTIFY and gives it back when the connection ends without sending one;
// the budget refuses while remaining is at the reserve or below, and says
// when Discord's reset_after ends the wait.
//
// The count lives in a StartCounter: in memory for one process, in Consul
// for a fleet (discovery.SessionStartCounter), so that instances sharing a
// bot share one count. Discord's own figure is read again when the count
// gets low and when the window has ended; within a window the lower of the
// two wins, since Discord may not have counted an IDENTIFY just sent and
// cannot know the starts reserved for IDENTIFYs about to be sent.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
)

// StartLimit is the session start budget as last known.
type StartLimit struct {
	Total     int       `json:"total"`
	Remaining int       `json:"remaining"`
	ResetAt   time.Time `json:"reset_at"` // when Remaining goes back to Total
}

// over reports whether l's window has ended at now (or l was never read).
func (l StartLimit) over(now time.Time) bool { return !now.Before(l.ResetAt) }

// DefaultStartReserve is the reserve when SESSION_START_RESERVE is not set:
// 1% of the total, at least 1.
func DefaultStartReserve(total int) int { return max(1, total/100) }

// MergeStartLimit folds fresh, a reading of /gateway/bot, into the count
// cur. pending is the starts the caller reserved and has not yet spent,
// which Discord has not counted. A new window (cur's has ended, or there was
// none) takes the reading; within a window the lower count wins, and the
// window keeps its end, which names it for GiveStart.
func MergeStartLimit(cur, fresh StartLimit, pending int, now time.Time) StartLimit {
	fresh.Remaining = max(fresh.Remaining-pending, 0)
	if cur.over(now) {
		return fresh
	}
	cur.Total = fresh.Total
	cur.Remaining = min(cur.Remaining, fresh.Remaining)
	return cur
}

// TakeStart uses one start of cur when more than floor remain in a window
// that has not ended; ok reports whether it did.
func TakeStart(cur StartLimit, floor int, now time.Time) (after StartLimit, ok bool) {
	if cur.over(now) || cur.Remaining <= floor {
		return cur, false
	}
	cur.Remaining--
	return cur, true
}

// GiveStart returns a start taken in the window ending at resetAt; a start
// from a window that has ended is not returned (the new one did not pay it).
func GiveStart(cur StartLimit, resetAt, now time.Time) StartLimit {
	if cur.ResetAt.Equal(resetAt) && !cur.over(now) && cur.Remaining < cur.Total {
		cur.Remaining++
	}
	return cur
}

// StartCounter keeps the count of session starts. Each method applies the
// function of the same name (MergeStartLimit, TakeStart, GiveStart) to the
// count atomically and returns the count after.
type StartCounter interface {
	Merge(ctx context.Context, fresh StartLimit, pending int, now time.Time) (StartLimit, error)
	Take(ctx context.Context, floor int, now time.Time) (StartLimit, bool, error)
	Give(ctx context.Context, resetAt, now time.Time) (StartLimit, error)
}

// MemoryStartCounter is the StartCounter of a process that shares its
// budget with no other.
type MemoryStartCounter struct {
	mu sync.Mutex
	l  StartLimit
}

// Merge implements StartCounter.
func (c *MemoryStartCounter) Merge(_ context.Context, fresh StartLimit, pending int, now time.Time) (StartLimit, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.l = MergeStartLimit(c.l, fresh, pending, now)
	return c.l, nil
}

// Take implements StartCounter.
func (c *MemoryStartCounter) Take(_ context.Context, floor int, now time.Time) (StartLimit, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ok bool
	c.l, ok = TakeStart(c.l, floor, now)
	return c.l, ok, nil
}

// Give implements StartCounter.
func (c *MemoryStartCounter) Give(_ context.Context, resetAt, now time.Time) (StartLimit, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.l = GiveStart(c.l, resetAt, now)
	return c.l, nil
}

// SessionLimitError is Reserve's refusal: the budget is at its reserve.
type SessionLimitError struct {
	Remaining, Total, Reserve int
	ResetAt                   time.Time
	// Wait is how long until the reset, from the refusal.
	Wait time.Duration
}

func (e *SessionLimitError) Error() string {
	return fmt.Sprintf("session starts down to the reserve (%d of %d left, reserve %d): IDENTIFY waits for Discord's reset at %s",
		e.Remaining, e.Total, e.Reserve, e.ResetAt.UTC().Format(time.RFC3339))
}

// SessionStartsConfig configures SessionStarts.
type SessionStartsConfig struct {
	// Counter keeps the count; nil: in memory.
	Counter StartCounter
	// Fetch reads session_start_limit from /gateway/bot.
	Fetch func(ctx context.Context) (StartLimit, error)
	// Initial is the reading taken at startup, at FetchedAt.
	Initial   StartLimit
	FetchedAt time.Time
	// Reserve: no IDENTIFY while remaining ≤ Reserve; 0 for
	// DefaultStartReserve of the total.
	Reserve int
	Metrics *Metrics
	Logger  log.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// How often Discord's figure may be read: when the window has ended, and
// when the count is low (at most twice the reserve).
const (
	fetchGapOver = time.Second
	fetchGapLow  = 5 * time.Second
	// retryWait paces Reserve while the count cannot be known (Discord or
	// Consul unreachable): no IDENTIFY is sent without a start.
	retryWait = time.Second
	// minLimitWait keeps a refused shard from spinning when Discord's
	// reset_after is 0.
	minLimitWait = 250 * time.Millisecond
)

// SessionStarts is the session start budget the shards of a process share.
type SessionStarts struct {
	cfg SessionStartsConfig

	fetchMu sync.Mutex // one read of /gateway/bot at a time

	mu        sync.Mutex
	known     StartLimit // the count as last seen
	seeded    bool       // Initial merged into the counter
	fetchedAt time.Time  // last read of /gateway/bot
	pending   int        // starts taken, neither spent nor given back
	limited   bool       // refused since the last start taken: warned
	recount   bool       // the counter lost its count: read Discord first
	failing   bool       // the count could not be known: warned
}

// NewSessionStarts returns the budget; it does no I/O.
func NewSessionStarts(cfg SessionStartsConfig) *SessionStarts {
	if cfg.Counter == nil {
		cfg.Counter = &MemoryStartCounter{}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = log.NewNopLogger()
	}
	b := &SessionStarts{cfg: cfg, known: cfg.Initial, fetchedAt: cfg.FetchedAt}
	b.show(cfg.Initial)
	return b
}

// reserveFor is the reserve for a budget of total.
func (b *SessionStarts) reserveFor(total int) int {
	if b.cfg.Reserve > 0 {
		return b.cfg.Reserve
	}
	return DefaultStartReserve(total)
}

// show records the count and updates the gauges; mu is held or not needed.
func (b *SessionStarts) show(l StartLimit) {
	b.known = l
	if m := b.cfg.Metrics; m != nil {
		m.SessionStarts.Set(float64(l.Remaining))
		m.SessionStartReserve.Set(float64(b.reserveFor(l.Total)))
	}
}

// Known returns the count as last seen.
func (b *SessionStarts) Known() StartLimit {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.known
}

// Reserve takes a session start for shardID's next IDENTIFY. It returns a
// *SessionLimitError when the budget is at its reserve. While the count
// cannot be known it retries until ctx ends: no IDENTIFY without a start.
func (b *SessionStarts) Reserve(ctx context.Context, shardID int) (*SessionStart, error) {
	for {
		start, err := b.tryReserve(ctx, shardID)
		if err == nil || ctx.Err() != nil {
			return start, err
		}
		if limit := (*SessionLimitError)(nil); errors.As(err, &limit) {
			return nil, err
		}
		b.mu.Lock()
		warn := !b.failing
		b.failing = true
		b.mu.Unlock()
		if warn {
			level.Warn(b.cfg.Logger).Log("msg", "cannot count session starts; IDENTIFYs wait until the count is known", "shard_id", shardID, "err", err)
		}
		if !sleep(ctx, retryWait) {
			return nil, ctx.Err()
		}
	}
}

func (b *SessionStarts) tryReserve(ctx context.Context, shardID int) (*SessionStart, error) {
	if err := b.seed(ctx); err != nil {
		return nil, err
	}
	now := b.cfg.Now()
	l, ok, reserve, err := b.take(ctx, now)
	if err == nil && l.over(now) {
		// The counter has no current window although ours has not ended:
		// its record was lost (Consul's data gone). Count again from
		// Discord's figure.
		b.mu.Lock()
		b.recount = true
		b.mu.Unlock()
		l, ok, reserve, err = b.take(ctx, now)
	}
	if err != nil {
		return nil, err
	}
	if l.over(now) {
		return nil, fmt.Errorf("session start window ended at %s; waiting for a new reading of /gateway/bot", l.ResetAt.UTC().Format(time.RFC3339))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.show(l)
	b.failing = false
	if !ok {
		return nil, b.refuse(shardID, l, reserve, now)
	}
	if b.limited {
		b.limited = false
		level.Info(b.cfg.Logger).Log("msg", "session starts available again", "remaining", l.Remaining, "reserve", reserve)
	}
	b.pending++
	return &SessionStart{b: b, resetAt: l.ResetAt}, nil
}

// take reads Discord's figure when it is due, then takes a start from the
// counter; it returns the count after and the reserve it kept.
func (b *SessionStarts) take(ctx context.Context, now time.Time) (StartLimit, bool, int, error) {
	if err := b.readIfDue(ctx, now); err != nil {
		b.mu.Lock()
		unknown := b.known.over(now) || b.recount
		b.mu.Unlock()
		if unknown {
			return StartLimit{}, false, 0, err // and the count cannot stand in for it
		}
	}
	b.mu.Lock()
	reserve := b.reserveFor(b.known.Total)
	b.mu.Unlock()
	l, ok, err := b.cfg.Counter.Take(ctx, reserve, now)
	if err != nil {
		return StartLimit{}, false, 0, fmt.Errorf("session start count: %w", err)
	}
	return l, ok, reserve, nil
}

// refuse builds the refusal and logs the one warning of a wait; mu is held.
func (b *SessionStarts) refuse(shardID int, l StartLimit, reserve int, now time.Time) error {
	err := &SessionLimitError{Remaining: l.Remaining, Total: l.Total, Reserve: reserve, ResetAt: l.ResetAt,
		Wait: max(l.ResetAt.Sub(now), minLimitWait)}
	if !b.limited {
		b.limited = true
		level.Warn(b.cfg.Logger).Log("msg", "session starts down to the reserve: IDENTIFYs wait for Discord's reset",
			"remaining", l.Remaining, "total", l.Total, "reserve", reserve,
			"reset_at", l.ResetAt.UTC().Format(time.RFC3339Nano), "first_shard_waiting", shardID)
	}
	return err
}

// seed merges the startup reading into the counter once.
func (b *SessionStarts) seed(ctx context.Context) error {
	b.fetchMu.Lock()
	defer b.fetchMu.Unlock()
	b.mu.Lock()
	done := b.seeded
	b.mu.Unlock()
	if done {
		return nil
	}
	l, err := b.cfg.Counter.Merge(ctx, b.cfg.Initial, 0, b.cfg.Now())
	if err != nil {
		return fmt.Errorf("session start count: %w", err)
	}
	b.mu.Lock()
	b.seeded = true
	b.show(l)
	b.mu.Unlock()
	return nil
}

// readIfDue reads Discord's figure when the window has ended or the count
// is low, no more often than the gaps above.
func (b *SessionStarts) readIfDue(ctx context.Context, now time.Time) error {
	b.mu.Lock()
	known, seen, recount := b.known, b.fetchedAt, b.recount
	low := known.Remaining <= 2*b.reserveFor(known.Total)
	b.mu.Unlock()
	since := now.Sub(seen)
	if ((known.over(now) || recount) && since >= fetchGapOver) || (low && since >= fetchGapLow) {
		return b.read(ctx, seen)
	}
	return nil
}

func (b *SessionStarts) fetchedAtNow() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.fetchedAt
}

// read fetches /gateway/bot and merges it, unless another caller did since
// seen (the fetchedAt it decided on).
func (b *SessionStarts) read(ctx context.Context, seen time.Time) error {
	b.fetchMu.Lock()
	defer b.fetchMu.Unlock()
	b.mu.Lock()
	again := !b.fetchedAt.Equal(seen)
	b.mu.Unlock()
	if again {
		return nil
	}
	fresh, err := b.cfg.Fetch(ctx)
	now := b.cfg.Now()
	b.mu.Lock()
	b.fetchedAt = now // a failed read waits its gap too
	pending := b.pending
	b.mu.Unlock()
	if err != nil {
		return err
	}
	l, err := b.cfg.Counter.Merge(ctx, fresh, pending, now)
	if err != nil {
		return fmt.Errorf("session start count: %w", err)
	}
	b.mu.Lock()
	b.show(l)
	b.recount = false
	b.mu.Unlock()
	return nil
}

// Refresh reads Discord's figure now and merges it into the count.
func (b *SessionStarts) Refresh(ctx context.Context) error {
	if err := b.seed(ctx); err != nil {
		return err
	}
	return b.read(ctx, b.fetchedAtNow())
}

// KeepFresh refreshes the count every interval and as soon as a window ends,
// so that gateway_session_start_remaining follows what other processes of
// the bot spend and Discord's reset, until ctx ends.
func (b *SessionStarts) KeepFresh(ctx context.Context, every time.Duration) {
	for {
		wait := every
		if until := b.Known().ResetAt.Sub(b.cfg.Now()); until >= 0 && until < wait {
			wait = until + fetchGapOver // read just after the reset
		}
		if !sleep(ctx, wait) {
			return
		}
		if err := b.Refresh(ctx); err != nil && ctx.Err() == nil {
			level.Warn(b.cfg.Logger).Log("msg", "cannot refresh the session start limit", "err", err)
		}
	}
}

// SessionStart is one reserved session start: Spent once its IDENTIFY is
// sent, else Released so that it returns to the budget.
type SessionStart struct {
	b       *SessionStarts
	resetAt time.Time
	once    sync.Once
}

// Spent records that the IDENTIFY was sent. Calls after Spent or Release
// are ignored.
func (s *SessionStart) Spent() {
	s.once.Do(func() {
		s.b.mu.Lock()
		s.b.pending--
		s.b.mu.Unlock()
	})
}

// Release gives the start back unless it was spent. It is safe on nil.
func (s *SessionStart) Release() {
	if s == nil {
		return
	}
	s.once.Do(func() {
		b := s.b
		b.mu.Lock()
		b.pending--
		b.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		l, err := b.cfg.Counter.Give(ctx, s.resetAt, b.cfg.Now())
		if err != nil {
			// The count stays one lower than it could be: the safe side.
			level.Warn(b.cfg.Logger).Log("msg", "cannot give an unused session start back", "err", err)
			return
		}
		b.mu.Lock()
		b.show(l)
		b.mu.Unlock()
	})
}

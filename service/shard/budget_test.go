package shard

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The session start budget: no IDENTIFY while session_start_limit.remaining
// is at the reserve or below; Discord's figure read again when the count
// is low and after the reset.

// fakeDiscord is /gateway/bot for the budget: a reading, a clock and a
// count of reads.
type fakeDiscord struct {
	mu    sync.Mutex
	now   time.Time
	limit StartLimit
	err   error
	reads int
}

func (d *fakeDiscord) clock() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.now
}

func (d *fakeDiscord) advance(by time.Duration) {
	d.mu.Lock()
	d.now = d.now.Add(by)
	d.mu.Unlock()
}

func (d *fakeDiscord) set(l StartLimit, err error) {
	d.mu.Lock()
	d.limit, d.err = l, err
	d.mu.Unlock()
}

func (d *fakeDiscord) fetch(context.Context) (StartLimit, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reads++
	return d.limit, d.err
}

func (d *fakeDiscord) readCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reads
}

type budgetTest struct {
	*SessionStarts
	discord *fakeDiscord
	metrics *Metrics
	logs    *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// newBudget starts from a reading of remaining of total, with a window that
// ends in an hour, taken at t0.
func newBudget(t *testing.T, total, remaining, reserve int) *budgetTest {
	t.Helper()
	d := &fakeDiscord{now: t0}
	initial := StartLimit{Total: total, Remaining: remaining, ResetAt: t0.Add(time.Hour)}
	d.set(initial, nil)
	bt := &budgetTest{discord: d, metrics: NewMetrics(prometheus.NewRegistry()), logs: &syncBuffer{}}
	bt.SessionStarts = NewSessionStarts(SessionStartsConfig{
		Fetch: d.fetch, Initial: initial, FetchedAt: t0, Reserve: reserve,
		Metrics: bt.metrics, Logger: log.NewLogfmtLogger(bt.logs), Now: d.clock,
	})
	return bt
}

func (b *budgetTest) reserve(t *testing.T) *SessionStart {
	t.Helper()
	s, err := b.Reserve(context.Background(), 0)
	if err != nil {
		t.Fatalf("Reserve: %v (count %+v)", err, b.Known())
	}
	return s
}

func (b *budgetTest) refused(t *testing.T) *SessionLimitError {
	t.Helper()
	s, err := b.Reserve(context.Background(), 0)
	var limit *SessionLimitError
	if !errors.As(err, &limit) {
		t.Fatalf("Reserve = %v, %v; want a SessionLimitError (count %+v)", s, err, b.Known())
	}
	return limit
}

func (b *budgetTest) wantGauges(t *testing.T, remaining, reserve float64) {
	t.Helper()
	if got := testutil.ToFloat64(b.metrics.SessionStarts); got != remaining {
		t.Errorf("gateway_session_start_remaining %v, want %v", got, remaining)
	}
	if got := testutil.ToFloat64(b.metrics.SessionStartReserve); got != reserve {
		t.Errorf("gateway_session_start_reserve %v, want %v", got, reserve)
	}
}

func TestBudgetRefusesAtTheReserveAndSaysWhenItResets(t *testing.T) {
	b := newBudget(t, 1000, 12, 10)
	b.reserve(t).Spent()
	b.reserve(t).Spent()
	limit := b.refused(t)
	if limit.Remaining != 10 || limit.Reserve != 10 || !limit.ResetAt.Equal(t0.Add(time.Hour)) || limit.Wait != time.Hour {
		t.Fatalf("refusal %+v", limit)
	}
	if !strings.Contains(limit.Error(), "2026-01-01T01:00:00Z") {
		t.Fatalf("refusal does not say when the budget resets: %v", limit)
	}
	b.wantGauges(t, 10, 10)
}

func TestBudgetDefaultReserveIsOnePercentOfTheTotalAtLeastOne(t *testing.T) {
	for total, want := range map[int]int{1000: 10, 3000: 30, 150: 1, 50: 1, 1: 1} {
		if got := DefaultStartReserve(total); got != want {
			t.Errorf("DefaultStartReserve(%d) = %d, want %d", total, got, want)
		}
	}
	b := newBudget(t, 1000, 11, 0)
	b.reserve(t)
	b.refused(t)
	b.wantGauges(t, 10, 10)
}

// A connection that ends before its IDENTIFY gives the start back; one
// whose IDENTIFY was sent does not.
func TestBudgetGivesBackOnlyTheStartsNotSpent(t *testing.T) {
	b := newBudget(t, 1000, 500, 10)
	unused := b.reserve(t)
	b.wantGauges(t, 499, 10)
	unused.Release()
	unused.Release()
	b.wantGauges(t, 500, 10)

	used := b.reserve(t)
	used.Spent()
	used.Release()
	b.wantGauges(t, 499, 10)
}

// A start taken before a reset is not given back to the new window, which
// did not pay for it.
func TestBudgetDoesNotGiveAStartBackToTheNextWindow(t *testing.T) {
	b := newBudget(t, 1000, 500, 10)
	s := b.reserve(t)
	b.discord.advance(2 * time.Hour)
	b.discord.set(StartLimit{Total: 1000, Remaining: 1000, ResetAt: t0.Add(26 * time.Hour)}, nil)
	b.reserve(t).Spent()
	// 1000, less the start still pending from the old window, less one.
	b.wantGauges(t, 998, 10)
	s.Release()
	b.wantGauges(t, 998, 10)
}

func TestBudgetReadsDiscordAgainWhenItsCountIsLow(t *testing.T) {
	b := newBudget(t, 1000, 500, 10)
	b.discord.advance(time.Minute)
	b.reserve(t).Spent()
	if n := b.discord.readCount(); n != 0 {
		t.Fatalf("%d reads of /gateway/bot with 500 left", n)
	}

	// Low: at most twice the reserve. Another process of the bot spent
	// starts meanwhile: Discord says 13, the lower count wins.
	b = newBudget(t, 1000, 20, 10)
	b.discord.set(StartLimit{Total: 1000, Remaining: 13, ResetAt: t0.Add(time.Hour)}, nil)
	b.discord.advance(time.Minute)
	b.reserve(t).Spent()
	if n := b.discord.readCount(); n != 1 {
		t.Fatalf("%d reads of /gateway/bot with 20 left, want 1", n)
	}
	b.wantGauges(t, 12, 10)
	// Not more often than every few seconds.
	b.reserve(t).Spent()
	if n := b.discord.readCount(); n != 1 {
		t.Fatalf("%d reads, want still 1", n)
	}
	b.wantGauges(t, 11, 10)
}

// Discord has not counted the starts reserved for IDENTIFYs not yet sent.
func TestBudgetCountsItsPendingStartsAgainstDiscordsFigure(t *testing.T) {
	b := newBudget(t, 1000, 20, 10)
	pending := b.reserve(t) // 19, Discord still says 20
	b.discord.advance(time.Minute)
	b.reserve(t).Spent()
	b.wantGauges(t, 18, 10)
	pending.Spent()
}

func TestBudgetAfterTheResetReadsTheNewWindowAndReservesAgain(t *testing.T) {
	b := newBudget(t, 1000, 10, 10)
	b.refused(t)
	b.discord.set(StartLimit{Total: 1000, Remaining: 1000, ResetAt: t0.Add(25 * time.Hour)}, nil)
	b.discord.advance(59 * time.Minute)
	b.refused(t) // not yet: the window has not ended
	b.discord.advance(time.Minute)
	b.reserve(t).Spent()
	b.wantGauges(t, 999, 10)
	if got := b.Known().ResetAt; !got.Equal(t0.Add(25 * time.Hour)) {
		t.Fatalf("window ends %v", got)
	}
}

// Discord's reset_after can lag our clock: a reading after our reset that
// still shows the old window is waited for again, not a reason to identify.
func TestBudgetReadingTheOldWindowAfterTheResetWaitsAgain(t *testing.T) {
	b := newBudget(t, 1000, 10, 10)
	b.discord.advance(time.Hour)
	b.discord.set(StartLimit{Total: 1000, Remaining: 10, ResetAt: t0.Add(time.Hour + 2*time.Second)}, nil)
	if limit := b.refused(t); limit.Wait != 2*time.Second {
		t.Fatalf("wait %v, want the 2 s Discord still asks for", limit.Wait)
	}
}

// A counter that lost its record (a Consul cluster rebuilt without its
// data) is counted again from Discord's figure, not waited on forever.
func TestBudgetCountsAgainFromDiscordWhenTheCounterLostItsCount(t *testing.T) {
	b := newBudget(t, 1000, 500, 10)
	counter := &MemoryStartCounter{}
	b.cfg.Counter = counter
	b.reserve(t).Spent()
	counter.mu.Lock()
	counter.l = StartLimit{}
	counter.mu.Unlock()
	b.discord.set(StartLimit{Total: 1000, Remaining: 480, ResetAt: t0.Add(time.Hour)}, nil)
	b.discord.advance(10 * time.Second)
	b.reserve(t).Spent()
	b.wantGauges(t, 479, 10)
}

func TestBudgetLogsOneWarningPerWaitWithTheResetTime(t *testing.T) {
	b := newBudget(t, 1000, 10, 10)
	for range 3 {
		b.refused(t)
	}
	warns := strings.Count(b.logs.String(), "level=warn")
	if warns != 1 || !strings.Contains(b.logs.String(), "reset_at=2026-01-01T01:00:00Z") {
		t.Fatalf("%d warnings, want one with the reset time:\n%s", warns, b.logs)
	}
	b.discord.set(StartLimit{Total: 1000, Remaining: 11, ResetAt: t0.Add(25 * time.Hour)}, nil)
	b.discord.advance(time.Hour)
	b.reserve(t).Spent()
	b.refused(t)
	if warns := strings.Count(b.logs.String(), "level=warn"); warns != 2 {
		t.Fatalf("%d warnings after a second wait, want 2:\n%s", warns, b.logs)
	}
}

// Without a reading of the new window nothing is reserved: Reserve keeps
// trying until its context ends.
func TestBudgetWithoutAReadingAfterTheResetReservesNothing(t *testing.T) {
	b := newBudget(t, 1000, 500, 10)
	b.discord.advance(2 * time.Hour)
	b.discord.set(StartLimit{}, errors.New("GET /gateway/bot: 503"))
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	s, err := b.Reserve(ctx, 0)
	if s != nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Reserve = %v, %v; want nothing until the context ends", s, err)
	}
	if n := b.discord.readCount(); n < 1 {
		t.Fatal("never asked Discord")
	}
	if !strings.Contains(b.logs.String(), "cannot count session starts") {
		t.Fatalf("no warning:\n%s", b.logs)
	}
}

func TestMergeTakeAndGiveKeepTheCountOnTheSafeSide(t *testing.T) {
	window := t0.Add(time.Hour)
	cur := StartLimit{Total: 1000, Remaining: 50, ResetAt: window}
	for _, c := range []struct {
		name      string
		got, want StartLimit
	}{
		{"same window: the lower count wins",
			MergeStartLimit(cur, StartLimit{Total: 1000, Remaining: 60, ResetAt: window.Add(time.Second)}, 0, t0),
			StartLimit{Total: 1000, Remaining: 50, ResetAt: window}},
		{"same window: Discord's lower figure, less what is pending",
			MergeStartLimit(cur, StartLimit{Total: 1000, Remaining: 40, ResetAt: window}, 3, t0),
			StartLimit{Total: 1000, Remaining: 37, ResetAt: window}},
		{"new window: the reading, less what is pending",
			MergeStartLimit(cur, StartLimit{Total: 1000, Remaining: 1000, ResetAt: window.Add(24 * time.Hour)}, 2, window),
			StartLimit{Total: 1000, Remaining: 998, ResetAt: window.Add(24 * time.Hour)}},
		{"no count yet: the reading",
			MergeStartLimit(StartLimit{}, cur, 0, t0), cur},
		{"give back in the same window",
			GiveStart(cur, window, t0), StartLimit{Total: 1000, Remaining: 51, ResetAt: window}},
		{"no give back to another window",
			GiveStart(cur, window.Add(-time.Hour), t0), cur},
		{"never above the total",
			GiveStart(StartLimit{Total: 5, Remaining: 5, ResetAt: window}, window, t0), StartLimit{Total: 5, Remaining: 5, ResetAt: window}},
	} {
		if c.got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, c.got, c.want)
		}
	}
	if _, ok := TakeStart(StartLimit{Total: 1000, Remaining: 11, ResetAt: window}, 10, t0); !ok {
		t.Error("no start taken with 11 left and a reserve of 10")
	}
	if _, ok := TakeStart(StartLimit{Total: 1000, Remaining: 10, ResetAt: window}, 10, t0); ok {
		t.Error("a start taken at the reserve")
	}
	if _, ok := TakeStart(cur, 10, window); ok {
		t.Error("a start taken from a window that has ended")
	}
}

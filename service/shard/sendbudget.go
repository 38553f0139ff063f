package shard

import "time"

// SendBudget is Discord's per-connection limit on what a client sends:
// Limit payloads per Window, heartbeats, IDENTIFY, RESUME and commands
// together. The zero value is Discord's 120 per 60 s; tests scale it down
// along with the simulator's.
type SendBudget struct {
	Limit  int
	Window time.Duration
}

// limiter returns a connection's limiter for the budget. The window gets a
// margin: our clock starts it when a send takes its slot, Discord's when
// the payload arrives, so a send that waited for the writer after an early
// one would look early to Discord without it.
func (b SendBudget) limiter() *sendLimiter {
	limit, window := b.Limit, b.Window
	if limit <= 0 {
		limit = 120
	}
	if window <= 0 {
		window = time.Minute
	}
	margin := max(window/50, 25*time.Millisecond)
	return newSendLimiter(limit, window+margin, heartbeatReserve)
}

// inWindow returns the send times still in the window at now, oldest
// first. mu is held.
func (l *sendLimiter) inWindow(now time.Time) []time.Time {
	var times []time.Time
	for i := l.count; i > 0; i-- {
		t := l.sent[(l.next-i+l.limit)%l.limit]
		if now.Sub(t) < l.window {
			times = append(times, t)
		}
	}
	return times
}

// free returns how many more commands (heartbeats aside: they have their
// reserve) fit in the window at now.
func (l *sendLimiter) free(now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return max(0, l.limit-l.reserve-len(l.inWindow(now)))
}

// until returns how long a command waits at now for its slot when ahead
// other commands wait before it: until enough of the sends in the window
// have left it. Past what the window shows, a whole window.
func (l *sendLimiter) until(now time.Time, ahead int) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	times := l.inWindow(now)
	i := len(times) + ahead - (l.limit - l.reserve)
	switch {
	case i < 0:
		return 0
	case i >= len(times):
		return l.window
	}
	return times[i].Add(l.window).Sub(now)
}

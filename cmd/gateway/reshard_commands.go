package main

import (
	"time"

	"github.com/shardpool/gateway/service/shard"
)

// Workers' commands during a resharding. A worker sends a command for a
// guild to the subject of shard (guild_id >> 22) % total, with the total
// of the plan in force (gateway.plan). While two generations run, shard s
// of each holds different guilds, so only the generation in force takes
// shard s's commands: a next generation's shard subscribes once its
// generation is in force, and an old generation's shard unsubscribes at the
// cut-over (it serves events until its hand-over ends, commands no more).

// shardCommandsOf is the shards' command configuration for a pool of
// generation gen.
func (m *Main) shardCommandsOf(gen int) shard.CommandConfig {
	c := m.shardCommands()
	if m.gens == nil || c.OnRun == nil {
		return c
	}
	subscribe, g := c.OnRun, m.gens
	c.OnRun = func(s *shard.Shard) func() {
		done, finished := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(finished)
			g.subscribeWhileInForce(gen, s, subscribe, done)
		}()
		// Unsubscribed when the shard stops, before its drain or fence
		// returns, as without a resharding.
		return func() { close(done); <-finished }
	}
	return c
}

// subscribeWhileInForce keeps shard s subscribed to its commands while
// generation gen is the plan in force, until done.
func (g *fleetGens) subscribeWhileInForce(gen int, s *shard.Shard, subscribe func(*shard.Shard) func(), done <-chan struct{}) {
	var unsubscribe func()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		switch inForce := g.inForce(gen); {
		case inForce && unsubscribe == nil:
			unsubscribe = subscribe(s)
		case !inForce && unsubscribe != nil:
			unsubscribe()
			unsubscribe = nil
		}
		select {
		case <-done:
			if unsubscribe != nil {
				unsubscribe()
			}
			return
		case <-tick.C:
		}
	}
}

// inForce reports whether generation gen is the plan in force (before the
// first reading of the plans: whether it is the member's).
func (g *fleetGens) inForce(gen int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.plans.Current.Generation == 0 {
		return gen == g.plan.Generation
	}
	return g.plans.Current.Generation == gen
}

package service

import (
	"context"
	"fmt"
	"time"

	"github.com/shardpool/gateway/service/shard"
)

// Commander sends gateway commands on the shards an instance runs: the
// command path of workers (presence, voice state, request guild members).
type Commander interface {
	// Send writes cmd on shard shardID's connection within its send budget.
	// reply receives an op 8's chunks or RATE_LIMITED, in order; nil leaves
	// them to the streams. A refusal is a *shard.CommandError.
	Send(ctx context.Context, shardID int, cmd shard.Command, reply shard.ReplyFunc) (nonce string, err error)
}

// ResultNotHere is the result of a command for a shard the instance does
// not run (any more).
const ResultNotHere = "not_here"

// NotHere is the error for a command to a shard the instance does not run.
func NotHere(shardID int) error {
	return &shard.CommandError{Result: ResultNotHere, Msg: fmt.Sprintf("this instance does not run shard %d", shardID)}
}

// Send implements Commander. A draining pool sends nothing: its shards are
// on their way to a successor.
func (p *Pool) Send(ctx context.Context, shardID int, cmd shard.Command, reply shard.ReplyFunc) (string, error) {
	s := p.Shard(shardID)
	if s == nil {
		return "", NotHere(shardID)
	}
	if p.draining.Load() {
		return "", &shard.CommandError{Result: shard.ResultNotReady, Msg: fmt.Sprintf("shard %d is being handed off (drain)", shardID), RetryAfter: notReadyRetry}
	}
	return s.Send(ctx, cmd, reply)
}

// notReadyRetry is the retry hint while a shard is handed off.
const notReadyRetry = 2 * time.Second

// Shard returns the pool's shard id, or nil when it has none of that id.
func (p *Pool) Shard(id int) *shard.Shard {
	if i := id - p.cfg.FirstShard; i >= 0 && i < len(p.shards) {
		return p.shards[i]
	}
	return nil
}

// Plan is the fleet's shard plan, for workers: a guild's shard is
// (guild_id >> 22) % TotalShards, and shard s is run by pool
// s / ShardsPerPool.
type Plan struct {
	TotalShards   int `json:"total_shards"`
	ShardsPerPool int `json:"shards_per_pool"`
	Pools         int `json:"pools"`
	// Generations: the plan in force and, while resharding, the next one
	// (with Consul only).
	Generations []GenerationStatus `json:"generations,omitempty"`
}

package discovery

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/go-kit/log/level"
	"github.com/hashicorp/consul/api"

	"github.com/shardpool/gateway/service/shard"
)

// SessionSource gives the instance's current session.
type SessionSource interface {
	// SessionID blocks until the instance holds a live session and returns
	// its id.
	SessionID(ctx context.Context) (string, error)
}

// IdentifyLimiter is a shard.IdentifyLimiter shared by every instance of the
// bot: one lock per bucket (shard_id % max_concurrency) at
// <KVPrefix>/identify/<bucket>, whose value holds the time of the bucket's
// last IDENTIFY, fleet-wide. A shard takes its turn in the in-process
// BucketLimiter first (which keeps the shards of this instance in order),
// then the bucket's lock; it waits until the stored time plus the window
// before it sends IDENTIFY, and writes the new time as it releases the lock.
//
// The times come from the clocks of different machines, so those must be
// synchronised (NTP); the window carries the same 2% margin as the
// in-process limiter. An instance that dies holding a lock keeps its bucket
// closed until its session ends (the TTL, or its /health check failing),
// which is never shorter than the window.
type IdentifyLimiter struct {
	c              *Consul
	src            SessionSource
	inner          *shard.BucketLimiter
	maxConcurrency int
	window         time.Duration
}

var _ shard.IdentifyLimiter = (*IdentifyLimiter)(nil)

// NewIdentifyLimiter returns an IdentifyLimiter for maxConcurrency buckets of
// window (Discord's is 5 s), taking its locks with src's session.
func (c *Consul) NewIdentifyLimiter(src SessionSource, maxConcurrency int, window time.Duration) *IdentifyLimiter {
	maxConcurrency = max(maxConcurrency, 1)
	return &IdentifyLimiter{
		c: c, src: src, maxConcurrency: maxConcurrency,
		inner:  shard.NewBucketLimiter(maxConcurrency, window),
		window: window + window/50,
	}
}

// Expect announces shards about to identify, as BucketLimiter.Expect does.
func (l *IdentifyLimiter) Expect(shardIDs ...int) { l.inner.Expect(shardIDs...) }

// identifyValue is the value of a bucket's lock.
type identifyValue struct {
	LastIdentify time.Time `json:"last_identify"`
	ShardID      int       `json:"shard_id"`
	InstanceID   string    `json:"instance_id"`
}

// Acquire implements shard.IdentifyLimiter.
func (l *IdentifyLimiter) Acquire(ctx context.Context, shardID int) (shard.Permit, error) {
	inner, err := l.inner.Acquire(ctx, shardID)
	if err != nil {
		return nil, err
	}
	p, err := l.lock(ctx, shardID)
	if err != nil {
		inner.Release(time.Time{})
		return nil, err
	}
	p.inner = inner
	return p, nil
}

// lock takes the bucket's lock without changing its value: the lock and the
// check that the value is still the one read happen in one transaction.
func (l *IdentifyLimiter) lock(ctx context.Context, shardID int) (*identifyPermit, error) {
	key := l.c.identifyKey(shardID % l.maxConcurrency)
	var index uint64
	wait := time.Minute
	for {
		sid, err := l.src.SessionID(ctx)
		if err != nil {
			return nil, err
		}
		pair, meta, err := l.c.client.KV().Get(key, (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx))
		if err == nil && (pair == nil || pair.Session == "") {
			ops := api.KVTxnOps{{Verb: api.KVCheckNotExists, Key: key}, {Verb: api.KVLock, Key: key, Session: sid}}
			if pair != nil {
				ops = api.KVTxnOps{{Verb: api.KVCheckIndex, Key: key, Index: pair.ModifyIndex}, {Verb: api.KVLock, Key: key, Value: pair.Value, Session: sid}}
			}
			var ok bool
			ok, _, err = l.c.txn(ctx, ops)
			if err == nil && ok {
				p := &identifyPermit{l: l, key: key, sid: sid, shardID: shardID}
				if pair != nil {
					p.prev = pair.Value
					var v identifyValue
					if json.Unmarshal(pair.Value, &v) == nil {
						p.last = v.LastIdentify
					}
				}
				return p, nil
			}
		}
		switch {
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case err != nil:
			level.Warn(l.c.logger).Log("msg", "consul identify lock unavailable; retrying", "shard_id", shardID, "err", err)
			if sleep(ctx, time.Second) != nil {
				return nil, ctx.Err()
			}
			index, wait = 0, time.Minute
		case pair != nil && pair.Session != "":
			// Held: sleep in Consul until it changes.
			index, wait = nextIndex(index, meta.LastIndex), time.Minute
		default:
			// Free but refused: the previous holder's session was
			// invalidated (lock-delay), or another instance won the race.
			index, wait = nextIndex(index, meta.LastIndex), 250*time.Millisecond
		}
	}
}

type identifyPermit struct {
	l       *IdentifyLimiter
	inner   shard.Permit
	key     string
	sid     string
	shardID int
	prev    []byte    // the value as found
	last    time.Time // the bucket's last IDENTIFY, fleet-wide
	once    sync.Once
}

// Wait implements shard.Permit.
func (p *identifyPermit) Wait(ctx context.Context) error {
	if err := p.inner.Wait(ctx); err != nil {
		return err
	}
	if d := time.Until(p.last.Add(p.l.window)); d > 0 {
		return sleep(ctx, d)
	}
	return nil
}

// Release implements shard.Permit: the new time (or the old value, when no
// IDENTIFY was sent) is written as the lock is released, in one step.
func (p *identifyPermit) Release(sent time.Time) {
	p.once.Do(func() {
		value := p.prev
		if !sent.IsZero() {
			value, _ = json.Marshal(identifyValue{LastIdentify: sent.UTC(), ShardID: p.shardID, InstanceID: p.l.c.cfg.InstanceID})
		}
		op := api.KVTxnOps{{Verb: api.KVUnlock, Key: p.key, Value: value, Session: p.sid}}
		if !p.unlock(op) {
			// Consul unreachable: keep trying in the background. If it stays
			// unreachable the session expires and releases the lock anyway.
			go func() {
				give := time.Now().Add(2 * p.l.c.cfg.SessionTTL)
				for time.Now().Before(give) && !p.unlock(op) {
					time.Sleep(time.Second)
				}
			}()
		}
		p.inner.Release(sent)
	})
}

// unlock reports whether it is done: released, or no longer ours to release.
func (p *identifyPermit) unlock(op api.KVTxnOps) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _, err := p.l.c.txn(ctx, op)
	if err != nil {
		level.Warn(p.l.c.logger).Log("msg", "cannot release the consul identify lock; retrying", "key", p.key, "err", err)
		return false
	}
	return true
}

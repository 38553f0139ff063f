package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
// A turn counts only if the transaction that records it committed: the value
// carries the lock index of the turn that wrote it, so the next holder can
// tell. When the last turn's record is missing (its release was rolled back
// because the lock was no longer held, or its holder died holding the lock)
// the next holder waits the full window from the moment it took the lock.
//
// The times come from the clocks of different machines, so those must be
// synchronised (NTP); the window carries the same 2% margin as the
// in-process limiter. An instance that dies holding a lock keeps its bucket
// closed until its session ends (the TTL, or its /health check failing).
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
	// LockIndex is the key's lock index during the turn that wrote the
	// value. Consul counts every acquisition of the lock, so a value whose
	// LockIndex is behind the key's is older than the last turn.
	LockIndex uint64 `json:"lock_index"`
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
				// The key was free and unchanged since the read: this
				// acquisition is the next in Consul's count.
				p := &identifyPermit{l: l, key: key, sid: sid, shardID: shardID, lockIndex: 1, last: time.Now()}
				if pair != nil {
					p.prev, p.lockIndex = pair.Value, pair.LockIndex+1
					p.last = l.lastIdentify(pair, shardID)
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

// lastIdentify returns the time of the bucket's last IDENTIFY as pair
// records it. When the last turn left no record (pair's value was written
// before the last acquisition), the turn may have sent an IDENTIFY at any
// time until now: now is returned, so the new holder waits a full window.
// The same goes for a bucket without a key (a new fleet, or Consul lost its
// state: an IDENTIFY may have been sent just before).
func (l *IdentifyLimiter) lastIdentify(pair *api.KVPair, shardID int) time.Time {
	var v identifyValue
	if json.Unmarshal(pair.Value, &v) == nil && v.LockIndex == pair.LockIndex && pair.LockIndex > 0 {
		return v.LastIdentify
	}
	level.Info(l.c.logger).Log("msg", "the identify bucket's last turn left no record in consul (its release was rolled back, or its holder died): waiting the full window",
		"key", pair.Key, "shard_id", shardID, "lock_index", pair.LockIndex, "recorded_lock_index", v.LockIndex)
	return time.Now()
}

type identifyPermit struct {
	l         *IdentifyLimiter
	inner     shard.Permit
	key       string
	sid       string
	shardID   int
	lockIndex uint64    // the key's lock index while this permit holds it
	prev      []byte    // the value as found
	last      time.Time // the bucket's last IDENTIFY, fleet-wide
	once      sync.Once
}

// identifyCheckTimeout bounds the check before an IDENTIFY; an instance
// that cannot reach Consul that fast does not identify.
const identifyCheckTimeout = 2 * time.Second

// errIdentifyLockLost: the bucket's lock is no longer provably ours.
var errIdentifyLockLost = errors.New("the identify bucket's lock is no longer held in consul")

// Wait implements shard.Permit. After the window it checks, with a
// consistent read, that the bucket's lock is still ours: an instance cut
// off from Consul, or one whose Consul lost its state (a restarted dev
// agent or rebuilt cluster), may believe it holds a turn that another
// instance has already been granted.
func (p *identifyPermit) Wait(ctx context.Context) error {
	if err := p.inner.Wait(ctx); err != nil {
		return err
	}
	if d := time.Until(p.last.Add(p.l.window)); d > 0 {
		if err := sleep(ctx, d); err != nil {
			return err
		}
	}
	return p.stillHeld(ctx)
}

func (p *identifyPermit) stillHeld(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, identifyCheckTimeout)
	defer cancel()
	pair, _, err := p.l.c.client.KV().Get(p.key, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	switch {
	case err != nil:
		return fmt.Errorf("%w: %v", errIdentifyLockLost, err)
	case pair == nil || pair.Session != p.sid || pair.LockIndex != p.lockIndex:
		return errIdentifyLockLost
	}
	return nil
}

// Release implements shard.Permit: the turn is recorded as the lock is
// released, in one step: the new time, or when no IDENTIFY was sent the
// time this turn went by (the old one, or the moment the lock was taken
// when the old one was unknown).
func (p *identifyPermit) Release(sent time.Time) {
	p.once.Do(func() {
		var v identifyValue
		if sent.IsZero() {
			json.Unmarshal(p.prev, &v)
			v.LastIdentify = p.last.UTC()
		} else {
			v = identifyValue{LastIdentify: sent.UTC(), ShardID: p.shardID, InstanceID: p.l.c.cfg.InstanceID}
		}
		v.LockIndex = p.lockIndex
		value, _ := json.Marshal(v)
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

// unlock reports whether it is done: released with the turn recorded, or
// rolled back because the lock is no longer ours (the session was
// invalidated). Then the turn is not recorded, and the next holder, seeing
// no record of it, waits the full window.
func (p *identifyPermit) unlock(op api.KVTxnOps) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ok, resp, err := p.l.c.txn(ctx, op)
	if err != nil {
		level.Warn(p.l.c.logger).Log("msg", "cannot release the consul identify lock; retrying", "key", p.key, "err", err)
		return false
	}
	if !ok {
		level.Warn(p.l.c.logger).Log("msg", "identify turn not recorded: consul rolled the release back (the session no longer holds the bucket's lock); the next turn waits the full window",
			"key", p.key, "shard_id", p.shardID, "reason", txnErrors(resp))
	}
	return true
}

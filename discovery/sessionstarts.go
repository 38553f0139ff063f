package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/shardpool/gateway/service/shard"
)

// SessionStartCounter is a shard.StartCounter shared by every instance of
// the bot: Discord's daily session start budget is the bot's, not an
// instance's, so the count lives at <KVPrefix>/session-starts and every
// change is a check-and-set on the record's ModifyIndex, read again and
// redone when another instance changed it first. Two instances can then
// never both take the last start above the reserve.
//
// The record keeps the end of Discord's window as a time, compared with
// this machine's clock, so the clocks must be synchronised (NTP), as for the
// identify buckets. When Consul cannot be reached the counter fails and
// shard.SessionStarts keeps the shard waiting: no IDENTIFY without a start.
type SessionStartCounter struct {
	c *Consul
}

var _ shard.StartCounter = (*SessionStartCounter)(nil)

// NewSessionStartCounter returns the counter of the bot whose instances
// share c's KV prefix.
func (c *Consul) NewSessionStartCounter() *SessionStartCounter {
	return &SessionStartCounter{c: c}
}

// Key is the KV key of the count.
func (s *SessionStartCounter) Key() string { return s.c.cfg.KVPrefix + "/session-starts" }

// sessionStartsValue is the record: the count and who changed it last.
type sessionStartsValue struct {
	shard.StartLimit
	UpdatedBy string    `json:"updated_by"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Merge implements shard.StartCounter.
func (s *SessionStartCounter) Merge(ctx context.Context, fresh shard.StartLimit, pending int, now time.Time) (shard.StartLimit, error) {
	l, _, err := s.update(ctx, now, func(cur shard.StartLimit) (shard.StartLimit, bool) {
		return shard.MergeStartLimit(cur, fresh, pending, now), true
	})
	return l, err
}

// Take implements shard.StartCounter.
func (s *SessionStartCounter) Take(ctx context.Context, floor int, now time.Time) (shard.StartLimit, bool, error) {
	return s.update(ctx, now, func(cur shard.StartLimit) (shard.StartLimit, bool) {
		return shard.TakeStart(cur, floor, now)
	})
}

// Give implements shard.StartCounter.
func (s *SessionStartCounter) Give(ctx context.Context, resetAt, now time.Time) (shard.StartLimit, error) {
	l, _, err := s.update(ctx, now, func(cur shard.StartLimit) (shard.StartLimit, bool) {
		return shard.GiveStart(cur, resetAt, now), true
	})
	return l, err
}

// update applies change to the record with a check-and-set, again on a
// fresh read each time another instance wrote first. A record that is
// missing or unreadable counts as no count (a window that has ended), which
// only the next Merge of a reading of /gateway/bot replaces.
func (s *SessionStartCounter) update(ctx context.Context, now time.Time, change func(shard.StartLimit) (shard.StartLimit, bool)) (shard.StartLimit, bool, error) {
	kv := s.c.client.KV()
	for {
		pair, _, err := kv.Get(s.Key(), (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
		if err != nil {
			return shard.StartLimit{}, false, fmt.Errorf("read %s: %w", s.Key(), err)
		}
		var cur shard.StartLimit
		var index uint64 // 0: create only if still missing
		if pair != nil {
			index = pair.ModifyIndex
			var v sessionStartsValue
			if json.Unmarshal(pair.Value, &v) == nil {
				cur = v.StartLimit
			}
		}
		next, ok := change(cur)
		if sameLimit(next, cur) {
			return cur, ok, nil // nothing to write
		}
		next.ResetAt = next.ResetAt.UTC()
		b, err := json.Marshal(sessionStartsValue{StartLimit: next, UpdatedBy: s.c.cfg.InstanceID, UpdatedAt: now.UTC()})
		if err != nil {
			return shard.StartLimit{}, false, err
		}
		done, _, err := kv.CAS(&api.KVPair{Key: s.Key(), Value: b, ModifyIndex: index}, (&api.WriteOptions{}).WithContext(ctx))
		if err != nil {
			return shard.StartLimit{}, false, fmt.Errorf("write %s: %w", s.Key(), err)
		}
		if done {
			return next, ok, nil
		}
		if err := ctx.Err(); err != nil {
			return shard.StartLimit{}, false, err
		}
	}
}

func sameLimit(a, b shard.StartLimit) bool {
	return a.Total == b.Total && a.Remaining == b.Remaining && a.ResetAt.Equal(b.ResetAt)
}

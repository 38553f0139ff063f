package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-kit/log/level"
	"github.com/hashicorp/consul/api"

	"github.com/shardpool/gateway/service"
	"github.com/shardpool/gateway/service/shard"
)

// lockValue is the value of a pool lock, for operators reading the KV store.
type lockValue struct {
	InstanceID string    `json:"instance_id"`
	Address    string    `json:"address"`
	Since      time.Time `json:"since"`
}

// ClaimPool implements Coordinator. It lists the pool locks with a blocking
// query: a spare (or standby) sleeps in Consul until a lock changes, then
// tries the free ones of ids, lowest first. A lock that looks free but cannot
// be taken is in its lock-delay (its owner's session was invalidated); it is
// retried every second until the delay ends.
func (c *Consul) ClaimPool(ctx context.Context, s Session, ids []int) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.Lost():
			cancel()
		case <-ctx.Done():
		}
	}()
	value, _ := json.Marshal(lockValue{
		InstanceID: c.cfg.InstanceID,
		Address:    net.JoinHostPort(c.cfg.ServiceAddress, strconv.Itoa(c.cfg.ServicePort)),
		Since:      time.Now().UTC(),
	})
	var index uint64
	wait := 5 * time.Minute
	spare := false
	for {
		pairs, meta, err := c.client.KV().List(c.poolsPrefix(), (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return -1, c.claimEnded(ctx, s)
			}
			level.Warn(c.logger).Log("msg", "cannot list pool locks in consul; retrying", "err", err)
			if sleep(ctx, time.Second) != nil {
				return -1, c.claimEnded(ctx, s)
			}
			index = 0
			continue
		}
		index = nextIndex(index, meta.LastIndex)
		held := map[int]string{}
		for _, p := range pairs {
			if id, err := strconv.Atoi(strings.TrimPrefix(p.Key, c.poolsPrefix())); err == nil && p.Session != "" {
				held[id] = p.Session
			}
		}
		wait = 5 * time.Minute
		for _, id := range ids {
			switch held[id] {
			case s.ID():
				return id, nil
			case "":
			default:
				continue
			}
			ok, _, err := c.client.KV().Acquire(&api.KVPair{Key: c.poolKey(id), Value: value, Session: s.ID()}, (&api.WriteOptions{}).WithContext(ctx))
			if err != nil {
				if ctx.Err() != nil {
					return -1, c.claimEnded(ctx, s)
				}
				level.Warn(c.logger).Log("msg", "cannot acquire pool lock in consul; retrying", "pool_id", id, "err", err)
				wait = time.Second
				break
			}
			if ok {
				return id, nil
			}
			// Free but refused: lock-delay, or another instance won the
			// race (the next listing shows it).
			wait = time.Second
		}
		if !spare {
			spare = true
			if len(ids) == 1 {
				level.Info(c.logger).Log("msg", "the pool is taken: waiting as a standby until its owner leaves", "pool_id", ids[0])
			} else {
				level.Info(c.logger).Log("msg", "every pool is taken: waiting as a hot spare", "pools", len(ids))
			}
		}
	}
}

func (c *Consul) claimEnded(ctx context.Context, s Session) error {
	select {
	case <-s.Lost():
		return fmt.Errorf("claiming a pool: %w", s.Err())
	default:
		return ctx.Err()
	}
}

// TakeHandoffs implements Coordinator.
func (c *Consul) TakeHandoffs(ctx context.Context, s Session, pool int) (map[int]*shard.Handoff, error) {
	prefix := c.handoffPrefix(pool)
	pairs, _, err := c.client.KV().List(prefix, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("read hand-off records: %w", err)
	}
	out := map[int]*shard.Handoff{}
	for _, p := range pairs {
		id, err := strconv.Atoi(strings.TrimPrefix(p.Key, prefix))
		if err != nil {
			continue
		}
		var h shard.Handoff
		if err := json.Unmarshal(p.Value, &h); err != nil || h.SessionID == "" {
			level.Warn(c.logger).Log("msg", "ignoring a malformed hand-off record", "key", p.Key, "err", err)
			continue
		}
		out[id] = &h
	}
	if len(pairs) == 0 {
		return out, nil
	}
	// Consumed: deleted in the same step that proves we still own the pool.
	ok, resp, err := c.txn(ctx, api.KVTxnOps{
		{Verb: api.KVCheckSession, Key: c.poolKey(pool), Session: s.ID()},
		{Verb: api.KVDeleteTree, Key: prefix},
	})
	if err != nil {
		return nil, fmt.Errorf("delete hand-off records: %w", err)
	}
	if !ok {
		return nil, fmt.Errorf("delete hand-off records: %w (%s)", ErrLockLost, txnErrors(resp))
	}
	return out, nil
}

// maxTxnOps is Consul's limit of operations in one transaction.
const maxTxnOps = 64

// HandOff implements Coordinator. Each transaction first checks that the
// session still holds the pool lock, so a fenced instance writes nothing; the
// last one releases the lock, so the successor sees the records with it.
func (c *Consul) HandOff(ctx context.Context, s Session, pool int, records []service.ShardHandoff) error {
	lock := &api.KVTxnOp{Verb: api.KVCheckSession, Key: c.poolKey(pool), Session: s.ID()}
	var sets api.KVTxnOps
	records = slices.Clone(records)
	sort.Slice(records, func(i, j int) bool { return records[i].ShardID < records[j].ShardID })
	for _, r := range records {
		if r.Handoff == nil {
			continue // no session to hand over: the successor identifies
		}
		b, err := json.Marshal(r.Handoff)
		if err != nil {
			return err
		}
		sets = append(sets, &api.KVTxnOp{Verb: api.KVSet, Key: c.handoffPrefix(pool) + strconv.Itoa(r.ShardID), Value: b})
	}
	unlock := &api.KVTxnOp{Verb: api.KVUnlock, Key: c.poolKey(pool), Session: s.ID()}
	for {
		n := min(len(sets), maxTxnOps-2)
		ops := append(api.KVTxnOps{lock}, sets[:n]...)
		sets = sets[n:]
		last := len(sets) == 0
		if last {
			ops = append(ops, unlock)
		}
		ok, resp, err := c.txn(ctx, ops)
		if err != nil {
			return fmt.Errorf("write hand-off records: %w", err)
		}
		if !ok {
			return fmt.Errorf("write hand-off records: %w (%s)", ErrLockLost, txnErrors(resp))
		}
		if last {
			return nil
		}
	}
}

func txnErrors(resp *api.TxnResponse) string {
	if resp == nil {
		return "rolled back"
	}
	var parts []string
	for _, e := range resp.Errors {
		parts = append(parts, e.What)
	}
	return strings.Join(parts, "; ")
}

package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/hashicorp/consul/api"

	"github.com/shardpool/gateway/service"
)

// SaveCheckpoints writes pool's resume records to the hand-off keys, where a
// drain writes its final ones and a successor reads them (TakeHandoffs); a
// nil Handoff deletes the shard's key. Each transaction starts by checking
// that s still holds the pool lock, so an owner that was fenced, frozen
// past its TTL or cut off writes nothing over its successor's records:
// Consul rolls the whole transaction back and the error wraps ErrLockLost.
// Records beyond one transaction's 64 operations go in further ones, each
// with its own check.
func (c *Consul) SaveCheckpoints(ctx context.Context, s Session, pool int, records []service.ShardHandoff) error {
	lock := &api.KVTxnOp{Verb: api.KVCheckSession, Key: c.poolKey(pool), Session: s.ID()}
	var ops api.KVTxnOps
	for _, r := range records {
		key := c.handoffPrefix(pool) + strconv.Itoa(r.ShardID)
		if r.Handoff == nil {
			ops = append(ops, &api.KVTxnOp{Verb: api.KVDelete, Key: key})
			continue
		}
		b, err := json.Marshal(r.Handoff)
		if err != nil {
			return err
		}
		ops = append(ops, &api.KVTxnOp{Verb: api.KVSet, Key: key, Value: b})
	}
	for len(ops) > 0 {
		n := min(len(ops), maxTxnOps-1)
		ok, resp, err := c.txn(ctx, append(api.KVTxnOps{lock}, ops[:n]...))
		if err != nil {
			return fmt.Errorf("write checkpoints: %w", err)
		}
		if !ok {
			return fmt.Errorf("write checkpoints: %w (%s)", ErrLockLost, txnErrors(resp))
		}
		ops = ops[n:]
	}
	return nil
}

// Package service is the gateway's business layer: the Service interface the
// endpoints expose (status, readiness, drain), the shard Pool that implements
// it, and service middlewares (logging, instrumenting).
package service

import (
	"context"
	"errors"
	"time"

	"github.com/shardpool/gateway/service/shard"
)

// Service is what the transport layer can ask of a shard pool.
type Service interface {
	// Status reports the pool and every shard.
	Status(ctx context.Context) (Status, error)
	// Readiness reports whether the pool should receive traffic.
	Readiness(ctx context.Context) Readiness
	// Drain stops the pool for a hand-off: readiness turns false at once,
	// pending publishes are flushed and acked, every shard is closed with a
	// resumable close code and its hand-off record is returned. Idempotent.
	Drain(ctx context.Context) (DrainResult, error)
}

// Pool states.
const (
	PoolStarting = "starting"
	PoolRunning  = "running"
	PoolDraining = "draining"
	PoolDrained  = "drained"
)

// Status is the body of GET /status. It never holds a secret.
type Status struct {
	PoolID        int    `json:"pool_id"`
	State         string `json:"state"`
	Ready         bool   `json:"ready"`
	FirstShard    int    `json:"first_shard"`
	LastShard     int    `json:"last_shard"`
	TotalShards   int    `json:"total_shards"`
	LocalMode     bool   `json:"local_mode"`
	NATSConnected bool   `json:"nats_connected"`
	// JetStream is JetStreamEnabled, JetStreamNotEnabled or
	// JetStreamUnknown; absent in local mode.
	JetStream string `json:"jetstream,omitempty"`
	// NATSLastError is the last error of the NATS connection (credentials
	// redacted) or of JetStream on it, and NATSLastErrorAt when it
	// happened; absent while there was none. It stays after a recovery.
	NATSLastError   string        `json:"nats_last_error,omitempty"`
	NATSLastErrorAt *time.Time    `json:"nats_last_error_at,omitempty"`
	Publish         PublishStatus `json:"publish"`
	Shards          []ShardStatus `json:"shards"`
	// Discovery is the instance's place in a fleet coordinated through a
	// discovery service (Consul); absent when there is none.
	Discovery *Membership `json:"discovery,omitempty"`
}

// Membership describes an instance coordinated through a discovery service:
// which pool it owns, if any, and its last fence.
type Membership struct {
	InstanceID string `json:"instance_id"`
	// Role is owner (claimed a pool), static (POOL_ID set explicitly,
	// holding that pool's lock), spare (waiting to take over a pool),
	// standby (POOL_ID set, waiting for that pool's lock), fenced (lost its
	// claim: shards stopped), starting or drained.
	Role    string `json:"role"`
	Session string `json:"session_id,omitempty"`
	Pools   int    `json:"pools"`
	// ResumedShards are the shards the pool took over by RESUME from a
	// predecessor's hand-off record.
	ResumedShards []int  `json:"resumed_shards,omitempty"`
	LastFence     *Fence `json:"last_fence,omitempty"`
	// Generation is the plan generation this instance runs; Generations
	// the fleet's plan in force and, while resharding, the next one.
	Generation  int                `json:"generation,omitempty"`
	Generations []GenerationStatus `json:"generations,omitempty"`
}

// Fence records an instance stopping its shards because it lost its claim on
// the pool.
type Fence struct {
	PoolID int       `json:"pool_id"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason"`
}

// PublishStatus describes the publish path.
type PublishStatus struct {
	BufferEvents int    `json:"buffer_events"`
	BufferBytes  int64  `json:"buffer_bytes"`
	Breaker      string `json:"circuit_breaker,omitempty"`
}

// ShardStatus is one shard in /status, with its hand-off record once drained.
type ShardStatus struct {
	shard.Status
	Handoff *shard.Handoff `json:"handoff,omitempty"`
}

// Readiness is the body of GET /ready.
type Readiness struct {
	Ready         bool `json:"ready"`
	PoolID        int  `json:"pool_id"`
	ShardsTotal   int  `json:"shards_total"`
	ShardsReady   int  `json:"shards_ready"`
	NATSConnected bool `json:"nats_connected"`
	// JetStream is as in Status: not ready unless JetStreamEnabled.
	JetStream   string `json:"jetstream,omitempty"`
	GuildsTotal int    `json:"guilds_total"`
}

// ReportBroker fills in the broker's fields: nothing in local mode (nil).
func (r *Readiness) ReportBroker(b Broker) {
	if b != nil {
		r.NATSConnected, r.JetStream = b.Connected(), b.JetStream()
	}
}

// brokerUsable reports whether events can be published as r saw the
// broker: connected to a server with JetStream, or local mode.
func (r Readiness) brokerUsable(b Broker) bool {
	return b == nil || r.NATSConnected && r.JetStream == JetStreamEnabled
}

// ReportBroker fills in the broker's fields of the status; in local mode
// (nil) only LocalMode.
func (st *Status) ReportBroker(b Broker) {
	st.LocalMode = b == nil
	if b == nil {
		return
	}
	st.NATSConnected, st.JetStream = b.Connected(), b.JetStream()
	if msg, at := b.LastError(); msg != "" {
		st.NATSLastError, st.NATSLastErrorAt = msg, &at
	}
}

// DrainResult is the body of POST /drain.
type DrainResult struct {
	PoolID int `json:"pool_id"`
	// Flushed is true when every accepted event was acked before the
	// deadline; otherwise the hand-off seqs stop before the unacked ones, so
	// a successor's RESUME replays them.
	Flushed bool           `json:"flushed"`
	Shards  []ShardHandoff `json:"shards"`
}

// ShardHandoff is the record a successor needs to RESUME a shard's session.
type ShardHandoff struct {
	ShardID int            `json:"shard_id"`
	Handoff *shard.Handoff `json:"handoff"`
}

// ErrNotRunning is returned by Drain before the pool has started.
var ErrNotRunning = errors.New("the shard pool is not running")

package service

import (
	"errors"
	"time"
)

// GenerationStatus is one generation of the fleet's shard plan as /status
// and the plan command show it: the plan in force, or the next one while
// the fleet reshards, with how far its pools are claimed and its shards
// READY (as their owners last reported them in Consul).
type GenerationStatus struct {
	Generation    int       `json:"generation"`
	State         string    `json:"state"` // GenerationInForce or GenerationNext
	TotalShards   int       `json:"total_shards"`
	ShardsPerPool int       `json:"shards_per_pool"`
	Pools         int       `json:"pools"`
	PoolsClaimed  int       `json:"pools_claimed"`
	ShardsReady   int       `json:"shards_ready"`
	CreatedAt     time.Time `json:"created_at"`
}

// GenerationStatus states.
const (
	GenerationInForce = "in_force"
	GenerationNext    = "next"
)

// Errors of a reshard request, which transports map to their codes.
var (
	// ErrReshardConflict: a resharding is in progress already, or the
	// requested plan is the one in force.
	ErrReshardConflict = errors.New("reshard conflict")
	// ErrNoReshard: no resharding to abort.
	ErrNoReshard = errors.New("no resharding in progress")
	// ErrReshardUnavailable: this instance runs without Consul, where
	// there is no fleet plan to change.
	ErrReshardUnavailable = errors.New("resharding needs the fleet in Consul (CONSUL_HTTP_ADDR)")
)

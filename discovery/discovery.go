// Package discovery coordinates a fleet of gateway instances through a
// discovery service: the instances agree on one shard plan, each registers
// itself, claims a pool id (or waits as a hot spare; with POOL_ID set, takes
// that pool's lock or waits as its standby), fences itself when it loses its
// claim, hands its Discord sessions over to its successor on drain, and takes
// its turn in the fleet-wide identify buckets.
//
// The Member (member.go) is the instance's side of it and knows nothing of
// Consul: it works through the Registry and Coordinator interfaces below.
// Consul (consul.go and the files next to it) implements them with
// github.com/hashicorp/consul/api.
package discovery

import (
	"context"
	"errors"

	"github.com/shardpool/gateway/service"
	"github.com/shardpool/gateway/service/shard"
)

// Roles of an instance, as in /status (discovery.role), the catalog's tags
// and the gateway_discovery_role metric.
const (
	RoleStarting = "starting" // registering, creating its first session
	RoleSpare    = "spare"    // no pool: waiting to take over one
	RoleOwner    = "owner"    // holds the lock of a pool it claimed and runs its shards
	RoleStandby  = "standby"  // POOL_ID set: waiting for that pool's lock, which another instance holds
	RoleStatic   = "static"   // POOL_ID set: holds that pool's lock and runs its shards
	RoleFenced   = "fenced"   // lost its session: shards stopped
	RoleDrained  = "drained"  // drained; about to exit
)

var roles = []string{RoleStarting, RoleSpare, RoleOwner, RoleStandby, RoleStatic, RoleFenced, RoleDrained}

// Instance is what the catalog says about this process besides its address.
type Instance struct {
	Role        string
	PoolID      int // -1 when it runs no pool
	FirstShard  int
	LastShard   int
	TotalShards int
}

// Registry publishes the instance in the service catalog.
type Registry interface {
	// Register adds or updates the instance (idempotent).
	Register(ctx context.Context, in Instance) error
	// Deregister removes it.
	Deregister(ctx context.Context) error
}

// Session is a lease held by this instance: locks taken with it are released
// when it ends, by Close or because the discovery service invalidated it.
type Session interface {
	ID() string
	// Lost is closed when the session can no longer be trusted to hold its
	// locks: invalidated by the discovery service, or not renewed for long
	// enough that it might be. The holder must stop using what it locked.
	Lost() <-chan struct{}
	// Err says why the session was lost.
	Err() error
	// Close stops renewing and ends the session, releasing its locks.
	Close(ctx context.Context) error
	// Abandon stops renewing without ending the session, as a crash would:
	// the discovery service lets it expire.
	Abandon()
}

// Coordinator holds the fleet's shared state: the shard plan, sessions, pool
// locks and hand-off records.
type Coordinator interface {
	// AgreePlan returns the fleet's stored shard plan, storing want first
	// when there is none (see Consul.AgreePlan).
	AgreePlan(ctx context.Context, want Plan) (Plan, error)
	// PlanKey names where the plan is stored, for messages.
	PlanKey() string
	NewSession(ctx context.Context) (Session, error)
	// ClaimPool locks the lowest free pool id of ids with s and returns
	// it. When every one is taken it waits (a hot spare, or the standby of
	// a single pool) until one is released, ctx ends or s is lost.
	ClaimPool(ctx context.Context, s Session, ids []int) (int, error)
	// TakeHandoffs returns the hand-off records left for pool by its
	// previous owner, by shard id, and deletes them so that no record is
	// used twice. s must hold the pool's lock.
	TakeHandoffs(ctx context.Context, s Session, pool int) (map[int]*shard.Handoff, error)
	// HandOff writes the records and releases the pool's lock, in that
	// order and only while s still holds the lock. No records: release only.
	HandOff(ctx context.Context, s Session, pool int, records []service.ShardHandoff) error
}

// ErrLockLost is returned when an operation needs a pool lock the session no
// longer holds.
var ErrLockLost = errors.New("the session no longer holds the pool lock")

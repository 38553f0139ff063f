package endpoint

import (
	"context"

	"github.com/go-kit/kit/endpoint"

	"github.com/shardpool/gateway/service"
)

// MakePlanFuncEndpoint returns an endpoint that answers plan with what
// current returns at the time: the plan changes when the fleet reshards.
func MakePlanFuncEndpoint(current func() service.Plan) endpoint.Endpoint {
	return func(context.Context, interface{}) (interface{}, error) {
		return PlanResponse{Plan: current()}, nil
	}
}

// ReshardRequest starts a resharding of the fleet to TotalShards (and
// ShardsPerPool, 0 for unchanged), or with Abort drops the one in progress.
type ReshardRequest struct {
	TotalShards   int  `json:"total_shards"`
	ShardsPerPool int  `json:"shards_per_pool,omitempty"`
	Abort         bool `json:"-"`
}

// ReshardResponse carries the fleet's generations after the request.
type ReshardResponse struct {
	Plan service.Plan
	Err  error
}

// Failed implements endpoint.Failer.
func (r ReshardResponse) Failed() error { return r.Err }

// Resharder starts and aborts reshardings (the gateway's wiring).
type Resharder func(ctx context.Context, total, perPool int, abort bool) (service.Plan, error)

// MakeReshardEndpoint returns an endpoint for reshard requests.
func MakeReshardEndpoint(reshard Resharder) endpoint.Endpoint {
	return func(ctx context.Context, request interface{}) (interface{}, error) {
		req := request.(ReshardRequest)
		p, err := reshard(ctx, req.TotalShards, req.ShardsPerPool, req.Abort)
		return ReshardResponse{Plan: p, Err: err}, nil
	}
}

var _ endpoint.Failer = ReshardResponse{}

// Package endpoint exposes the service's methods as go-kit endpoints, one per
// method, with request and response types that carry business errors.
package endpoint

import (
	"context"

	"github.com/go-kit/kit/endpoint"

	"github.com/shardpool/gateway/service"
)

// Set collects the endpoints of the service.
type Set struct {
	StatusEndpoint    endpoint.Endpoint
	ReadinessEndpoint endpoint.Endpoint
	DrainEndpoint     endpoint.Endpoint
	// SendEndpoint and PlanEndpoint are the command path's (send.go); nil
	// until the wiring sets them with MakeSendEndpoint and MakePlanEndpoint.
	SendEndpoint endpoint.Endpoint
	PlanEndpoint endpoint.Endpoint
	// ReshardEndpoint (reshard.go) starts or aborts a resharding; nil
	// until the wiring sets it.
	ReshardEndpoint endpoint.Endpoint
}

// New returns a Set over svc with mw applied to every endpoint.
func New(svc service.Service, mw ...endpoint.Middleware) Set {
	wrap := func(e endpoint.Endpoint) endpoint.Endpoint {
		for _, m := range mw {
			e = m(e)
		}
		return e
	}
	return Set{
		StatusEndpoint:    wrap(MakeStatusEndpoint(svc)),
		ReadinessEndpoint: wrap(MakeReadinessEndpoint(svc)),
		DrainEndpoint:     wrap(MakeDrainEndpoint(svc)),
	}
}

// StatusRequest asks for the pool status.
type StatusRequest struct{}

// StatusResponse carries the pool status.
type StatusResponse struct {
	Status service.Status
	Err    error
}

// Failed implements endpoint.Failer.
func (r StatusResponse) Failed() error { return r.Err }

// ReadinessRequest asks whether the pool is ready.
type ReadinessRequest struct{}

// ReadinessResponse carries the readiness report.
type ReadinessResponse struct {
	Readiness service.Readiness
}

// Failed implements endpoint.Failer; readiness has no error, only a verdict.
func (r ReadinessResponse) Failed() error { return nil }

// DrainRequest asks the pool to drain.
type DrainRequest struct{}

// DrainResponse carries the hand-off records.
type DrainResponse struct {
	Result service.DrainResult
	Err    error
}

// Failed implements endpoint.Failer.
func (r DrainResponse) Failed() error { return r.Err }

// MakeStatusEndpoint returns an endpoint for Service.Status.
func MakeStatusEndpoint(svc service.Service) endpoint.Endpoint {
	return func(ctx context.Context, _ interface{}) (interface{}, error) {
		st, err := svc.Status(ctx)
		return StatusResponse{Status: st, Err: err}, nil
	}
}

// MakeReadinessEndpoint returns an endpoint for Service.Readiness.
func MakeReadinessEndpoint(svc service.Service) endpoint.Endpoint {
	return func(ctx context.Context, _ interface{}) (interface{}, error) {
		return ReadinessResponse{Readiness: svc.Readiness(ctx)}, nil
	}
}

// MakeDrainEndpoint returns an endpoint for Service.Drain.
func MakeDrainEndpoint(svc service.Service) endpoint.Endpoint {
	return func(ctx context.Context, _ interface{}) (interface{}, error) {
		res, err := svc.Drain(ctx)
		return DrainResponse{Result: res, Err: err}, nil
	}
}

var (
	_ endpoint.Failer = StatusResponse{}
	_ endpoint.Failer = ReadinessResponse{}
	_ endpoint.Failer = DrainResponse{}
)

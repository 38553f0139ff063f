package endpoint

import (
	"context"
	"errors"
	"time"

	"github.com/go-kit/kit/endpoint"

	"github.com/shardpool/gateway/service"
	"github.com/shardpool/gateway/service/shard"
)

// MaxSendTimeout caps how long a command may wait for the send budget,
// whatever its request asks.
const MaxSendTimeout = time.Minute

// SendRequest asks a shard to send a gateway command.
type SendRequest struct {
	ShardID int
	Command shard.Command
	// Timeout is the request's deadline, from now (0: the shard's default).
	Timeout time.Duration
	// Reply receives an op 8's replies (NATS: the request's reply subject).
	Reply shard.ReplyFunc
}

// SendResponse is the reply: {"ok":true} once written, else the error and
// when to try again.
type SendResponse struct {
	OK           bool   `json:"ok"`
	Nonce        string `json:"nonce,omitempty"` // op 8: the nonce of its chunks
	Error        string `json:"error,omitempty"`
	RetryAfterMS int64  `json:"retry_after_ms,omitempty"`
	// Result is the refusal's kind (not_ready, no_budget, invalid,
	// not_here, failed); transports map it to their status codes.
	Result string `json:"result,omitempty"`
	Err    error  `json:"-"`
}

// Failed implements endpoint.Failer.
func (r SendResponse) Failed() error { return r.Err }

// MakeSendEndpoint returns an endpoint for Commander.Send.
func MakeSendEndpoint(c service.Commander) endpoint.Endpoint {
	return func(ctx context.Context, request interface{}) (interface{}, error) {
		req := request.(SendRequest)
		if req.Timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, min(req.Timeout, MaxSendTimeout))
			defer cancel()
		}
		nonce, err := c.Send(ctx, req.ShardID, req.Command, req.Reply)
		return SendFailure(err, nonce), nil
	}
}

// SendFailure turns Send's outcome into the response.
func SendFailure(err error, nonce string) SendResponse {
	if err == nil {
		return SendResponse{OK: true, Nonce: nonce}
	}
	resp := SendResponse{Error: err.Error(), Result: shard.ResultFailed, Err: err}
	var ce *shard.CommandError
	if errors.As(err, &ce) {
		resp.Result = ce.Result
		resp.RetryAfterMS = ce.RetryAfter.Milliseconds()
		if ce.RetryAfter > 0 && resp.RetryAfterMS == 0 {
			resp.RetryAfterMS = 1
		}
	}
	return resp
}

// PlanRequest asks for the fleet's shard plan.
type PlanRequest struct{}

// PlanResponse carries the plan.
type PlanResponse struct {
	Plan service.Plan
}

// Failed implements endpoint.Failer.
func (r PlanResponse) Failed() error { return nil }

// MakePlanEndpoint returns an endpoint that answers plan.
func MakePlanEndpoint(plan service.Plan) endpoint.Endpoint {
	return func(context.Context, interface{}) (interface{}, error) {
		return PlanResponse{Plan: plan}, nil
	}
}

var (
	_ endpoint.Failer = SendResponse{}
	_ endpoint.Failer = PlanResponse{}
)

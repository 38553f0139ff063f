package transport

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/shardpool/gateway/endpoint"
	"github.com/shardpool/gateway/service"
)

// decodeReshard reads POST /reshard {"total_shards":N,"shards_per_pool":M}
// (shards_per_pool optional) and DELETE /reshard (abort).
func decodeReshard(_ context.Context, r *http.Request) (interface{}, error) {
	if r.Method == http.MethodDelete {
		return endpoint.ReshardRequest{Abort: true}, nil
	}
	var req endpoint.ReshardRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		return nil, badRequest(`the body must be {"total_shards":N} or {"total_shards":N,"shards_per_pool":M}: ` + err.Error())
	}
	if req.TotalShards < 1 || req.ShardsPerPool < 0 {
		return nil, badRequest("total_shards must be at least 1 and shards_per_pool not negative")
	}
	return req, nil
}

// encodeReshard answers with the fleet's plan and its generations, or the
// refusal: 409 while a resharding is in progress or nothing would change,
// 404 when there is none to abort, 503 without Consul.
func encodeReshard(ctx context.Context, w http.ResponseWriter, response interface{}) error {
	resp := response.(endpoint.ReshardResponse)
	code := http.StatusOK
	switch err := resp.Err; {
	case err == nil:
		return writeJSON(w, code, resp.Plan)
	case errors.Is(err, service.ErrReshardConflict):
		code = http.StatusConflict
	case errors.Is(err, service.ErrNoReshard):
		code = http.StatusNotFound
	case errors.Is(err, service.ErrReshardUnavailable):
		code = http.StatusServiceUnavailable
	default:
		encodeError(ctx, err, w)
		return nil
	}
	return writeJSON(w, code, map[string]string{"error": resp.Err.Error()})
}

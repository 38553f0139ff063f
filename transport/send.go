package transport

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/shardpool/gateway/endpoint"
	"github.com/shardpool/gateway/service"
	"github.com/shardpool/gateway/service/shard"
)

// TimeoutHeader carries a command request's deadline, in milliseconds from
// when the gateway reads it, over HTTP and NATS alike: a command waits for
// the send budget only that long.
const TimeoutHeader = "Gateway-Timeout-Ms"

// decodeHTTPSend reads POST /shards/{shard_id}/send: the body is the
// command, {"op":3|4|8,"d":{…}}. Over HTTP an op 8's chunks have no reply
// subject to go to: they go where they would without a command.
func decodeHTTPSend(_ context.Context, r *http.Request) (interface{}, error) {
	id, err := strconv.Atoi(r.PathValue("shard_id"))
	if err != nil || id < 0 {
		return nil, badRequest(fmt.Sprintf("shard id %q is not a number", r.PathValue("shard_id")))
	}
	var cmd shard.Command
	if err := json.NewDecoder(r.Body).Decode(&cmd); err != nil {
		return nil, badRequest("the body must be a gateway command {\"op\":3|4|8,\"d\":{...}}: " + err.Error())
	}
	timeout, err := parseTimeout(r.Header.Get(TimeoutHeader))
	if err != nil {
		return nil, badRequest(err.Error())
	}
	return endpoint.SendRequest{ShardID: id, Command: cmd, Timeout: timeout}, nil
}

func parseTimeout(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms <= 0 {
		return 0, fmt.Errorf("%s %q must be a positive number of milliseconds", TimeoutHeader, v)
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// sendStatus maps a refusal to its HTTP status.
var sendStatus = map[string]int{
	shard.ResultInvalid:   http.StatusBadRequest,
	service.ResultNotHere: http.StatusNotFound,
	shard.ResultNotReady:  http.StatusServiceUnavailable,
	shard.ResultNoBudget:  http.StatusTooManyRequests,
	shard.ResultFailed:    http.StatusBadGateway,
}

func encodeHTTPSend(_ context.Context, w http.ResponseWriter, response interface{}) error {
	resp := response.(endpoint.SendResponse)
	code := http.StatusOK
	if !resp.OK {
		code = sendStatus[resp.Result]
		if code == 0 {
			code = http.StatusInternalServerError
		}
		if resp.RetryAfterMS > 0 {
			w.Header().Set("Retry-After", strconv.FormatInt((resp.RetryAfterMS+999)/1000, 10))
		}
	}
	return writeJSON(w, code, resp)
}

// badRequestError is a request the transport could not decode.
type badRequestError struct{ msg string }

func (e badRequestError) Error() string { return e.msg }

func badRequest(msg string) error { return badRequestError{msg} }

// Package transport serves the gateway's HTTP surface: /health, /ready,
// /status, /drain (go-kit HTTP servers over the endpoint Set) and /metrics.
package transport

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/go-kit/kit/transport"
	httptransport "github.com/go-kit/kit/transport/http"
	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shardpool/gateway/endpoint"
	"github.com/shardpool/gateway/service"
)

// maxBodyBytes bounds request bodies; no endpoint takes a body.
const maxBodyBytes = 4 << 10

// Options configure the handler.
type Options struct {
	// DrainToken, when set, is required as "Authorization: Bearer <token>"
	// on POST /drain.
	DrainToken string
	// Gatherer serves /metrics.
	Gatherer prometheus.Gatherer
	Logger   log.Logger
}

// NewHTTPHandler returns the gateway's HTTP handler.
func NewHTTPHandler(e endpoint.Set, opts Options) http.Handler {
	serverOpts := []httptransport.ServerOption{
		httptransport.ServerErrorEncoder(encodeError),
		httptransport.ServerErrorHandler(transport.NewLogErrorHandler(opts.Logger)),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.Handle("GET /ready", httptransport.NewServer(e.ReadinessEndpoint, decodeEmpty(endpoint.ReadinessRequest{}), encodeReadiness, serverOpts...))
	mux.Handle("GET /status", httptransport.NewServer(e.StatusEndpoint, decodeEmpty(endpoint.StatusRequest{}), encodeStatus, serverOpts...))
	mux.Handle("POST /drain", requireBearer(opts.DrainToken, httptransport.NewServer(e.DrainEndpoint, decodeEmpty(endpoint.DrainRequest{}), encodeDrain, serverOpts...)))
	if e.SendEndpoint != nil {
		mux.Handle("POST /shards/{shard_id}/send", requireBearer(opts.DrainToken, httptransport.NewServer(e.SendEndpoint, decodeHTTPSend, encodeHTTPSend, serverOpts...)))
	}
	if e.ReshardEndpoint != nil {
		reshard := requireBearer(opts.DrainToken, httptransport.NewServer(e.ReshardEndpoint, decodeReshard, encodeReshard, serverOpts...))
		mux.Handle("POST /reshard", reshard)
		mux.Handle("DELETE /reshard", reshard)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{}))
	return limitBody(mux)
}

func limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
		next.ServeHTTP(w, r)
	})
}

// requireBearer guards next with a constant-time token comparison.
func requireBearer(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="drain"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized: " + r.Method + " " + r.URL.Path + " needs Authorization: Bearer <DRAIN_TOKEN>"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func decodeEmpty(req interface{}) httptransport.DecodeRequestFunc {
	return func(context.Context, *http.Request) (interface{}, error) { return req, nil }
}

func encodeReadiness(_ context.Context, w http.ResponseWriter, response interface{}) error {
	r := response.(endpoint.ReadinessResponse).Readiness
	code := http.StatusOK
	if !r.Ready {
		code = http.StatusServiceUnavailable
	}
	return writeJSON(w, code, r)
}

func encodeStatus(ctx context.Context, w http.ResponseWriter, response interface{}) error {
	resp := response.(endpoint.StatusResponse)
	if resp.Err != nil {
		encodeError(ctx, resp.Err, w)
		return nil
	}
	return writeJSON(w, http.StatusOK, resp.Status)
}

func encodeDrain(ctx context.Context, w http.ResponseWriter, response interface{}) error {
	resp := response.(endpoint.DrainResponse)
	if resp.Err != nil {
		encodeError(ctx, resp.Err, w)
		return nil
	}
	return writeJSON(w, http.StatusOK, resp.Result)
}

// encodeError maps service errors to status codes.
func encodeError(_ context.Context, err error, w http.ResponseWriter) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, service.ErrNotRunning):
		code = http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		code = http.StatusGatewayTimeout
	case errors.As(err, new(badRequestError)):
		code = http.StatusBadRequest
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v interface{}) error {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	return enc.Encode(v)
}

// IsLoopback reports whether a listen host only accepts local connections.
func IsLoopback(host string) bool {
	h := strings.Trim(host, "[]")
	return h == "localhost" || strings.HasPrefix(h, "127.") || h == "::1"
}

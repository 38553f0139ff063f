package transport

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardpool/gateway/endpoint"
	"github.com/shardpool/gateway/service"
)

// serveReshard serves the handler with a reshard endpoint over reshard.
func serveReshard(t *testing.T, token string, reshard endpoint.Resharder) *httptest.Server {
	t.Helper()
	e := endpoint.New(&fakeService{})
	e.ReshardEndpoint = endpoint.MakeReshardEndpoint(reshard)
	srv := httptest.NewServer(NewHTTPHandler(e, Options{DrainToken: token, Gatherer: prometheus.NewRegistry(), Logger: log.NewNopLogger()}))
	t.Cleanup(srv.Close)
	return srv
}

func TestReshardStartsAndAbortsWithTheBearerTokenAndMapsRefusals(t *testing.T) {
	var calls []string
	answer := error(nil)
	srv := serveReshard(t, "s3cret", func(_ context.Context, total, perPool int, abort bool) (service.Plan, error) {
		calls = append(calls, fmt.Sprintf("total=%d per_pool=%d abort=%v", total, perPool, abort))
		return service.Plan{TotalShards: 4, Generations: []service.GenerationStatus{{Generation: 1}, {Generation: 2, State: service.GenerationNext, TotalShards: total}}}, answer
	})
	if code, _ := call(t, "POST", srv.URL+"/reshard", "", `{"total_shards":8}`); code != http.StatusUnauthorized {
		t.Fatalf("without the token: %d", code)
	}
	code, body := call(t, "POST", srv.URL+"/reshard", "Bearer s3cret", `{"total_shards":8}`)
	if code != http.StatusOK || !strings.Contains(body, `"generation":2`) || !strings.Contains(body, `"state":"next"`) {
		t.Fatalf("reshard: %d %s", code, body)
	}
	if code, _ := call(t, "POST", srv.URL+"/reshard", "Bearer s3cret", `{"total_shards":12,"shards_per_pool":3}`); code != http.StatusOK {
		t.Fatalf("with shards_per_pool: %d", code)
	}
	if code, _ := call(t, "DELETE", srv.URL+"/reshard", "Bearer s3cret", ""); code != http.StatusOK {
		t.Fatalf("abort: %d", code)
	}
	want := []string{"total=8 per_pool=0 abort=false", "total=12 per_pool=3 abort=false", "total=0 per_pool=0 abort=true"}
	if fmt.Sprint(calls) != fmt.Sprint(want) {
		t.Fatalf("calls %q, want %q", calls, want)
	}
	for _, body := range []string{`{}`, `{"total_shards":0}`, `{"total_shards":-3}`, `not json`} {
		if code, _ := call(t, "POST", srv.URL+"/reshard", "Bearer s3cret", body); code != http.StatusBadRequest {
			t.Errorf("body %s: %d, want 400", body, code)
		}
	}
	for err, want := range map[error]int{
		fmt.Errorf("%w: in progress", service.ErrReshardConflict): http.StatusConflict,
		service.ErrNoReshard:          http.StatusNotFound,
		service.ErrReshardUnavailable: http.StatusServiceUnavailable,
	} {
		answer = err
		if code, body := call(t, "POST", srv.URL+"/reshard", "Bearer s3cret", `{"total_shards":8}`); code != want || !strings.Contains(body, err.Error()) {
			t.Errorf("%v: %d %s, want %d", err, code, body, want)
		}
	}
}

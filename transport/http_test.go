package transport

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardpool/gateway/endpoint"
	"github.com/shardpool/gateway/service"
)

type fakeService struct {
	ready  bool
	drains int
}

func (f *fakeService) Status(context.Context) (service.Status, error) {
	return service.Status{PoolID: 2, State: service.PoolRunning}, nil
}
func (f *fakeService) Readiness(context.Context) service.Readiness {
	return service.Readiness{Ready: f.ready, PoolID: 2, ShardsTotal: 3}
}
func (f *fakeService) Drain(context.Context) (service.DrainResult, error) {
	f.drains++
	f.ready = false
	return service.DrainResult{PoolID: 2, Flushed: true}, nil
}

func serve(t *testing.T, svc service.Service, token string) *httptest.Server {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "gateway_test_total", Help: "test"}))
	srv := httptest.NewServer(NewHTTPHandler(endpoint.New(svc), Options{DrainToken: token, Gatherer: reg, Logger: log.NewNopLogger()}))
	t.Cleanup(srv.Close)
	return srv
}

func call(t *testing.T, method, url, auth, body string) (int, string) {
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestReadyIs503UntilReadyWithTheContractBody(t *testing.T) {
	svc := &fakeService{}
	srv := serve(t, svc, "")
	code, body := call(t, "GET", srv.URL+"/ready", "", "")
	if code != 503 {
		t.Fatalf("not ready: %d", code)
	}
	var m map[string]any
	json.Unmarshal([]byte(body), &m)
	for _, k := range []string{"ready", "pool_id", "shards_total", "shards_ready", "nats_connected", "guilds_total"} {
		if _, ok := m[k]; !ok {
			t.Errorf("/ready body lacks %s: %s", k, body)
		}
	}
	svc.ready = true
	if code, _ := call(t, "GET", srv.URL+"/ready", "", ""); code != 200 {
		t.Fatalf("ready: %d", code)
	}
}

func TestDrainNeedsTheBearerToken(t *testing.T) {
	svc := &fakeService{ready: true}
	srv := serve(t, svc, "s3cret")
	for _, auth := range []string{"", "Bearer wrong", "s3cret", "Basic s3cret", "Bearer s3cret2", "bearer s3cret"} {
		if code, body := call(t, "POST", srv.URL+"/drain", auth, ""); code != 401 || strings.Contains(body, "s3cret") {
			t.Fatalf("auth %q: %d %s", auth, code, body)
		}
	}
	if svc.drains != 0 {
		t.Fatal("an unauthenticated request drained the pool")
	}
	if code, _ := call(t, "POST", srv.URL+"/drain", "Bearer s3cret", ""); code != 200 || svc.drains != 1 {
		t.Fatalf("authorized drain: %d, drains %d", code, svc.drains)
	}
}

func TestMethodsAndBodiesAreChecked(t *testing.T) {
	srv := serve(t, &fakeService{}, "")
	if code, _ := call(t, "GET", srv.URL+"/drain", "", ""); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /drain: %d", code)
	}
	if code, _ := call(t, "DELETE", srv.URL+"/status", "", ""); code != http.StatusMethodNotAllowed {
		t.Fatalf("DELETE /status: %d", code)
	}
	if code, _ := call(t, "GET", srv.URL+"/health", "", ""); code != 200 {
		t.Fatalf("/health: %d", code)
	}
	if code, body := call(t, "GET", srv.URL+"/metrics", "", ""); code != 200 || !strings.Contains(body, "gateway_test_total") {
		t.Fatalf("/metrics: %d", code)
	}
	if code, body := call(t, "GET", srv.URL+"/status", "", ""); code != 200 || !strings.Contains(body, `"pool_id":2`) {
		t.Fatalf("/status: %d %s", code, body)
	}
}

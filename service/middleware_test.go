package service

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// mockService is a Service made of function fields.
type mockService struct {
	StatusFn    func(context.Context) (Status, error)
	ReadinessFn func(context.Context) Readiness
	DrainFn     func(context.Context) (DrainResult, error)
}

var _ Service = (*mockService)(nil)

func (m *mockService) Status(ctx context.Context) (Status, error) { return m.StatusFn(ctx) }
func (m *mockService) Readiness(ctx context.Context) Readiness    { return m.ReadinessFn(ctx) }
func (m *mockService) Drain(ctx context.Context) (DrainResult, error) {
	return m.DrainFn(ctx)
}

func TestLoggingMiddlewareLogsDrainsAndTheirErrors(t *testing.T) {
	var buf bytes.Buffer
	boom := errors.New("boom")
	svc := LoggingMiddleware(log.NewLogfmtLogger(&buf))(&mockService{
		DrainFn:  func(context.Context) (DrainResult, error) { return DrainResult{}, boom },
		StatusFn: func(context.Context) (Status, error) { return Status{PoolID: 3}, nil },
	})
	if _, err := svc.Drain(context.Background()); err != boom {
		t.Fatalf("error not passed through: %v", err)
	}
	if st, _ := svc.Status(context.Background()); st.PoolID != 3 {
		t.Fatal("result not passed through")
	}
	out := buf.String()
	if !strings.Contains(out, "method=Drain") || !strings.Contains(out, "err=boom") || !strings.Contains(out, "level=error") {
		t.Fatalf("drain failure not logged:\n%s", out)
	}
}

func TestInstrumentingMiddlewareCountsCallsByOutcome(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewServiceMetrics(reg)
	svc := InstrumentingMiddleware(m)(&mockService{
		DrainFn:     func(context.Context) (DrainResult, error) { return DrainResult{}, errors.New("x") },
		ReadinessFn: func(context.Context) Readiness { return Readiness{Ready: true} },
	})
	svc.Drain(context.Background())
	svc.Readiness(context.Background())
	svc.Readiness(context.Background())
	if v := testutil.ToFloat64(m.Requests.WithLabelValues("drain", "error")); v != 1 {
		t.Fatalf("drain errors %v", v)
	}
	if v := testutil.ToFloat64(m.Requests.WithLabelValues("readiness", "ok")); v != 2 {
		t.Fatalf("readiness calls %v", v)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", err, problems)
	}
}

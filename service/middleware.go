package service

import (
	"context"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
)

// Middleware decorates a Service.
type Middleware func(Service) Service

// LoggingMiddleware logs drains at info and status/readiness calls at debug.
func LoggingMiddleware(logger log.Logger) Middleware {
	return func(next Service) Service { return loggingMiddleware{logger, next} }
}

type loggingMiddleware struct {
	logger log.Logger
	next   Service
}

func (mw loggingMiddleware) Status(ctx context.Context) (st Status, err error) {
	defer func(begin time.Time) {
		level.Debug(mw.logger).Log("method", "Status", "took", time.Since(begin), "err", err)
	}(time.Now())
	return mw.next.Status(ctx)
}

func (mw loggingMiddleware) Readiness(ctx context.Context) (r Readiness) {
	defer func(begin time.Time) {
		level.Debug(mw.logger).Log("method", "Readiness", "ready", r.Ready, "took", time.Since(begin))
	}(time.Now())
	return mw.next.Readiness(ctx)
}

func (mw loggingMiddleware) Drain(ctx context.Context) (res DrainResult, err error) {
	level.Info(mw.logger).Log("method", "Drain", "msg", "drain requested")
	defer func(begin time.Time) {
		lvl := level.Info
		if err != nil {
			lvl = level.Error
		}
		lvl(mw.logger).Log("method", "Drain", "flushed", res.Flushed, "shards", len(res.Shards), "took", time.Since(begin), "err", err)
	}(time.Now())
	return mw.next.Drain(ctx)
}

// ServiceMetrics count calls into the service, by method.
type ServiceMetrics struct {
	Requests *prometheus.CounterVec   // method, outcome
	Duration *prometheus.HistogramVec // method
}

// NewServiceMetrics creates and registers the service metrics.
func NewServiceMetrics(reg prometheus.Registerer) *ServiceMetrics {
	m := &ServiceMetrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_service_requests_total",
			Help: "Calls to the service (status, readiness, drain), by method and outcome.",
		}, []string{"method", "outcome"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gateway_service_request_duration_seconds",
			Help:    "Time spent in a service call, by method.",
			Buckets: prometheus.DefBuckets,
		}, []string{"method"}),
	}
	reg.MustRegister(m.Requests, m.Duration)
	return m
}

// InstrumentingMiddleware records calls and their duration.
func InstrumentingMiddleware(m *ServiceMetrics) Middleware {
	return func(next Service) Service { return instrumentingMiddleware{m, next} }
}

type instrumentingMiddleware struct {
	m    *ServiceMetrics
	next Service
}

func (mw instrumentingMiddleware) observe(method string, begin time.Time, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	mw.m.Requests.WithLabelValues(method, outcome).Inc()
	mw.m.Duration.WithLabelValues(method).Observe(time.Since(begin).Seconds())
}

func (mw instrumentingMiddleware) Status(ctx context.Context) (st Status, err error) {
	defer func(begin time.Time) { mw.observe("status", begin, err) }(time.Now())
	return mw.next.Status(ctx)
}

func (mw instrumentingMiddleware) Readiness(ctx context.Context) Readiness {
	defer func(begin time.Time) { mw.observe("readiness", begin, nil) }(time.Now())
	return mw.next.Readiness(ctx)
}

func (mw instrumentingMiddleware) Drain(ctx context.Context) (res DrainResult, err error) {
	defer func(begin time.Time) { mw.observe("drain", begin, err) }(time.Now())
	return mw.next.Drain(ctx)
}

package discovery

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the discovery metrics.
type Metrics struct {
	Role          *prometheus.GaugeVec // role: 1 for the current one
	Fences        prometheus.Counter
	RenewFailures prometheus.Counter
	Takeovers     *prometheus.CounterVec // how: resume, identify
}

// NewMetrics creates the discovery metrics and registers them with reg (nil:
// not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Role: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gateway_discovery_role",
			Help: "1 for the instance's current role (starting, spare, owner, static, fenced, drained), else 0.",
		}, []string{"role"}),
		Fences: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_discovery_fences_total",
			Help: "Times the instance stopped its shards because it lost its Consul session.",
		}),
		RenewFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_discovery_session_renew_failures_total",
			Help: "Failed renewals of the instance's Consul session.",
		}),
		Takeovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_discovery_shard_takeovers_total",
			Help: "Shards started after claiming a pool, by how: resume (a predecessor's hand-off record) or identify.",
		}, []string{"how"}),
	}
	for _, r := range roles {
		m.Role.WithLabelValues(r)
	}
	m.Takeovers.WithLabelValues("resume")
	m.Takeovers.WithLabelValues("identify")
	if reg != nil {
		reg.MustRegister(m.Role, m.Fences, m.RenewFailures, m.Takeovers)
	}
	return m
}

func (m *Metrics) setRole(role string) {
	for _, r := range roles {
		v := 0.0
		if r == role {
			v = 1
		}
		m.Role.WithLabelValues(r).Set(v)
	}
}

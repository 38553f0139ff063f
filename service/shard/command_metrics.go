package shard

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// CommandMetrics are the command path's metrics.
type CommandMetrics struct {
	Commands *prometheus.CounterVec // shard_id, op, result
	Replies  *prometheus.CounterVec // shard_id, kind

	budgetDesc *prometheus.Desc
	mu         sync.Mutex
	shards     map[*Shard]struct{} // running shards, for the budget gauge
}

// NewCommandMetrics creates the command metrics and registers them with reg.
func NewCommandMetrics(reg prometheus.Registerer) *CommandMetrics {
	m := &CommandMetrics{
		Commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_commands_total",
			Help: "Gateway commands workers asked a shard to send, by shard, opcode (3, 4, 8) and result (ok, invalid, not_ready, no_budget, failed).",
		}, []string{"shard_id", "op", "result"}),
		Replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_command_replies_total",
			Help: "Discord's answers to request guild members (op 8), by shard and kind: chunk (sent to the asker), rate_limited (sent to the asker as an error), dropped (the asker was gone).",
		}, []string{"shard_id", "kind"}),
		budgetDesc: prometheus.NewDesc("gateway_send_budget_free",
			"Commands the shard's connection may still send in Discord's 120 per 60 s window, the heartbeat reserve aside; absent while it has no connection.",
			[]string{"shard_id"}, nil),
		shards: map[*Shard]struct{}{},
	}
	reg.MustRegister(m.Commands, m.Replies, budgetCollector{m})
	return m
}

func (m *CommandMetrics) track(s *Shard) {
	if m == nil {
		return
	}
	// The series a dashboard reads exist from the start, at zero.
	for _, op := range []int{OpPresenceUpdate, OpVoiceStateUpdate, OpRequestGuildMembers} {
		m.Commands.WithLabelValues(s.label, opLabel(op), ResultOK)
	}
	for _, kind := range []string{"chunk", "rate_limited", "dropped"} {
		m.Replies.WithLabelValues(s.label, kind)
	}
	m.mu.Lock()
	m.shards[s] = struct{}{}
	m.mu.Unlock()
}

func (m *CommandMetrics) untrack(s *Shard) {
	if m == nil {
		return
	}
	m.mu.Lock()
	delete(m.shards, s)
	m.mu.Unlock()
}

// budgetCollector reads the budget of each running shard at scrape time:
// free slots come back as the window slides, with nothing sent.
type budgetCollector struct{ m *CommandMetrics }

func (c budgetCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.m.budgetDesc }

func (c budgetCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	shards := make([]*Shard, 0, len(c.m.shards))
	for s := range c.m.shards {
		shards = append(shards, s)
	}
	c.m.mu.Unlock()
	for _, s := range shards {
		if free := s.budgetFree(); free >= 0 {
			ch <- prometheus.MustNewConstMetric(c.m.budgetDesc, prometheus.GaugeValue, float64(free), strconv.Itoa(s.ID()))
		}
	}
}

package main

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardpool/gateway/service"
)

// reshardMetrics are the fleet's generations as this instance last read
// them from Consul: every instance exports the same figures, so a
// dashboard takes the max over instances.
type reshardMetrics struct {
	inForce     *prometheus.Desc
	unclaimed   *prometheus.Desc
	shardsReady *prometheus.Desc
	overlap     *prometheus.Desc
	lastOverlap *prometheus.Desc
	contentIDs  *prometheus.Desc
	gens        *fleetGens

	// Events given a content-derived id, and events of a type without a
	// content key that a next generation did not publish (the generation
	// in force did).
	contentIDEvents prometheus.Counter
	unkeyedSkipped  prometheus.Counter
}

func newReshardMetrics(reg prometheus.Registerer) *reshardMetrics {
	r := &reshardMetrics{
		inForce: prometheus.NewDesc("gateway_plan_generation",
			"Generation of the fleet's shard plan in force.", nil, nil),
		unclaimed: prometheus.NewDesc("gateway_pools_unclaimed",
			"Pools of the generation that no instance holds: how many more instances it needs (the plan in force, and the next one while resharding).", []string{"generation"}, nil),
		shardsReady: prometheus.NewDesc("gateway_generation_shards_ready",
			"Shards of the generation READY, as their owners report them in Consul.", []string{"generation"}, nil),
		overlap: prometheus.NewDesc("gateway_reshard_overlap_seconds",
			"How long the current resharding's two generations have been running side by side (0 when none is).", nil, nil),
		lastOverlap: prometheus.NewDesc("gateway_reshard_last_overlap_seconds",
			"Duration of the last resharding's overlap, from the next generation's creation to its cut-over or abort as this instance saw it.", nil, nil),
		contentIDs: prometheus.NewDesc("gateway_reshard_content_ids",
			"1 while this instance publishes events with content-derived event ids (an overlap and its margin), else 0.", nil, nil),
		contentIDEvents: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_reshard_content_id_events_total",
			Help: "Events published with a content-derived event id during a resharding's overlap; across the fleet, minus the events stored with one, it is the copies JetStream dropped as duplicates.",
		}),
		unkeyedSkipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_reshard_unkeyed_skipped_total",
			Help: "Events of a type without a content key that a next generation received and left to the generation in force.",
		}),
	}
	if reg != nil {
		reg.MustRegister(r, r.contentIDEvents, r.unkeyedSkipped)
	}
	return r
}

// watch makes the metrics read g (set once the generations exist).
func (r *reshardMetrics) watch(g *fleetGens) { r.gens = g }

// Describe implements prometheus.Collector.
func (r *reshardMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{r.inForce, r.unclaimed, r.shardsReady, r.overlap, r.lastOverlap, r.contentIDs} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (r *reshardMetrics) Collect(ch chan<- prometheus.Metric) {
	g := r.gens
	if g == nil {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, st := range g.generations() {
		if st.State == service.GenerationInForce {
			gauge(r.inForce, float64(st.Generation))
		}
		gen := strconv.Itoa(st.Generation)
		gauge(r.unclaimed, float64(st.Pools-st.PoolsClaimed), gen)
		gauge(r.shardsReady, float64(st.ShardsReady), gen)
	}
	now := time.Now()
	current, last := g.overlap.seconds(now)
	gauge(r.overlap, current)
	gauge(r.lastOverlap, last)
	on := 0.0
	if g.overlap.contentIDs(now) {
		on = 1
	}
	gauge(r.contentIDs, on)
}

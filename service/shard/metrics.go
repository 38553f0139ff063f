package shard

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the per-shard gateway metrics. Counters and gauges are keyed by
// shard_id; event_type label values come from a bounded set (see typeLabel).
type Metrics struct {
	EventsReceived   *prometheus.CounterVec // shard_id, event_type
	FramesMalformed  *prometheus.CounterVec // shard_id, reason
	Reconnects       *prometheus.CounterVec // shard_id, reason
	Identifies       *prometheus.CounterVec // shard_id
	Guilds           *prometheus.GaugeVec   // shard_id
	HeartbeatLatency *prometheus.GaugeVec   // shard_id
	Ready            *prometheus.GaugeVec   // shard_id
	WireBytes        *prometheus.CounterVec // shard_id
	// SessionStarts is session_start_limit.remaining as the session start
	// budget counts it (budget.go); SessionStartReserve is the count at
	// which IDENTIFYs stop.
	SessionStarts       prometheus.Gauge
	SessionStartReserve prometheus.Gauge
}

// NewMetrics creates the shard metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		EventsReceived: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_events_received_total",
			Help: "Discord dispatches received, by shard and dispatch type (published or not).",
		}, []string{"shard_id", "event_type"}),
		FramesMalformed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_frames_malformed_total",
			Help: "Gateway frames that could not be decoded (bad JSON, unknown opcode, bad payload), by shard and reason.",
		}, []string{"shard_id", "reason"}),
		Reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_shard_reconnects_total",
			Help: "Gateway reconnections, by shard and reason.",
		}, []string{"shard_id", "reason"}),
		Identifies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_identifies_total",
			Help: "IDENTIFY commands sent (each uses one session start), by shard.",
		}, []string{"shard_id"}),
		Guilds: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gateway_guilds_total",
			Help: "Guilds held by the shard (including guilds in an outage).",
		}, []string{"shard_id"}),
		HeartbeatLatency: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gateway_heartbeat_latency_seconds",
			Help: "Time between the shard's last heartbeat and Discord's ACK.",
		}, []string{"shard_id"}),
		Ready: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gateway_shard_ready",
			Help: "1 when the shard's session is READY (or RESUMED), else 0.",
		}, []string{"shard_id"}),
		WireBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_ws_received_bytes_total",
			Help: "Bytes of websocket messages received from Discord, as on the wire (compressed when transport compression is on).",
		}, []string{"shard_id"}),
		SessionStarts: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_session_start_remaining",
			Help: "Session starts (IDENTIFYs) Discord still allows the bot in its 24 h budget: session_start_limit.remaining of GET /gateway/bot, less each start reserved for an IDENTIFY (fleet-wide with Consul), read again when low, after the reset and periodically.",
		}),
		SessionStartReserve: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_session_start_reserve",
			Help: "Session starts kept in reserve (SESSION_START_RESERVE): no IDENTIFY is sent while gateway_session_start_remaining is at or below it; shards wait for Discord's reset in state session_limit.",
		}),
	}
	reg.MustRegister(m.EventsReceived, m.FramesMalformed, m.Reconnects, m.Identifies, m.Guilds, m.HeartbeatLatency, m.Ready, m.WireBytes, m.SessionStarts, m.SessionStartReserve)
	return m
}

// typeLabel bounds the event_type label: Discord's dispatch names are upper
// snake case; anything else is grouped so a hostile or broken peer cannot
// blow up the series count.
func typeLabel(t string) string {
	if len(t) == 0 || len(t) > 48 {
		return "INVALID"
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if (c < 'A' || c > 'Z') && c != '_' && (c < '0' || c > '9') {
			return "INVALID"
		}
	}
	return t
}

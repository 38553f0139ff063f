package deploy_test

import (
	"encoding/json"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

type alertRule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func loadAlerts(t *testing.T) map[string]alertRule {
	t.Helper()
	var f struct {
		Groups []struct {
			Rules []alertRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(readFile(t, alertsPath), &f); err != nil {
		t.Fatal(err)
	}
	out := map[string]alertRule{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			out[r.Alert] = r
		}
	}
	return out
}

// The checks of `promtool check rules`, in process: rulefmt is the parser
// promtool runs (YAML shape, PromQL of every expr, for, labels, annotation
// templates), and promtool's duplicate-rule lint is repeated here.
func TestPrometheusAlertRulesPassPromtoolChecks(t *testing.T) {
	groups, errs := rulefmt.ParseFile(alertsPath, false)
	for _, err := range errs {
		t.Error(err) // names the file, the group and the rule
	}
	if len(errs) > 0 {
		return
	}
	seen := map[string]bool{}
	n := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			n++
			key := r.Alert + r.Record + "|" + labelsKey(g.Labels, r.Labels)
			if seen[key] {
				t.Errorf("duplicate rule %s with labels %v (promtool's duplicate-rules lint)", r.Alert+r.Record, r.Labels)
			}
			seen[key] = true
		}
	}
	if n == 0 {
		t.Fatalf("%s has no rules", alertsPath)
	}
}

func labelsKey(maps ...map[string]string) string {
	merged := map[string]string{}
	for _, m := range maps {
		for k, v := range m {
			merged[k] = v
		}
	}
	var parts []string
	for k, v := range merged {
		parts = append(parts, k+"="+v)
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// metricsRead returns the metric names an expression selects, as PromQL's
// parser sees them (not words that merely appear in it).
func metricsRead(t *testing.T, expr string) []string {
	t.Helper()
	e, err := parser.ParseExpr(expr)
	if err != nil {
		t.Fatalf("%q: %v", expr, err)
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok && !slices.Contains(names, vs.Name) {
			names = append(names, vs.Name)
		}
		return nil
	})
	return names
}

func TestPrometheusAlertRulesCoverTheGatewaysFailures(t *testing.T) {
	rules := loadAlerts(t)
	// Each failure the gateway can have, and the metric its alert must
	// read.
	for alert, metric := range map[string]string{
		"GatewayShardNotReady":             "gateway_shard_ready",
		"GatewayPoolNotReady":              "gateway_shards_ready",
		"GatewayCircuitBreakerOpen":        "gateway_circuit_breaker_state",
		"GatewayRouteFailures":             "gateway_route_failures_total",
		"GatewayEventsDropped":             "gateway_events_dropped_total",
		"GatewayPublishBufferFilling":      "gateway_publish_buffer_bytes",
		"GatewayBackpressure":              "gateway_backpressure_seconds_total",
		"GatewayIdentifyBudgetLow":         "gateway_session_start_remaining",
		"GatewayIdentifyBudgetExhausted":   "gateway_session_start_remaining",
		"GatewayIdentifyNearReserve":       "gateway_session_start_reserve",
		"GatewayIdentifyPaused":            "gateway_session_start_reserve",
		"GatewayHeartbeatLatencyHigh":      "gateway_heartbeat_latency_seconds",
		"GatewaySessionCheckpointsFailing": "gateway_session_checkpoint_writes_total",
	} {
		r, ok := rules[alert]
		if !ok {
			t.Errorf("no alert %s", alert)
			continue
		}
		if !slices.Contains(metricsRead(t, r.Expr), metric) {
			t.Errorf("%s does not read %s: %s", alert, metric, r.Expr)
		}
		if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
			t.Errorf("%s needs a severity label and a summary", alert)
		}
	}
}

// The circuit breaker alert fires on "not closed for N minutes", not on a
// single scrape: it half-opens every few seconds while NATS is down.
func TestPrometheusBreakerAlertWaitsMinutes(t *testing.T) {
	r := loadAlerts(t)["GatewayCircuitBreakerOpen"]
	m := regexp.MustCompile(`_over_time\(gateway_circuit_breaker_state\[(\d+)m\]\)`).FindAllStringSubmatch(r.Expr, -1)
	if len(m) == 0 && r.For == "" {
		t.Fatalf("GatewayCircuitBreakerOpen fires at once: %s", r.Expr)
	}
	for _, g := range m {
		if n, _ := strconv.Atoi(g[1]); n < 2 {
			t.Errorf("breaker window %sm; want minutes", g[1])
		}
	}
}

func TestPrometheusScrapesTheConsulRegisteredInstances(t *testing.T) {
	var cfg struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName         string `yaml:"job_name"`
			MetricsPath     string `yaml:"metrics_path"`
			ConsulSDConfigs []struct {
				Server   string   `yaml:"server"`
				Services []string `yaml:"services"`
			} `yaml:"consul_sd_configs"`
			RelabelConfigs []struct {
				SourceLabels []string `yaml:"source_labels"`
				TargetLabel  string   `yaml:"target_label"`
			} `yaml:"relabel_configs"`
		} `yaml:"scrape_configs"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(readFile(t, scrapePath))))
	dec.KnownFields(false)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(cfg.RuleFiles, strings.TrimPrefix(alertsPath, "prometheus/")) {
		t.Errorf("rule_files %v does not load %s", cfg.RuleFiles, alertsPath)
	}
	service := loadJob(t).env(t)["SERVICE_NAME"]
	found := false
	for _, sc := range cfg.ScrapeConfigs {
		for _, sd := range sc.ConsulSDConfigs {
			if !slices.Contains(sd.Services, service) {
				continue
			}
			found = true
			if sc.MetricsPath != "" && sc.MetricsPath != "/metrics" {
				t.Errorf("metrics_path %q; the service serves /metrics", sc.MetricsPath)
			}
			pool := false
			for _, rc := range sc.RelabelConfigs {
				if slices.Equal(rc.SourceLabels, []string{"__meta_consul_service_metadata_pool_id"}) && rc.TargetLabel == "pool_id" {
					pool = true
				}
			}
			if !pool {
				t.Errorf("job %s does not relabel the pool_id service meta to pool_id", sc.JobName)
			}
		}
	}
	if !found {
		t.Errorf("no scrape config discovers Consul service %q", service)
	}
}

// panelTargets returns each panel's title and its PromQL, rows included.
func panelTargets(t *testing.T) (dashboard map[string]any, exprs map[string][]string) {
	t.Helper()
	var d struct {
		UID    string `json:"uid"`
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	b := readFile(t, dashboardPath)
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	if err := json.Unmarshal(b, &dashboard); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.Title == "" {
		t.Error("the dashboard needs a uid and a title")
	}
	exprs = map[string][]string{}
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs[p.Title] = append(exprs[p.Title], tg.Expr)
		}
	}
	return dashboard, exprs
}

func TestGrafanaDashboardShowsTheBreakerBufferRoutingAndShards(t *testing.T) {
	_, exprs := panelTargets(t)
	var all strings.Builder
	for _, es := range exprs {
		for _, e := range es {
			all.WriteString(e + "\n")
		}
	}
	for what, needle := range map[string]string{
		"circuit breaker state":      "gateway_circuit_breaker_state",
		"circuit breaker transition": "gateway_circuit_breaker_transitions_total",
		"buffered events":            "gateway_publish_buffer_events",
		"buffered bytes":             "gateway_publish_buffer_bytes",
		"backpressure":               "gateway_backpressure_seconds_total",
		"route latency quantiles":    "histogram_quantile(0.99, sum by (le) (rate(gateway_event_route_duration_seconds_bucket",
		"events per type":            "sum by (event_type) (rate(gateway_events_received_total",
		"events routed":              "gateway_events_routed_total",
		"route failures":             "gateway_route_failures_total",
		"shards ready per pool":      "sum by (pool_id) (gateway_shards_ready",
		"guilds per shard":           "gateway_guilds_total",
		"heartbeat latency":          "gateway_heartbeat_latency_seconds",
	} {
		if !strings.Contains(all.String(), needle) {
			t.Errorf("no panel shows the %s (%s)", what, needle)
		}
	}
}

func TestGrafanaDashboardIsValidJSONWithUniquePanelIDs(t *testing.T) {
	dashboard, _ := panelTargets(t)
	seen := map[float64]bool{}
	for _, p := range dashboard["panels"].([]any) {
		id, _ := p.(map[string]any)["id"].(float64)
		if seen[id] {
			t.Errorf("panel id %v used twice", id)
		}
		seen[id] = true
	}
}

package main

// Checks of deploy/ and the Dockerfile that need this package: the one list
// of environment variables (vars) and a running instance. The rest of
// deploy/ is checked by the tests in deploy/.

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/zclconf/go-cty/cty"

	"github.com/shardpool/gateway/internal/discordsim"
)

const (
	deployJob       = "../../deploy/nomad/discord-gateway.nomad.hcl"
	deployAlerts    = "../../deploy/prometheus/gateway-alerts.yml"
	deployDashboard = "../../deploy/grafana/discord-gateway.json"
	dockerfile      = "../../Dockerfile"
)

// consulAPIEnv are the variables the Consul api client reads itself
// (api.DefaultConfig, which the discovery package starts from).
var consulAPIEnv = []string{
	api.HTTPAddrEnvName, api.HTTPTokenEnvName, api.HTTPTokenFileEnvName, api.HTTPAuthEnvName,
	api.HTTPSSLEnvName, api.HTTPSSLVerifyEnvName, api.HTTPCAFile, api.HTTPCAPath,
	api.HTTPClientCert, api.HTTPClientKey, api.HTTPTLSServerName,
	api.HTTPNamespaceEnvName, api.HTTPPartitionEnvName,
}

// goRuntimeEnv are read by the Go runtime of the binary.
var goRuntimeEnv = []string{"GOMEMLIMIT", "GOMAXPROCS", "GOGC"}

// nomadRuntimeSample stands in for what Nomad interpolates when it places an
// allocation (${NOMAD_PORT_http} and the like).
var nomadRuntimeSample = map[string]cty.Value{
	"NOMAD_PORT_http": cty.StringVal("24517"),
	"NOMAD_IP_http":   cty.StringVal("10.0.4.17"),
}

// nomadJobEnv is the environment the Nomad job gives the task: its env block,
// evaluated with the job's variable defaults and sample Nomad runtime
// values, and the names its env templates render (values: placeholders).
type nomadJobEnv struct {
	env      map[string]string
	rendered map[string]bool
	task     *hclsyntax.Body
	ctx      *hcl.EvalContext
}

func loadNomadJobEnv(t *testing.T) nomadJobEnv {
	t.Helper()
	f, diags := hclparse.NewParser().ParseHCLFile(deployJob)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	body := f.Body.(*hclsyntax.Body)
	defaults := map[string]cty.Value{}
	var task *hclsyntax.Body
	for _, b := range body.Blocks {
		if b.Type == "variable" {
			defaults[b.Labels[0]] = cty.UnknownVal(cty.DynamicPseudoType)
			if d, ok := b.Body.Attributes["default"]; ok {
				defaults[b.Labels[0]], _ = d.Expr.Value(nil)
			}
		}
	}
	var walk func(*hclsyntax.Body)
	walk = func(b *hclsyntax.Body) {
		for _, c := range b.Blocks {
			if c.Type == "task" {
				if task != nil {
					t.Fatal("the job has more than one task")
				}
				task = c.Body
			}
			walk(c.Body)
		}
	}
	walk(body)
	if task == nil {
		t.Fatal("the job has no task")
	}
	vars := map[string]cty.Value{"var": cty.ObjectVal(defaults)}
	for k, v := range nomadRuntimeSample {
		vars[k] = v
	}
	j := nomadJobEnv{env: map[string]string{}, rendered: map[string]bool{}, task: task, ctx: &hcl.EvalContext{Variables: vars}}
	for _, b := range task.Blocks {
		switch b.Type {
		case "env":
			for name := range b.Body.Attributes {
				j.env[name] = j.str(t, b.Body, name)
			}
		case "template":
			if a, ok := b.Body.Attributes["env"]; ok {
				if v, _ := a.Expr.Value(nil); v.True() {
					sc := bufio.NewScanner(strings.NewReader(j.str(t, b.Body, "data")))
					line := regexp.MustCompile(`^\s*([A-Za-z_][A-Za-z0-9_]*)=`)
					for sc.Scan() {
						if m := line.FindStringSubmatch(sc.Text()); m != nil {
							j.rendered[m[1]] = true
						}
					}
				}
			}
		}
	}
	return j
}

func (j nomadJobEnv) str(t *testing.T, body *hclsyntax.Body, name string) string {
	t.Helper()
	a, ok := body.Attributes[name]
	if !ok {
		t.Fatalf("%s: no %s", body.SrcRange, name)
	}
	v, diags := a.Expr.Value(j.ctx)
	if diags.HasErrors() {
		t.Fatalf("%s: %s", a.SrcRange, diags.Error())
	}
	if v.Type() == cty.Number {
		return v.AsBigFloat().Text('f', -1)
	}
	if v.Type() == cty.Bool {
		return strconv.FormatBool(v.True())
	}
	return v.AsString()
}

func (j nomadJobEnv) names() []string {
	var out []string
	for k := range j.env {
		out = append(out, k)
	}
	for k := range j.rendered {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// config is the Config the service builds from the job's environment.
func (j nomadJobEnv) config(t *testing.T) Config {
	t.Helper()
	c, err := ParseConfig(nil, func(k string) string {
		if j.rendered[k] {
			return "rendered-" + strings.ToLower(k)
		}
		return j.env[k]
	}, io.Discard)
	if err != nil {
		t.Fatalf("the service refuses the Nomad job's environment: %v", err)
	}
	return c
}

func TestDeployNomadJobSetsOnlyVariablesTheServiceReads(t *testing.T) {
	j := loadNomadJobEnv(t)
	read := map[string]string{}
	for _, v := range vars {
		read[v.env] = "config.go"
	}
	for _, k := range consulAPIEnv {
		read[k] = "the Consul api client"
	}
	for _, k := range goRuntimeEnv {
		read[k] = "the Go runtime"
	}
	for _, k := range j.names() {
		if _, ok := read[k]; !ok {
			t.Errorf("the Nomad job sets %s, which nothing in the service reads", k)
		}
	}
	for _, k := range []string{"DISCORD_TOKEN", "NATS_URL", "TOTAL_SHARDS", "CONSUL_HTTP_ADDR"} {
		if _, set := j.env[k]; !set && !j.rendered[k] {
			t.Errorf("the Nomad job does not set %s", k)
		}
	}
}

func TestDeployNomadJobEnvironmentIsAValidConfiguration(t *testing.T) {
	j := loadNomadJobEnv(t)
	c := j.config(t)
	if c.StreamStorage != "file" || c.StreamReplicas < 3 {
		t.Errorf("the job runs memory or unreplicated streams (%s, %d): a NATS restart would lose events", c.StreamStorage, c.StreamReplicas)
	}
	if c.TotalShards == 0 {
		t.Error("TOTAL_SHARDS is auto: pools started at different times could disagree on the shard count")
	}
	kill, err := time.ParseDuration(j.str(t, j.task, "kill_timeout"))
	if err != nil {
		t.Fatal(err)
	}
	// Nomad SIGKILLs at kill_timeout; the drain (shards closed, buffer
	// flushed, hand-off records written) must end first.
	if kill < c.DrainTimeout+5*time.Second {
		t.Errorf("kill_timeout %v leaves no margin over DRAIN_TIMEOUT %v", kill, c.DrainTimeout)
	}
}

// The buffer alert fires at half of the buffer the job configures.
func TestDeployBufferAlertThresholdsAreHalfTheConfiguredBuffer(t *testing.T) {
	c := loadNomadJobEnv(t).config(t)
	b, err := os.ReadFile(deployAlerts)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"gateway_publish_buffer_bytes > 0.5 * " + strconv.FormatInt(c.BufferMaxBytes, 10),
		"gateway_publish_buffer_events > 0.5 * " + strconv.Itoa(c.BufferMaxEvents),
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("%s has no %q: the threshold does not follow the buffer the job configures", deployAlerts, want)
		}
	}
}

func TestDeployDockerfileExposesTheDefaultHTTPPort(t *testing.T) {
	b, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	def := ""
	for _, v := range vars {
		if v.env == "HTTP_PORT" {
			def = v.def
		}
	}
	m := regexp.MustCompile(`(?m)^EXPOSE\s+(\S+)`).FindAllStringSubmatch(string(b), -1)
	if len(m) != 1 || strings.TrimSuffix(m[0][1], "/tcp") != def {
		t.Errorf("Dockerfile EXPOSE %v; want exactly HTTP_PORT's default %s", m, def)
	}
}

// buildProductionBinary builds the production binary (as `make build` does).
func buildProductionBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "gateway")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// runHealthcheckSubcommand runs `gateway healthcheck` as the image's HEALTHCHECK does
// and returns its exit code.
func runHealthcheckSubcommand(t *testing.T, bin string, port int) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, "healthcheck")
	cmd.Env = append(os.Environ(), "HTTP_PORT="+strconv.Itoa(port))
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out)
	}
	t.Fatal(err)
	return -1, ""
}

func TestHealthcheckSubcommandExitsZeroOnlyWhenHealthAnswers200(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildProductionBinary(t)

	e := startEnv(t, envOptions{noNATS: true, sim: discordsim.Config{Shards: 1}})
	_, portStr, _ := strings.Cut(e.m.HTTPAddr(), "127.0.0.1:")
	port, _ := strconv.Atoi(portStr)
	if code, out := runHealthcheckSubcommand(t, bin, port); code != 0 {
		t.Errorf("against a live gateway: exit %d (%s); want 0", code, out)
	}

	if code, out := runHealthcheckSubcommand(t, bin, freePort(t)); code != 1 {
		t.Errorf("with nothing listening: exit %d (%s); want 1", code, out)
	}

	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer failing.Close()
	_, p, _ := strings.Cut(failing.Listener.Addr().String(), "127.0.0.1:")
	fp, _ := strconv.Atoi(p)
	if code, out := runHealthcheckSubcommand(t, bin, fp); code != 1 {
		t.Errorf("against a /health answering 503: exit %d (%s); want 1", code, out)
	}
}

// knownPromtoolProblems are lint problems of the live /metrics that are
// known and waiting on a change in the service; each must still occur (the
// test fails once it is fixed, so the entry goes away with the fix).
var knownPromtoolProblems = map[string]string{
	`gateway_guilds_total non-counter metrics should not have "_total" suffix`: "a gauge named like a counter; rename to gateway_guilds (and in deploy/grafana)",
}

// pendingMetrics are named by deploy/ and not exported yet. When exported,
// each must have the type given here. (None today.)
var pendingMetrics = map[string]string{}

// consulOnlyMetrics are exported by a fleet in Consul only (the shard plan's
// generations, reshard.go), which the live scrape, a pool without Consul,
// does not run; reshard_test.go lints them.
var consulOnlyMetrics = map[string]bool{
	"gateway_plan_generation": true, "gateway_pools_unclaimed": true, "gateway_generation_shards_ready": true,
	"gateway_reshard_overlap_seconds": true, "gateway_reshard_last_overlap_seconds": true,
	"gateway_reshard_content_id_events_total": true, "gateway_reshard_unkeyed_skipped_total": true,
}

// deployLiveScrape runs a pool through what makes every series appear — a
// dropped socket, a NATS outage that opens the breaker and fills a small
// buffer — and returns its /metrics.
func deployLiveScrape(t *testing.T) []byte {
	t.Helper()
	e := startEnv(t, envOptions{
		storage: "file",
		sim:     discordsim.Config{Shards: 2, EventRate: 200, GuildsPerShard: 3},
		config:  func(c *Config) { c.BufferMaxEvents = 20 },
	})
	e.waitShardsReady(2)
	if err := e.sim.Drop(0); err != nil {
		t.Fatal(err)
	}
	e.eventually("a reconnect", 30*time.Second, func() bool {
		return e.metric("gateway_shard_reconnects_total", map[string]string{"shard_id": "0"}) >= 1
	})
	e.waitShardsReady(2)
	e.outage(2 * time.Second)
	e.eventually("breaker closed again", 30*time.Second, func() bool {
		return e.metric("gateway_circuit_breaker_transitions_total", map[string]string{"from": "half-open", "to": "closed"}) >= 1
	})
	code, b := e.get("/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	return b
}

// promqlMetricNames returns every metric name PromQL in a file refers to. All of
// ours start with gateway_; Prometheus's own functions and labels do not.
func promqlMetricNames(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range regexp.MustCompile(`\bgateway_[a-z0-9_]+`).FindAllString(string(b), -1) {
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s names no gateway_ metric", path)
	}
	return out
}

func TestDeployLiveMetrics(t *testing.T) {
	scrape := deployLiveScrape(t)

	// promtool check metrics is promlint over the scrape; run in process.
	t.Run("pass promtool check metrics", func(t *testing.T) {
		problems, err := promlint.New(bytes.NewReader(scrape)).Lint()
		if err != nil {
			t.Fatalf("promlint: %v", err)
		}
		seen := map[string]bool{}
		for _, p := range problems {
			line := p.Metric + " " + p.Text // as promtool prints it
			if why, ok := knownPromtoolProblems[line]; ok {
				seen[line] = true
				t.Logf("known: %s (%s)", line, why)
				continue
			}
			t.Errorf("promtool check metrics: %s", line)
		}
		for p := range knownPromtoolProblems {
			if !seen[p] {
				t.Errorf("fixed: %q no longer occurs; remove it from knownPromtoolProblems", p)
			}
		}
	})

	t.Run("export every metric the alerts and dashboard use", func(t *testing.T) {
		parser := expfmt.NewTextParser(model.UTF8Validation)
		families, err := parser.TextToMetricFamilies(strings.NewReader(string(scrape)))
		if err != nil {
			t.Fatal(err)
		}
		exported := map[string]string{}
		for name, f := range families {
			typ := strings.ToLower(f.GetType().String())
			exported[name] = typ
			if typ == "histogram" {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					exported[name+s] = typ
				}
			}
		}
		for _, path := range []string{deployAlerts, deployDashboard} {
			for _, name := range promqlMetricNames(t, path) {
				typ, ok := exported[name]
				want, pending := pendingMetrics[name]
				switch {
				case ok && pending && typ != want:
					t.Errorf("%s: %s is exported as a %s; deploy/ expects a %s", path, name, typ, want)
				case !ok && pending:
					t.Logf("%s: %s is not exported yet (pending in the service)", path, name)
				case !ok && consulOnlyMetrics[name]:
				case !ok:
					t.Errorf("%s: %s is not exported by the service", path, name)
				}
			}
		}
	})
}

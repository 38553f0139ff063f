package deploy_test

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

func duration(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return d
}

// refersTo reports whether an attribute's expression is exactly var.<name>.
func refersTo(body *hclsyntax.Body, attr, variable string) bool {
	a, ok := body.Attributes[attr]
	if !ok {
		return false
	}
	tr, diags := hcl.AbsTraversalForExpr(a.Expr)
	return !diags.HasErrors() && len(tr) == 2 && tr.RootName() == "var" &&
		tr[1].(hcl.TraverseAttr).Name == variable
}

func TestNomadJobRunsCountInstancesOfTheImageWithDocker(t *testing.T) {
	j := loadJob(t)
	if _, ok := j.vars["count"]; !ok {
		t.Fatal("no count variable")
	}
	if !refersTo(j.group.Body, "count", "count") {
		t.Error("the group's count is not var.count")
	}
	if d := j.str(t, j.task.Body, "driver"); d != "docker" {
		t.Errorf("driver %q; want docker", d)
	}
	if !refersTo(oneBlock(t, j.task.Body, "config").Body, "image", "image") {
		t.Error("the task's image is not var.image")
	}
}

func TestNomadJobRollsOneInstanceAtATimeAndReverts(t *testing.T) {
	j := loadJob(t)
	var update *hclsyntax.Block
	for _, b := range []*hclsyntax.Block{j.job, j.group} {
		if bs := blocksOf(b.Body, "update"); len(bs) == 1 {
			update = bs[0]
		}
	}
	if update == nil {
		t.Fatal("no update block")
	}
	u := update.Body
	if v := j.str(t, u, "max_parallel"); v != "1" {
		t.Errorf("max_parallel %s; want 1 (one pool drains at a time)", v)
	}
	if v := j.str(t, u, "health_check"); v != "checks" {
		t.Errorf("health_check %q; want checks", v)
	}
	if v := j.str(t, u, "auto_revert"); v != "true" {
		t.Errorf("auto_revert %s; want true", v)
	}
	minHealthy, deadline := duration(t, j.str(t, u, "min_healthy_time")), duration(t, j.str(t, u, "healthy_deadline"))
	if minHealthy < 10*time.Second || minHealthy >= deadline {
		t.Errorf("min_healthy_time %v, healthy_deadline %v: want 10s <= min_healthy_time < healthy_deadline", minHealthy, deadline)
	}
	if _, ok := u.Attributes["progress_deadline"]; ok && duration(t, j.str(t, u, "progress_deadline")) <= deadline {
		t.Error("progress_deadline must exceed healthy_deadline")
	}
}

func TestNomadJobStopsWithSIGTERM(t *testing.T) {
	j := loadJob(t)
	if s := j.str(t, j.task.Body, "kill_signal"); s != "SIGTERM" {
		t.Errorf("kill_signal %q; want SIGTERM (it drains)", s)
	}
	// kill_timeout against DRAIN_TIMEOUT is checked in cmd/gateway, which
	// knows the default; Nomad clients cap it at max_kill_timeout (30s by
	// default) without a word.
	if d := duration(t, j.str(t, j.task.Body, "kill_timeout")); d > 30*time.Second {
		t.Errorf("kill_timeout %v is over Nomad's default max_kill_timeout (30s), which would cap it", d)
	}
}

func TestNomadJobHasRestartAndReschedulePolicies(t *testing.T) {
	j := loadJob(t)
	restart := oneBlock(t, j.group.Body, "restart").Body
	for _, a := range []string{"attempts", "interval", "delay", "mode"} {
		if _, ok := restart.Attributes[a]; !ok {
			t.Errorf("restart has no %s", a)
		}
	}
	// Every restart without a hand-off record IDENTIFYs the pool's shards,
	// from a budget of 1000 a day: no tight loop.
	if d := duration(t, j.str(t, restart, "delay")); d < 15*time.Second {
		t.Errorf("restart delay %v; a crash loop would burn the identify budget", d)
	}
	resched := oneBlock(t, j.group.Body, "reschedule").Body
	for _, a := range []string{"delay", "delay_function", "max_delay"} {
		if _, ok := resched.Attributes[a]; !ok {
			t.Errorf("reschedule has no %s", a)
		}
	}
	if f := j.str(t, resched, "delay_function"); f == "constant" {
		t.Error("reschedule delay_function constant; want a growing delay")
	}
}

func TestNomadJobHasNoServiceBlockBecauseTheServiceRegistersItself(t *testing.T) {
	j := loadJob(t)
	walkBlocks(j.file, func(b *hclsyntax.Block) {
		if b.Type == "service" {
			t.Errorf("%s: a Nomad service block; the gateway registers itself in Consul with its pool id (a second registration would have none)", b.TypeRange)
		}
	})
	env := j.env(t)
	if env["CONSUL_HTTP_ADDR"] == "" {
		t.Error("CONSUL_HTTP_ADDR is not set: the instances would not register in Consul nor claim pool ids")
	}
	for _, k := range []string{"POOL_ID"} {
		if _, ok := env[k]; ok {
			t.Errorf("%s is set: Consul assigns pool ids", k)
		}
		if _, ok := j.templateEnv(t)[k]; ok {
			t.Errorf("%s is set by a template: Consul assigns pool ids", k)
		}
	}
}

func TestNomadJobTakesSecretsFromNomadVariablesOrVault(t *testing.T) {
	j := loadJob(t)
	env, tmpl := j.env(t), j.templateEnv(t)
	secret := regexp.MustCompile(`^\{\{\s*(\.\w+|\.Data\.data\.\w+)\s*\}\}$`)
	for _, k := range []string{"DISCORD_TOKEN", "DRAIN_TOKEN", "CONSUL_HTTP_TOKEN"} {
		if _, ok := env[k]; ok {
			t.Errorf("%s is inline in the env block", k)
		}
		v, ok := tmpl[k]
		if !ok {
			t.Errorf("%s is not rendered by an env template", k)
			continue
		}
		if !secret.MatchString(strings.TrimSpace(v)) {
			t.Errorf("%s=%s: want a field of nomadVar or a Vault secret", k, v)
		}
	}
	var data string
	for _, tb := range blocksOf(j.task.Body, "template") {
		data += j.str(t, tb.Body, "data")
		if dest := j.str(t, tb.Body, "destination"); !strings.HasPrefix(dest, "secrets/") {
			t.Errorf("template destination %q; secrets belong in the task's secrets/ dir", dest)
		}
	}
	if !strings.Contains(data, "nomadVar ") && !strings.Contains(data, "secret ") {
		t.Error("the env template reads neither nomadVar nor a Vault secret")
	}
}

func TestNomadJobResourcesCoverAFullPublishBuffer(t *testing.T) {
	j := loadJob(t)
	res := oneBlock(t, j.task.Body, "resources").Body
	mem, ok := j.attr(t, res, "memory")
	if !ok {
		t.Fatal("no memory")
	}
	memMiB, _ := mem.AsBigFloat().Int64()
	// Measured (see the job's comment): 410 MB RSS with a full 256 MiB
	// buffer under GOMEMLIMIT=400MiB.
	if memMiB < 450 {
		t.Errorf("memory %d MiB; a pool with a full publish buffer was measured at 410 MB", memMiB)
	}
	if lim, ok := j.env(t)["GOMEMLIMIT"]; ok {
		m := regexp.MustCompile(`^(\d+)MiB$`).FindStringSubmatch(lim)
		if m == nil {
			t.Fatalf("GOMEMLIMIT %q: want <n>MiB", lim)
		}
		if n, _ := strconv.ParseInt(m[1], 10, 64); n >= memMiB {
			t.Errorf("GOMEMLIMIT %s is not below memory (%d MiB): the Go runtime would not collect harder before the limit", lim, memMiB)
		}
	}
	if _, ok := j.attr(t, res, "cpu"); !ok {
		t.Error("no cpu")
	}
}

func TestNomadJobStreamSettingsMatchTheNATSDefinitions(t *testing.T) {
	j := loadJob(t)
	env := j.env(t)
	for name, file := range streamFiles() {
		var cfg struct {
			Storage  string `json:"storage"`
			Replicas int    `json:"num_replicas"`
		}
		decodeLoose(t, file, &cfg)
		if env["STREAM_STORAGE"] != cfg.Storage {
			t.Errorf("the job sets STREAM_STORAGE=%q, %s has storage %q", env["STREAM_STORAGE"], file, cfg.Storage)
		}
		if env["STREAM_REPLICAS"] != cty.NumberIntVal(int64(cfg.Replicas)).AsBigFloat().Text('f', -1) {
			t.Errorf("the job sets STREAM_REPLICAS=%q, %s (%s) has num_replicas %d", env["STREAM_REPLICAS"], file, name, cfg.Replicas)
		}
	}
}

// Package deploy_test keeps the deployment files of deploy/ (and the
// Dockerfile) true to the code: each test reads one of them and fails when it
// no longer says what the service does. Checks that need package main's list
// of environment variables or a running instance are in
// cmd/gateway/deploy_test.go.
package deploy_test

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// The files under test, relative to deploy/ (the tests' working directory).
const (
	dockerfilePath = "../Dockerfile"
	jobPath        = "nomad/discord-gateway.nomad.hcl"
	policyPath     = "consul/discord-gateway-policy.hcl"
	alertsPath     = "prometheus/gateway-alerts.yml"
	scrapePath     = "prometheus/prometheus.yml"
	dashboardPath  = "grafana/discord-gateway.json"
)

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// parseHCL parses a native-syntax HCL file.
func parseHCL(t *testing.T, path string) *hclsyntax.Body {
	t.Helper()
	f, diags := hclparse.NewParser().ParseHCLFile(path)
	if diags.HasErrors() {
		t.Fatalf("%s: %s", path, diags.Error())
	}
	return f.Body.(*hclsyntax.Body)
}

// blocksOf returns body's blocks of one type.
func blocksOf(body *hclsyntax.Body, typ string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, b := range body.Blocks {
		if b.Type == typ {
			out = append(out, b)
		}
	}
	return out
}

// oneBlock returns body's only block of a type, failing when there is none
// or more than one.
func oneBlock(t *testing.T, body *hclsyntax.Body, typ string) *hclsyntax.Block {
	t.Helper()
	bs := blocksOf(body, typ)
	if len(bs) != 1 {
		t.Fatalf("want one %q block at %s, found %d", typ, body.SrcRange, len(bs))
	}
	return bs[0]
}

// walkBlocks calls fn for every block in body, at any depth.
func walkBlocks(body *hclsyntax.Body, fn func(*hclsyntax.Block)) {
	for _, b := range body.Blocks {
		fn(b)
		walkBlocks(b.Body, fn)
	}
}

// nomadJob is the parsed Nomad job with its input variables' defaults.
type nomadJob struct {
	file  *hclsyntax.Body
	job   *hclsyntax.Block
	group *hclsyntax.Block
	task  *hclsyntax.Block
	vars  map[string]cty.Value
	ctx   *hcl.EvalContext
}

func loadJob(t *testing.T) *nomadJob {
	t.Helper()
	j := &nomadJob{file: parseHCL(t, jobPath), vars: map[string]cty.Value{}}
	for _, v := range blocksOf(j.file, "variable") {
		if d, ok := v.Body.Attributes["default"]; ok {
			val, diags := d.Expr.Value(nil)
			if diags.HasErrors() {
				t.Fatalf("variable %s: %s", v.Labels[0], diags.Error())
			}
			j.vars[v.Labels[0]] = val
		} else {
			j.vars[v.Labels[0]] = cty.UnknownVal(cty.DynamicPseudoType)
		}
	}
	j.ctx = &hcl.EvalContext{Variables: map[string]cty.Value{"var": cty.ObjectVal(j.vars)}}
	j.job = oneBlock(t, j.file, "job")
	j.group = oneBlock(t, j.job.Body, "group")
	j.task = oneBlock(t, j.group.Body, "task")
	return j
}

// attr evaluates a body's attribute with the job's variables; ok is false
// when the attribute is missing. Nomad's runtime interpolations (node.*,
// NOMAD_*) are not evaluated here.
func (j *nomadJob) attr(t *testing.T, body *hclsyntax.Body, name string) (cty.Value, bool) {
	t.Helper()
	a, ok := body.Attributes[name]
	if !ok {
		return cty.NilVal, false
	}
	v, diags := a.Expr.Value(j.ctx)
	if diags.HasErrors() {
		t.Fatalf("%s: %s", a.SrcRange, diags.Error())
	}
	return v, true
}

// str returns a string attribute (numbers and bools converted as HCL does).
func (j *nomadJob) str(t *testing.T, body *hclsyntax.Body, name string) string {
	t.Helper()
	v, ok := j.attr(t, body, name)
	if !ok {
		t.Fatalf("%s: no %s", body.SrcRange, name)
	}
	switch v.Type() {
	case cty.String:
		return v.AsString()
	case cty.Number:
		return v.AsBigFloat().Text('f', -1)
	case cty.Bool:
		if v.True() {
			return "true"
		}
		return "false"
	}
	t.Fatalf("%s: %s is a %s", body.SrcRange, name, v.Type().FriendlyName())
	return ""
}

// env returns the task's env block as written (values evaluated where they
// need only the job's variables; Nomad interpolations kept as source text).
func (j *nomadJob) env(t *testing.T) map[string]string {
	t.Helper()
	env := map[string]string{}
	for name, a := range oneBlock(t, j.task.Body, "env").Body.Attributes {
		runtime := false
		for _, tr := range a.Expr.Variables() {
			if tr.RootName() != "var" {
				runtime = true
			}
		}
		if runtime {
			r := a.Expr.Range()
			env[name] = string(r.SliceBytes(readFile(t, jobPath)))
			continue
		}
		env[name] = j.str(t, oneBlock(t, j.task.Body, "env").Body, name)
	}
	return env
}

// templateEnv returns the names the task's env templates set, with the
// template text of each value.
func (j *nomadJob) templateEnv(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	line := regexp.MustCompile(`^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$`)
	for _, tb := range blocksOf(j.task.Body, "template") {
		if v, ok := j.attr(t, tb.Body, "env"); !ok || !v.True() {
			continue
		}
		data := j.str(t, tb.Body, "data")
		sc := bufio.NewScanner(strings.NewReader(data))
		for sc.Scan() {
			if m := line.FindStringSubmatch(sc.Text()); m != nil {
				out[m[1]] = m[2]
			}
		}
	}
	return out
}

// streamFiles are the stream definitions of deploy/nats, by stream name.
func streamFiles() map[string]string {
	return map[string]string{"EVENTS": "nats/events.json", "COMMANDS": "nats/commands.json"}
}

// decodeStrict decodes JSON, refusing fields the target does not have (a
// misspelt field would otherwise be ignored by `nats stream add` as well).
func decodeStrict(t *testing.T, path string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(string(readFile(t, path))))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func repoRoot() string { return filepath.Clean("..") }

// decodeLoose decodes the fields v has, ignoring the rest.
func decodeLoose(t *testing.T, path string, v any) {
	t.Helper()
	if err := json.Unmarshal(readFile(t, path), v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

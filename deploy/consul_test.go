package deploy_test

import (
	"strings"
	"testing"
)

// rule is one rule of a Consul ACL policy: service "x" { policy = "write" }.
type rule struct{ kind, name, policy string }

func loadPolicy(t *testing.T) []rule {
	t.Helper()
	var rules []rule
	for name, a := range parseHCL(t, policyPath).Attributes {
		t.Errorf("%s: top-level %s = ...: operator, acl, keyring and mesh rights are not the gateway's", a.SrcRange, name)
	}
	for _, b := range parseHCL(t, policyPath).Blocks {
		if len(b.Labels) != 1 {
			t.Fatalf("%s: %s block with %d labels", b.TypeRange, b.Type, len(b.Labels))
		}
		p, ok := b.Body.Attributes["policy"]
		if !ok || len(b.Body.Attributes) != 1 || len(b.Body.Blocks) != 0 {
			t.Fatalf("%s: want exactly policy = ... in %s %q", b.TypeRange, b.Type, b.Labels[0])
		}
		v, diags := p.Expr.Value(nil)
		if diags.HasErrors() {
			t.Fatal(diags.Error())
		}
		rules = append(rules, rule{b.Type, b.Labels[0], v.AsString()})
	}
	return rules
}

func TestConsulPolicyGrantsExactlyWhatTheServiceNeeds(t *testing.T) {
	j := loadJob(t)
	env := j.env(t)
	service, prefix := env["SERVICE_NAME"], env["KV_PREFIX"]
	if service == "" || prefix == "" {
		t.Fatal("the Nomad job sets no SERVICE_NAME or KV_PREFIX; the policy is written for the names it sets")
	}
	want := map[rule]bool{
		{"service", service, "write"}:         true, // register itself and its checks
		{"session_prefix", "", "write"}:       true, // its session, on whichever node it runs
		{"key_prefix", prefix + "/", "write"}: true, // pool locks, identify buckets, hand-off records
	}
	got := loadPolicy(t)
	for _, r := range got {
		if !want[r] {
			t.Errorf("unexpected rule %s %q { policy = %q }", r.kind, r.name, r.policy)
		}
		delete(want, r)
	}
	for r := range want {
		t.Errorf("missing rule %s %q { policy = %q }", r.kind, r.name, r.policy)
	}
}

// The KV layout is documented where operators look; the keys themselves are
// checked against a real agent in consul_acl_test.go.
func TestConsulKVLayoutIsDocumented(t *testing.T) {
	readme := string(readFile(t, "README.md"))
	policy := string(readFile(t, policyPath))
	for _, key := range []string{"<KV_PREFIX>/plan", "<KV_PREFIX>/pools/<generation>/<id>", "<KV_PREFIX>/identify/<bucket>", "<KV_PREFIX>/handoff/<generation>/<pool>/<shard>"} {
		if !strings.Contains(readme, key) {
			t.Errorf("deploy/README.md does not document %s", key)
		}
		if !strings.Contains(policy, key) {
			t.Errorf("%s does not list %s", policyPath, key)
		}
	}
}

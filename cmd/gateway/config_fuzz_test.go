package main

import (
	"io"
	"strings"
	"testing"
)

// FuzzParseConfig feeds arbitrary values to every variable: parsing may
// fail, but never panics, and a failure is exactly one line naming the
// fuzzed variable (the others are valid) that never echoes a secret's value.
func FuzzParseConfig(f *testing.F) {
	f.Add("TOTAL_SHARDS", "auto")
	f.Add("NATS_URL", "nats://user:pass@host:4222")
	f.Add("DRAIN_TIMEOUT", "1h2m3.5s")
	f.Add("HTTP_PORT", "-0")
	f.Add("DISCORD_TOKEN", "Bot ")
	f.Add("DISCORD_TOKEN", " ")
	f.Add("DISCORD_API_URL", "http://[::1]:80/api")
	f.Add("KV_PREFIX", "a\nb")
	f.Fuzz(func(t *testing.T, name, value string) {
		known := false
		for _, v := range vars {
			if v.env == name {
				known = true
			}
		}
		if !known {
			name = vars[len(name)%len(vars)].env
		}
		env := map[string]string{"DISCORD_TOKEN": "fuzz-token-value"}
		env[name] = value
		_, err := ParseConfig(nil, func(k string) string { return env[k] }, io.Discard)
		if err == nil {
			return
		}
		if prefix := "invalid " + name + ": "; !strings.HasPrefix(err.Error(), prefix) {
			t.Fatalf("error does not start with %q: %v", prefix, err)
		}
		if secretVars[name] && len(strings.TrimSpace(value)) > 3 && strings.Contains(err.Error(), strings.TrimSpace(value)) {
			t.Fatalf("error echoes the secret %s: %v", name, err)
		}
	})
}

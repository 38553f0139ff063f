package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig(nil, env(map[string]string{"DISCORD_TOKEN": "tok"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		DiscordToken: "tok", DiscordAPIURL: "https://discord.com/api/v10", TotalShards: 0, ShardsPerPool: 25, PoolID: 0,
		StreamStorage: "memory", StreamReplicas: 1, HTTPHost: "0.0.0.0", HTTPPort: 9090, LogLevel: "info",
		Compression: "zlib-stream", DrainTimeout: 20 * time.Second, BufferMaxEvents: 500000, BufferMaxBytes: 256 << 20,
		IdentifyWindow: 5 * time.Second, BackoffBase: time.Second, BackoffMax: time.Minute,
		ServiceName: "discord-gateway", KVPrefix: "discord-gateway", SessionTTL: 15 * time.Second, LockDelay: 15 * time.Second,
		CheckInterval: 10 * time.Second, DeregisterAfter: time.Minute, HandoffMaxAge: 3 * time.Minute,
	}
	if c != want {
		t.Fatalf("got  %+v\nwant %+v", c, want)
	}
}

func TestParseConfigFlagsOverrideEnvironment(t *testing.T) {
	c, err := ParseConfig([]string{"-total-shards", "12", "-pool-id=2"}, env(map[string]string{
		"DISCORD_TOKEN": "tok", "TOTAL_SHARDS": "6", "POOL_ID": "1", "SHARDS_PER_POOL": "4",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.TotalShards != 12 || c.PoolID != 2 || c.ShardsPerPool != 4 {
		t.Fatalf("got total=%d pool=%d per=%d", c.TotalShards, c.PoolID, c.ShardsPerPool)
	}
}

func TestParseConfigErrorsNameTheVariable(t *testing.T) {
	cases := []struct {
		name, value string
	}{
		{"DISCORD_TOKEN", ""},
		{"DISCORD_API_URL", "not a url"},
		{"DISCORD_API_URL", "ftp://x"},
		{"TOTAL_SHARDS", "zero"},
		{"TOTAL_SHARDS", "0"},
		{"TOTAL_SHARDS", "-3"},
		{"SHARDS_PER_POOL", "0"},
		{"SHARDS_PER_POOL", "x"},
		{"POOL_ID", "-1"},
		{"POOL_ID", "one"},
		{"NATS_URL", "://nohost"},
		{"STREAM_STORAGE", "disk"},
		{"STREAM_REPLICAS", "0"},
		{"HTTP_PORT", "70000"},
		{"HTTP_PORT", "http"},
		{"LOG_LEVEL", "verbose"},
		{"GATEWAY_COMPRESSION", "gzip"},
		{"DRAIN_TIMEOUT", "20"},
		{"DRAIN_TIMEOUT", "-1s"},
		{"BUFFER_MAX_EVENTS", "0"},
		{"BUFFER_MAX_BYTES", "lots"},
		{"CONSUL_HTTP_ADDR", "consul"},
		{"CONSUL_HTTP_ADDR", "ftp://consul:8500"},
		{"SERVICE_NAME", "discord gateway"},
		{"KV_PREFIX", "/"},
		{"CONSUL_SESSION_TTL", "5s"},
		{"CONSUL_SESSION_TTL", "ten"},
		{"CONSUL_LOCK_DELAY", "-1s"},
		{"CONSUL_CHECK_INTERVAL", "0s"},
		{"CONSUL_DEREGISTER_AFTER", "30s"},
		{"HANDOFF_MAX_AGE", "forever"},
	}
	for _, tc := range cases {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			e := map[string]string{"DISCORD_TOKEN": "tok"}
			e[tc.name] = tc.value
			if tc.name == "DISCORD_TOKEN" {
				delete(e, "DISCORD_TOKEN")
			}
			_, err := ParseConfig(nil, env(e), io.Discard)
			if err == nil {
				t.Fatal("want an error")
			}
			if !strings.Contains(err.Error(), tc.name) {
				t.Fatalf("error %q does not name %s", err, tc.name)
			}
		})
	}
}

func TestParseConfigNeverEchoesSecrets(t *testing.T) {
	_, err := ParseConfig(nil, env(map[string]string{"DISCORD_TOKEN": "tok", "NATS_URL": "nats://user:hunter2@:bad:port"}), io.Discard)
	if err == nil {
		t.Fatal("want an error")
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error leaks the NATS password: %v", err)
	}
}

func TestParseConfigKnowsWhetherPoolIDWasSet(t *testing.T) {
	cases := []struct {
		name  string
		args  []string
		env   map[string]string
		set   bool
		value int
	}{
		{"unset", nil, nil, false, 0},
		{"environment 0", nil, map[string]string{"POOL_ID": "0"}, true, 0},
		{"environment 2", nil, map[string]string{"POOL_ID": "2"}, true, 2},
		{"flag 0", []string{"-pool-id", "0"}, nil, true, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := map[string]string{"DISCORD_TOKEN": "tok"}
			for k, v := range tc.env {
				e[k] = v
			}
			c, err := ParseConfig(tc.args, env(e), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if c.PoolIDSet != tc.set || c.PoolID != tc.value {
				t.Fatalf("PoolIDSet=%v PoolID=%d, want %v %d", c.PoolIDSet, c.PoolID, tc.set, tc.value)
			}
		})
	}
}

func TestParseConfigAcceptsConsulAddresses(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:8500", "consul.service:8500", "http://consul:8500", "https://consul:8501", "unix:///var/run/consul.sock"} {
		c, err := ParseConfig(nil, env(map[string]string{"DISCORD_TOKEN": "tok", "CONSUL_HTTP_ADDR": addr}), io.Discard)
		if err != nil {
			t.Errorf("%s: %v", addr, err)
		} else if c.ConsulHTTPAddr != addr {
			t.Errorf("%s: got %q", addr, c.ConsulHTTPAddr)
		}
	}
}

func TestParseConfigNeverEchoesTheConsulToken(t *testing.T) {
	c, err := ParseConfig(nil, env(map[string]string{"DISCORD_TOKEN": "tok", "CONSUL_HTTP_TOKEN": "s3cr3t-acl"}), io.Discard)
	if err != nil || c.ConsulHTTPToken != "s3cr3t-acl" {
		t.Fatalf("token %q, err %v", c.ConsulHTTPToken, err)
	}
	if !secretVars["CONSUL_HTTP_TOKEN"] {
		t.Fatal("CONSUL_HTTP_TOKEN is not treated as a secret")
	}
}

package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
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
		Compression: "zlib-stream", Intents: 3 /* GUILDS,GUILD_MEMBERS */, DrainTimeout: 20 * time.Second, BufferMaxEvents: 500000, BufferMaxBytes: 256 << 20,
		IdentifyWindow: 5 * time.Second, BackoffBase: time.Second, BackoffMax: time.Minute,
		ServiceName: "discord-gateway", KVPrefix: "discord-gateway", SessionTTL: 15 * time.Second, LockDelay: 15 * time.Second,
		CheckInterval: 10 * time.Second, CheckFailures: 3, DeregisterAfter: time.Minute, HandoffMaxAge: 3 * time.Minute,
		Reshard: "manual", ReshardCheckInterval: time.Hour, ReshardIDMargin: time.Minute, ReshardHandoverTimeout: 30 * time.Second,
		CheckpointInterval: 5 * time.Second,
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

// badValues lists, for every variable of the table, values it refuses
// and the whole error each gives; "" is the empty value given as a flag
// (an empty environment variable means unset). A variable whose every value
// is valid is in acceptsAnyValue instead.
var badValues = map[string][]struct{ value, msg string }{
	"DISCORD_TOKEN": {
		{"", "invalid DISCORD_TOKEN: is required"},
		{"  ", "invalid DISCORD_TOKEN: is required"},
		{"Bot ", "invalid DISCORD_TOKEN: is required"},
	},
	"DISCORD_API_URL": {
		{"", `invalid DISCORD_API_URL: "" is not an http(s) URL`},
		{"not a url", `invalid DISCORD_API_URL: "not a url" is not an http(s) URL`},
		{"ftp://x", `invalid DISCORD_API_URL: "ftp://x" is not an http(s) URL`},
	},
	"TOTAL_SHARDS": {
		{"", `invalid TOTAL_SHARDS: "" must be a positive integer or auto`},
		{"zero", `invalid TOTAL_SHARDS: "zero" must be a positive integer or auto`},
		{"0", `invalid TOTAL_SHARDS: "0" must be a positive integer or auto`},
		{"-3", `invalid TOTAL_SHARDS: "-3" must be a positive integer or auto`},
	},
	"SHARDS_PER_POOL": {
		{"", `invalid SHARDS_PER_POOL: "" must be an integer >= 1`},
		{"0", `invalid SHARDS_PER_POOL: "0" must be an integer >= 1`},
		{"x", `invalid SHARDS_PER_POOL: "x" must be an integer >= 1`},
	},
	"POOL_ID": {
		{"", `invalid POOL_ID: "" must be an integer >= 0`},
		{"-1", `invalid POOL_ID: "-1" must be an integer >= 0`},
		{"one", `invalid POOL_ID: "one" must be an integer >= 0`},
	},
	"SESSION_START_RESERVE": {
		{"", `invalid SESSION_START_RESERVE: "" must be a positive integer or auto`},
		{"0", `invalid SESSION_START_RESERVE: "0" must be a positive integer or auto`},
		{"1%", `invalid SESSION_START_RESERVE: "1%" must be a positive integer or auto`},
	},
	"NATS_URL": {
		{"://nohost", `invalid NATS_URL: "://nohost" is not a NATS URL (nats://host:port)`},
		{"nats://user:hunter2@:bad:port", `invalid NATS_URL: "nats://redacted@:bad:port" is not a NATS URL (nats://host:port)`},
		{"nats://a:4222,nats://u:hunter2@", `invalid NATS_URL: "nats://redacted@" is not a NATS URL (nats://host:port)`},
	},
	"STREAM_STORAGE": {
		{"", `invalid STREAM_STORAGE: "" must be memory or file`},
		{"disk", `invalid STREAM_STORAGE: "disk" must be memory or file`},
	},
	"STREAM_REPLICAS": {
		{"", `invalid STREAM_REPLICAS: "" must be an integer >= 1`},
		{"0", `invalid STREAM_REPLICAS: "0" must be an integer >= 1`},
	},
	"HTTP_PORT": {
		{"", `invalid HTTP_PORT: "" must be a port number (0-65535)`},
		{"70000", `invalid HTTP_PORT: "70000" must be a port number (0-65535)`},
		{"-1", `invalid HTTP_PORT: "-1" must be a port number (0-65535)`},
		{"http", `invalid HTTP_PORT: "http" must be a port number (0-65535)`},
	},
	"LOG_LEVEL": {
		{"", `invalid LOG_LEVEL: "" must be debug, info, warn or error`},
		{"verbose", `invalid LOG_LEVEL: "verbose" must be debug, info, warn or error`},
	},
	"GATEWAY_COMPRESSION": {
		{"", `invalid GATEWAY_COMPRESSION: "" must be zlib-stream, zstd-stream or none`},
		{"gzip", `invalid GATEWAY_COMPRESSION: "gzip" must be zlib-stream, zstd-stream or none`},
	},
	"GATEWAY_INTENTS": {
		{"", `invalid GATEWAY_INTENTS: "" names no intent`},
		{"GUILDS,GUILD_VOICE", `invalid GATEWAY_INTENTS: "GUILD_VOICE" is not a gateway intent (see https://discord.com/developers/docs/events/gateway#list-of-intents)`},
		{"1048576000", `invalid GATEWAY_INTENTS: 1048576000 has bits Discord defines no intent for`},
	},
	"EXTRA_EVENTS": {
		{"voice_state_update", `invalid EXTRA_EVENTS: "voice_state_update" is not a Discord dispatch name (upper case letters, digits and _)`},
		{"GUILD_CREATE", `invalid EXTRA_EVENTS: GUILD_CREATE is published already (the events table)`},
	},
	"DRAIN_TIMEOUT": {
		{"", `invalid DRAIN_TIMEOUT: "" must be a positive duration such as 20s`},
		{"20", `invalid DRAIN_TIMEOUT: "20" must be a positive duration such as 20s`},
		{"-1s", `invalid DRAIN_TIMEOUT: "-1s" must be a positive duration such as 20s`},
		{"0s", `invalid DRAIN_TIMEOUT: "0s" must be a positive duration such as 20s`},
	},
	"BUFFER_MAX_EVENTS": {
		{"", `invalid BUFFER_MAX_EVENTS: "" must be an integer >= 1`},
		{"0", `invalid BUFFER_MAX_EVENTS: "0" must be an integer >= 1`},
	},
	"BUFFER_MAX_BYTES": {
		{"", `invalid BUFFER_MAX_BYTES: "" must be a positive number of bytes`},
		{"lots", `invalid BUFFER_MAX_BYTES: "lots" must be a positive number of bytes`},
		{"0", `invalid BUFFER_MAX_BYTES: "0" must be a positive number of bytes`},
	},
	"CONSUL_HTTP_ADDR": {
		{"consul", `invalid CONSUL_HTTP_ADDR: "consul" is not host:port`},
		{"ftp://consul:8500", `invalid CONSUL_HTTP_ADDR: "ftp://consul:8500" is not host:port or an http(s) or unix URL`},
		{"http://user:hunter2@consul", `invalid CONSUL_HTTP_ADDR: "http://redacted@consul" is not host:port`},
	},
	"SERVICE_NAME": {
		{"", `invalid SERVICE_NAME: "" must be letters, digits, dashes and underscores`},
		{"discord gateway", `invalid SERVICE_NAME: "discord gateway" must be letters, digits, dashes and underscores`},
	},
	"KV_PREFIX": {
		{"", `invalid KV_PREFIX: "" must be a non-empty key path`},
		{"/", `invalid KV_PREFIX: "/" must be a non-empty key path`},
		{"a b", `invalid KV_PREFIX: "a b" must be a non-empty key path`},
	},
	"CONSUL_SESSION_TTL": {
		{"", `invalid CONSUL_SESSION_TTL: "" must be a duration between 10s and 24h`},
		{"5s", `invalid CONSUL_SESSION_TTL: "5s" must be a duration between 10s and 24h`},
		{"ten", `invalid CONSUL_SESSION_TTL: "ten" must be a duration between 10s and 24h`},
	},
	"CONSUL_LOCK_DELAY": {
		{"", `invalid CONSUL_LOCK_DELAY: "" must be a duration between 0s and 1m`},
		{"-1s", `invalid CONSUL_LOCK_DELAY: "-1s" must be a duration between 0s and 1m`},
	},
	"CONSUL_CHECK_INTERVAL": {
		{"", `invalid CONSUL_CHECK_INTERVAL: "" must be a duration between 1s and 10m`},
		{"0s", `invalid CONSUL_CHECK_INTERVAL: "0s" must be a duration between 1s and 10m`},
	},
	"CONSUL_CHECK_FAILURES": {
		{"", `invalid CONSUL_CHECK_FAILURES: "" must be an integer >= 1`},
		{"0", `invalid CONSUL_CHECK_FAILURES: "0" must be an integer >= 1`},
	},
	"CONSUL_DEREGISTER_AFTER": {
		{"", `invalid CONSUL_DEREGISTER_AFTER: "" must be a duration between 1m and 168h`},
		{"30s", `invalid CONSUL_DEREGISTER_AFTER: "30s" must be a duration between 1m and 168h`},
	},
	"CHECKPOINT_INTERVAL": {
		{"", `invalid CHECKPOINT_INTERVAL: "" must be 0s (off) or a duration between 1s and 5m`},
		{"500ms", `invalid CHECKPOINT_INTERVAL: "500ms" must be 0s (off) or a duration between 1s and 5m`},
		{"10m", `invalid CHECKPOINT_INTERVAL: "10m" must be 0s (off) or a duration between 1s and 5m`},
	},
	"SESSION_STATE_FILE": {
		{"/no-such-dir/sessions.json", `invalid SESSION_STATE_FILE: "/no-such-dir/sessions.json": directory /no-such-dir: stat /no-such-dir: no such file or directory`},
		{"/", `invalid SESSION_STATE_FILE: "/": is a directory, not a file`},
	},
	"HANDOFF_MAX_AGE": {
		{"", `invalid HANDOFF_MAX_AGE: "" must be a duration between 1s and 1h`},
		{"forever", `invalid HANDOFF_MAX_AGE: "forever" must be a duration between 1s and 1h`},
	},
	"RESHARD": {
		{"", `invalid RESHARD: "" must be manual or auto`},
		{"sometimes", `invalid RESHARD: "sometimes" must be manual or auto`},
	},
	"RESHARD_CHECK_INTERVAL": {
		{"0s", `invalid RESHARD_CHECK_INTERVAL: "0s" must be a duration between 1s and 168h`},
	},
	"RESHARD_HANDOVER_TIMEOUT": {
		{"1h", `invalid RESHARD_HANDOVER_TIMEOUT: "1h" must be a duration between 1s and 10m`},
	},
	"RESHARD_ID_MARGIN": {
		{"soon", `invalid RESHARD_ID_MARGIN: "soon" must be a duration between 1s and 1h`},
	},
}

// acceptsAnyValue are the variables with no invalid value: paths and
// secrets checked when used, and settings whose empty value means off.
var acceptsAnyValue = []string{
	"NATS_CREDS", "NATS_NKEY_SEED", "NATS_USER", "NATS_PASSWORD", "NATS_TOKEN",
	"NATS_TLS_CA", "NATS_TLS_CERT", "NATS_TLS_KEY", "HTTP_HOST", "DRAIN_TOKEN",
	"CONSUL_HTTP_TOKEN", "SERVICE_ADDRESS",
}

func TestParseConfigErrorTableCoversEveryVariable(t *testing.T) {
	for _, v := range vars {
		if len(badValues[v.env]) == 0 && !slices.Contains(acceptsAnyValue, v.env) {
			t.Errorf("%s has no bad values in badValues and is not in acceptsAnyValue", v.env)
		}
	}
}

func TestParseConfigRejectsBadValuesWithTheWholeMessage(t *testing.T) {
	for name, cases := range badValues {
		for _, tc := range cases {
			// As a flag, so that the empty value is a value and not unset.
			t.Run(name+"="+tc.value, func(t *testing.T) {
				_, err := ParseConfig([]string{"-" + flagName(name) + "=" + tc.value}, env(map[string]string{"DISCORD_TOKEN": "tok"}), io.Discard)
				if err == nil {
					t.Fatal("accepted")
				}
				if err.Error() != tc.msg {
					t.Fatalf("error\n got %q\nwant %q", err, tc.msg)
				}
			})
			// From the environment alike (an empty one is unset, so valid).
			if tc.value == "" {
				continue
			}
			t.Run(name+"="+tc.value+" from the environment", func(t *testing.T) {
				_, err := ParseConfig(nil, env(map[string]string{"DISCORD_TOKEN": "tok", name: tc.value}), io.Discard)
				if err == nil || err.Error() != tc.msg {
					t.Fatalf("error\n got %v\nwant %q", err, tc.msg)
				}
			})
		}
	}
}

func TestParseConfigAcceptsAnyValueOfFreeFormVariables(t *testing.T) {
	for _, name := range acceptsAnyValue {
		for _, value := range []string{"", "x", "  spaced value  ", "nats://u:p@h:1"} {
			if _, err := ParseConfig([]string{"-" + flagName(name) + "=" + value}, env(map[string]string{"DISCORD_TOKEN": "tok"}), io.Discard); err != nil {
				t.Errorf("%s=%q: %v", name, value, err)
			}
		}
	}
}

func TestParseConfigReportsEveryInvalidVariableAtOnce(t *testing.T) {
	_, err := ParseConfig([]string{"-log-level=verbose"}, env(map[string]string{
		"HTTP_PORT": "http", "STREAM_STORAGE": "disk", "NATS_URL": "nats://gateway:hunter2@:x:y",
	}), io.Discard)
	want := strings.Join([]string{
		"invalid DISCORD_TOKEN: is required",
		`invalid NATS_URL: "nats://redacted@:x:y" is not a NATS URL (nats://host:port)`,
		`invalid STREAM_STORAGE: "disk" must be memory or file`,
		`invalid HTTP_PORT: "http" must be a port number (0-65535)`,
		`invalid LOG_LEVEL: "verbose" must be debug, info, warn or error`,
	}, "\n")
	if err == nil || err.Error() != want {
		t.Fatalf("error\n got %v\nwant %s", err, want)
	}
}

func TestParseConfigNeverEchoesASecretsValue(t *testing.T) {
	cases := []struct {
		name, value string
		reason      error
		want        string
	}{
		// A reason that quotes the value loses it all, not just the value.
		{"NATS_PASSWORD", "hunter2", fmt.Errorf("%q is too short", "hunter2"), "is not valid (its value is secret, so it is not shown)"},
		{"DISCORD_TOKEN", " Bot abc ", errors.New("abc is malformed"), "is not valid (its value is secret, so it is not shown)"},
		// An empty or blank value is in every message: nothing to hide.
		{"DISCORD_TOKEN", "", errors.New("is required"), "is required"},
		{"DISCORD_TOKEN", " ", errors.New("is required"), "is required"},
		{"LOG_LEVEL", "verbose", errors.New(`"verbose" is not a level`), `"verbose" is not a level`},
	}
	for _, tc := range cases {
		if got := hideSecret(tc.name, tc.value, tc.reason).Error(); got != tc.want {
			t.Errorf("%s=%q: got %q, want %q", tc.name, tc.value, got, tc.want)
		}
	}
}

func TestParseConfigAcceptsWhatNATSAccepts(t *testing.T) {
	for _, u := range []string{"nats://127.0.0.1:4222", "localhost:4222", "tls://a:4222, tls://b:4222", "nats://u:p@host"} {
		c, err := ParseConfig(nil, env(map[string]string{"DISCORD_TOKEN": "tok", "NATS_URL": u}), io.Discard)
		if err != nil || c.NATSURL != u {
			t.Errorf("NATS_URL=%q: %q, %v", u, c.NATSURL, err)
		}
	}
}

func TestParseConfigAcceptsAnUpperCaseLogLevel(t *testing.T) {
	c, err := ParseConfig(nil, env(map[string]string{"DISCORD_TOKEN": "tok", "LOG_LEVEL": "DEBUG"}), io.Discard)
	if err != nil || c.LogLevel != "debug" {
		t.Fatalf("LogLevel %q, %v", c.LogLevel, err)
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

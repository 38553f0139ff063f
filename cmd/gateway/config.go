package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Config is the gateway's configuration. Every setting is an environment
// variable with a flag of the same meaning (the flag wins); vars below is the
// one list of them, with defaults, and the README's table mirrors it.
type Config struct {
	DiscordToken    string
	DiscordAPIURL   string
	TotalShards     int // 0 = auto
	ShardsPerPool   int
	PoolID          int
	NATSURL         string
	StreamStorage   string
	StreamReplicas  int
	HTTPHost        string
	HTTPPort        int
	LogLevel        string
	Compression     string
	DrainToken      string
	DrainTimeout    time.Duration
	BufferMaxEvents int
	BufferMaxBytes  int64

	// Not settable from outside: tests scale Discord's 5 s identify window
	// and backoff down, as the simulator does.
	IdentifyWindow time.Duration
	BackoffBase    time.Duration
	BackoffMax     time.Duration
}

type variable struct {
	env, def, help string
	set            func(c *Config, v string) error
}

// vars lists every setting, in the order of the README table.
var vars = []variable{
	{"DISCORD_TOKEN", "", "bot token (required; never logged)", func(c *Config, v string) error {
		if strings.TrimSpace(v) == "" {
			return errors.New("is required")
		}
		c.DiscordToken = strings.TrimPrefix(strings.TrimSpace(v), "Bot ")
		return nil
	}},
	{"DISCORD_API_URL", "https://discord.com/api/v10", "Discord REST base; GET $DISCORD_API_URL/gateway/bot", func(c *Config, v string) error {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%q is not an http(s) URL", v)
		}
		c.DiscordAPIURL = strings.TrimRight(v, "/")
		return nil
	}},
	{"TOTAL_SHARDS", "auto", "total shards of the bot: an integer, or auto (Discord's recommendation)", func(c *Config, v string) error {
		if v == "auto" {
			c.TotalShards = 0
			return nil
		}
		n, err := positive(v)
		c.TotalShards = n
		if err != nil {
			return fmt.Errorf("%q must be a positive integer or auto", v)
		}
		return nil
	}},
	{"SHARDS_PER_POOL", "25", "shards per pool", intSetter(func(c *Config, n int) { c.ShardsPerPool = n }, 1)},
	{"POOL_ID", "0", "pool p runs shards [p*SHARDS_PER_POOL, min((p+1)*SHARDS_PER_POOL, TOTAL_SHARDS))", intSetter(func(c *Config, n int) { c.PoolID = n }, 0)},
	{"NATS_URL", "", "NATS server URL(s), comma separated; unset = local mode (events logged at debug and counted)", func(c *Config, v string) error {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			u, err := url.Parse(s)
			if err != nil || u.Host == "" {
				return fmt.Errorf("%q is not a NATS URL (nats://host:port)", redactURL(s))
			}
		}
		c.NATSURL = v
		return nil
	}},
	{"STREAM_STORAGE", "memory", "storage of the streams the gateway creates: memory or file", func(c *Config, v string) error {
		if v != "memory" && v != "file" {
			return fmt.Errorf("%q must be memory or file", v)
		}
		c.StreamStorage = v
		return nil
	}},
	{"STREAM_REPLICAS", "1", "replicas of the streams it creates (3 on a NATS cluster)", intSetter(func(c *Config, n int) { c.StreamReplicas = n }, 1)},
	{"HTTP_HOST", "0.0.0.0", "address the HTTP server binds", func(c *Config, v string) error {
		c.HTTPHost = v
		return nil
	}},
	{"HTTP_PORT", "9090", "port of /health, /ready, /status, /drain, /metrics (0 = any free port)", func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 65535 {
			return fmt.Errorf("%q must be a port number (0-65535)", v)
		}
		c.HTTPPort = n
		return nil
	}},
	{"LOG_LEVEL", "info", "debug, info, warn or error", func(c *Config, v string) error {
		switch v {
		case "debug", "info", "warn", "error":
			c.LogLevel = v
			return nil
		}
		return fmt.Errorf("%q must be debug, info, warn or error", v)
	}},
	{"GATEWAY_COMPRESSION", "zlib-stream", "gateway transport compression: zlib-stream, zstd-stream or none", func(c *Config, v string) error {
		switch v {
		case "zlib-stream", "zstd-stream", "none":
			c.Compression = v
			return nil
		}
		return fmt.Errorf("%q must be zlib-stream, zstd-stream or none", v)
	}},
	{"DRAIN_TOKEN", "", "bearer token required by POST /drain (unset: no auth; a warning when the HTTP host is not loopback)", func(c *Config, v string) error {
		c.DrainToken = v
		return nil
	}},
	{"DRAIN_TIMEOUT", "20s", "deadline of a drain (POST /drain, SIGTERM, SIGINT)", func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("%q must be a positive duration such as 20s", v)
		}
		c.DrainTimeout = d
		return nil
	}},
	{"BUFFER_MAX_EVENTS", "500000", "events held while JetStream is unreachable, before shards pause reading", intSetter(func(c *Config, n int) { c.BufferMaxEvents = n }, 1)},
	{"BUFFER_MAX_BYTES", "268435456", "bytes held while JetStream is unreachable (256 MiB), before shards pause reading", func(c *Config, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return fmt.Errorf("%q must be a positive number of bytes", v)
		}
		c.BufferMaxBytes = n
		return nil
	}},
}

func intSetter(set func(*Config, int), min int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < min {
			return fmt.Errorf("%q must be an integer >= %d", v, min)
		}
		set(c, n)
		return nil
	}
}

func positive(v string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 1 {
		return 0, errors.New("not a positive integer")
	}
	return n, nil
}

// flagName turns DISCORD_TOKEN into discord-token.
func flagName(env string) string {
	return strings.ToLower(strings.ReplaceAll(env, "_", "-"))
}

// secretVars never have their values echoed in an error.
var secretVars = map[string]bool{"DISCORD_TOKEN": true, "DRAIN_TOKEN": true}

// ParseConfig reads args (flags) over getenv (environment) over defaults. An
// invalid value fails with an error naming the variable.
func ParseConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	c := Config{IdentifyWindow: 5 * time.Second, BackoffBase: time.Second, BackoffMax: 60 * time.Second}
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	flags := make(map[string]*string, len(vars))
	for _, v := range vars {
		flags[v.env] = fs.String(flagName(v.env), "", fmt.Sprintf("%s (env %s, default %q)", v.help, v.env, v.def))
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	setByFlag := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { setByFlag[f.Name] = true })
	for _, v := range vars {
		val := v.def
		if e := getenv(v.env); e != "" {
			val = e
		}
		if setByFlag[flagName(v.env)] {
			val = *flags[v.env]
		}
		if err := v.set(&c, val); err != nil {
			if secretVars[v.env] {
				err = errors.New(strings.ReplaceAll(err.Error(), val, "<redacted>"))
			}
			return c, fmt.Errorf("invalid %s: %w", v.env, err)
		}
	}
	return c, nil
}

// redactURL hides user info (credentials) in a URL before it reaches a log or
// an error.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		if i := strings.Index(s, "@"); i >= 0 {
			return "<redacted>@" + s[i+1:]
		}
		return s
	}
	u.User = url.User("redacted")
	return u.String()
}

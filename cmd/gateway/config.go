package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/diamondburned/arikawa/v3/gateway"

	"github.com/shardpool/gateway/service/event"
	jspub "github.com/shardpool/gateway/service/publish/jetstream"
	"github.com/shardpool/gateway/service/shard"
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
	NATSAuth        jspub.Auth
	StreamStorage   string
	StreamReplicas  int
	HTTPHost        string
	HTTPPort        int
	LogLevel        string
	Compression     string
	Intents         gateway.Intents // GATEWAY_INTENTS
	ExtraEvents     string          // EXTRA_EVENTS, checked, comma separated
	DrainToken      string
	DrainTimeout    time.Duration
	BufferMaxEvents int
	BufferMaxBytes  int64

	// SessionStartReserve: no IDENTIFY while session_start_limit.remaining
	// is at or below it; 0 = auto (1% of the total, at least 1).
	SessionStartReserve int

	// Checkpoints (checkpoint.go): every CheckpointInterval (0: off) each
	// running shard's resume record is saved, in Consul or, without it, in
	// SessionStateFile ("" = none).
	CheckpointInterval time.Duration
	SessionStateFile   string

	// Consul: on when ConsulHTTPAddr is set.
	ConsulHTTPAddr  string
	ConsulHTTPToken string
	ServiceName     string
	ServiceAddress  string
	KVPrefix        string
	SessionTTL      time.Duration
	LockDelay       time.Duration
	CheckInterval   time.Duration
	CheckFailures   int
	DeregisterAfter time.Duration
	HandoffMaxAge   time.Duration
	// Reshard is RESHARD: ReshardManual or ReshardAuto (reshard.go).
	Reshard              string
	ReshardCheckInterval time.Duration
	ReshardIDMargin      time.Duration
	// ReshardHandoverTimeout: the old generation closes at the latest that
	// long after the hand-over instant (reshard_ids.go).
	ReshardHandoverTimeout time.Duration
	// PoolIDSet is true when POOL_ID was given (environment or flag): with
	// Consul, an unset POOL_ID means "claim one".
	PoolIDSet bool

	// Not settable from outside: tests scale Discord's 5 s identify window
	// and backoff down, as the simulator does.
	IdentifyWindow time.Duration
	SendBudget     shard.SendBudget // zero: Discord's 120 per 60 s
	BackoffBase    time.Duration
	BackoffMax     time.Duration

	// InvalidSessionDelay, when set, replaces the 1–5 s pause Discord asks
	// for before a new IDENTIFY (tests).
	InvalidSessionDelay time.Duration
}

type variable struct {
	env, def, help string
	set            func(c *Config, v string) error
}

// vars lists every setting, in the order of the README table.
var vars = []variable{
	{"DISCORD_TOKEN", "", "bot token (required; never logged)", func(c *Config, v string) error {
		// The token as Discord's Authorization header spells it ("Bot
		// <token>") is accepted too; the prefix alone is no token.
		token := strings.TrimSpace(v)
		if rest, ok := strings.CutPrefix(token, "Bot "); ok {
			token = strings.TrimSpace(rest)
		}
		if token == "" || token == "Bot" {
			return errors.New("is required")
		}
		c.DiscordToken = token
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
	{"POOL_ID", "0", "pool p runs shards [p*SHARDS_PER_POOL, min((p+1)*SHARDS_PER_POOL, TOTAL_SHARDS)); unset with CONSUL_HTTP_ADDR: claimed from Consul", intSetter(func(c *Config, n int) { c.PoolID = n }, 0)},
	{"SESSION_START_RESERVE", "auto", "session starts (IDENTIFYs) of Discord's daily session_start_limit kept in reserve: no IDENTIFY while remaining is at or below it (shards wait for the reset in state session_limit); auto = 1% of the total, at least 1", func(c *Config, v string) error {
		if v == "auto" {
			c.SessionStartReserve = 0
			return nil
		}
		n, err := positive(v)
		if err != nil {
			return fmt.Errorf("%q must be a positive integer or auto", v)
		}
		c.SessionStartReserve = n
		return nil
	}},
	{"NATS_URL", "", "NATS server URL(s), comma separated; unset = local mode (events logged at debug and counted)", func(c *Config, v string) error {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			// The NATS client reads host:port as nats://host:port.
			full := s
			if !strings.Contains(s, "://") {
				full = "nats://" + s
			}
			u, err := url.Parse(full)
			if err != nil || u.Host == "" {
				return fmt.Errorf("%q is not a NATS URL (nats://host:port)", jspub.RedactURL(s))
			}
		}
		c.NATSURL = v
		return nil
	}},
	{"NATS_CREDS", "", "NATS credentials file (user JWT and nkey seed)", func(c *Config, v string) error {
		c.NATSAuth.CredsFile = v
		return nil
	}},
	{"NATS_NKEY_SEED", "", "file holding a NATS user nkey seed", func(c *Config, v string) error {
		c.NATSAuth.NkeySeedFile = v
		return nil
	}},
	{"NATS_USER", "", "NATS user (with NATS_PASSWORD); a user:password in NATS_URL works too", func(c *Config, v string) error {
		c.NATSAuth.User = v
		return nil
	}},
	{"NATS_PASSWORD", "", "NATS password (never logged)", func(c *Config, v string) error {
		c.NATSAuth.Password = v
		return nil
	}},
	{"NATS_TOKEN", "", "NATS authentication token (never logged)", func(c *Config, v string) error {
		c.NATSAuth.Token = v
		return nil
	}},
	{"NATS_TLS_CA", "", "CA bundle to verify the NATS server (turns TLS on)", func(c *Config, v string) error {
		c.NATSAuth.TLSCAFile = v
		return nil
	}},
	{"NATS_TLS_CERT", "", "client certificate for NATS servers that verify clients (with NATS_TLS_KEY)", func(c *Config, v string) error {
		c.NATSAuth.TLSCertFile = v
		return nil
	}},
	{"NATS_TLS_KEY", "", "client certificate key (with NATS_TLS_CERT)", func(c *Config, v string) error {
		c.NATSAuth.TLSKeyFile = v
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
		switch l := strings.ToLower(v); l {
		case "debug", "info", "warn", "error":
			c.LogLevel = l
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
	{"GATEWAY_INTENTS", "GUILDS,GUILD_MEMBERS", "gateway intents IDENTIFY asks for: names (GUILDS,GUILD_MEMBERS,GUILD_VOICE_STATES) or an integer", func(c *Config, v string) error {
		in, err := shard.ParseIntents(v)
		c.Intents = in
		return err
	}},
	{"EXTRA_EVENTS", "", "further dispatch names to publish, comma separated, each to events.dispatch.<NAME> in the EVENTS stream (e.g. VOICE_STATE_UPDATE,VOICE_SERVER_UPDATE)", func(c *Config, v string) error {
		names, err := event.ParseExtraEvents(v)
		c.ExtraEvents = strings.Join(names, ",")
		return err
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
	{"CHECKPOINT_INTERVAL", "5s", "how often each running shard's resume record (session, resume URL, last acked seq) is saved when its acked seq moved, in Consul under the pool lock or in SESSION_STATE_FILE, so that the successor (or a restart) RESUMEs after a crash; 0s = never (a crash then costs an IDENTIFY per shard and the dispatches read but not acked)", setCheckpointInterval},
	{"SESSION_STATE_FILE", "", "without Consul: a file on a persistent volume that keeps the resume records (written atomically on the CHECKPOINT_INTERVAL schedule and after a drain, read at startup); its directory must exist and be writable", setStateFile},
	{"CONSUL_HTTP_ADDR", "", "Consul agent HTTP API (host:port or http(s)://host:port); set: register in Consul, claim the pool id when POOL_ID is unset, coordinate identifies across instances, hand sessions over on drain", func(c *Config, v string) error {
		if v == "" {
			c.ConsulHTTPAddr = ""
			return nil
		}
		hostport := v
		if i := strings.Index(v, "://"); i >= 0 {
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "unix") {
				return fmt.Errorf("%q is not host:port or an http(s) or unix URL", jspub.RedactURL(v))
			}
			if u.Scheme == "unix" {
				c.ConsulHTTPAddr = v
				return nil
			}
			hostport = u.Host
		}
		if _, port, err := net.SplitHostPort(hostport); err != nil || port == "" {
			return fmt.Errorf("%q is not host:port", jspub.RedactURL(v))
		}
		c.ConsulHTTPAddr = v
		return nil
	}},
	{"CONSUL_HTTP_TOKEN", "", "Consul ACL token (never logged); the other CONSUL_* variables of the consul CLI (CONSUL_HTTP_TOKEN_FILE, CONSUL_HTTP_SSL, CONSUL_CACERT, ...) are read as it reads them", func(c *Config, v string) error {
		c.ConsulHTTPToken = v
		return nil
	}},
	{"SERVICE_NAME", "discord-gateway", "service name in the Consul catalog", func(c *Config, v string) error {
		if !validName(v) {
			return fmt.Errorf("%q must be letters, digits, dashes and underscores", v)
		}
		c.ServiceName = v
		return nil
	}},
	{"SERVICE_ADDRESS", "", "address registered in Consul, where its agent reaches /health and /ready; unset: HTTP_HOST, or when that is 0.0.0.0 this host's address on the route to the agent", func(c *Config, v string) error {
		c.ServiceAddress = v
		return nil
	}},
	{"KV_PREFIX", "discord-gateway", "Consul KV prefix of the pool locks, hand-off records and identify buckets (one per bot)", func(c *Config, v string) error {
		prefix := strings.Trim(v, "/")
		if prefix == "" || strings.ContainsAny(prefix, " \t\n") {
			return fmt.Errorf("%q must be a non-empty key path", v)
		}
		c.KVPrefix = prefix
		return nil
	}},
	{"CONSUL_SESSION_TTL", "15s", "TTL of the Consul session holding the pool lock (10s to 24h); an instance that cannot renew it for half of it stops its shards (fencing)", durationSetter(func(c *Config, d time.Duration) { c.SessionTTL = d }, 10*time.Second, 24*time.Hour)},
	{"CONSUL_LOCK_DELAY", "15s", "time Consul keeps the pool lock of a dead instance from being taken (0s to 60s); keep it at least half CONSUL_SESSION_TTL", durationSetter(func(c *Config, d time.Duration) { c.LockDelay = d }, 0, time.Minute)},
	{"CONSUL_CHECK_INTERVAL", "10s", "interval of the Consul checks on /health and /ready", durationSetter(func(c *Config, d time.Duration) { c.CheckInterval = d }, time.Second, 10*time.Minute)},
	{"CONSUL_CHECK_FAILURES", "3", "consecutive failed /health probes before Consul marks the instance critical, which ends its session and stops its shards (fencing); a failing /ready never fences", intSetter(func(c *Config, n int) { c.CheckFailures = n }, 1)},
	{"CONSUL_DEREGISTER_AFTER", "1m", "Consul removes an instance whose /health check stays critical that long (at least 1m)", durationSetter(func(c *Config, d time.Duration) { c.DeregisterAfter = d }, time.Minute, 7*24*time.Hour)},
	{"HANDOFF_MAX_AGE", "3m", "a hand-off record older than this is not resumed (Discord no longer keeps the session); its shard identifies", durationSetter(func(c *Config, d time.Duration) { c.HandoffMaxAge = d }, time.Second, time.Hour)},
	{"RESHARD", ReshardManual, "manual: a close 4011 (sharding required) stops the shard and logs the gatewayctl reshard command to run; auto: on 4011, or when /gateway/bot recommends more shards than the plan has, one instance reshards the fleet (with Consul) to the recommendation rounded up to a multiple of max_concurrency", reshardSetter},
	{"RESHARD_CHECK_INTERVAL", "1h", "with RESHARD=auto, how often an instance compares /gateway/bot's recommended shards with the plan", durationSetter(func(c *Config, d time.Duration) { c.ReshardCheckInterval = d }, time.Second, 7*24*time.Hour)},
	{"RESHARD_HANDOVER_TIMEOUT", "30s", "at a resharding's cut-over, the old generation keeps serving until each of its sessions has seen, for every guild, a dispatch created after the hand-over instant, or this long; a guild quiet that long is handed over at this deadline", durationSetter(func(c *Config, d time.Duration) { c.ReshardHandoverTimeout = d }, time.Second, 10*time.Minute)},
	{"RESHARD_ID_MARGIN", "1m", "how long after a resharding's old (or aborted) generation closed events keep their content-derived event_id; keep it well under the stream's duplicate_window (2m by default)", durationSetter(func(c *Config, d time.Duration) { c.ReshardIDMargin = d }, time.Second, time.Hour)},
}

func durationSetter(set func(*Config, time.Duration), lo, hi time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d < lo || d > hi {
			return fmt.Errorf("%q must be a duration between %s and %s", v, shortDuration(lo), shortDuration(hi))
		}
		set(c, d)
		return nil
	}
}

// shortDuration writes 24h and 1m, not 24h0m0s and 1m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func validName(v string) bool {
	if v == "" {
		return false
	}
	for _, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
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
var secretVars = map[string]bool{"DISCORD_TOKEN": true, "DRAIN_TOKEN": true, "CONSUL_HTTP_TOKEN": true, "NATS_PASSWORD": true, "NATS_TOKEN": true}

// ParseConfig reads args (flags) over getenv (environment) over defaults. It
// fails with one line per invalid variable, "invalid NAME: reason", in the
// order of vars, so a user fixes them all in one go.
func ParseConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	c := Config{IdentifyWindow: 5 * time.Second, BackoffBase: time.Second, BackoffMax: 60 * time.Second}
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { writeUsage(stderr) } // usage.go: types, defaults, the healthcheck subcommand
	flags := make(map[string]*string, len(vars))
	for _, v := range vars {
		flags[v.env] = fs.String(flagName(v.env), "", fmt.Sprintf("%s (env %s, default %q)", v.help, v.env, v.def))
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	setByFlag := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { setByFlag[f.Name] = true })
	var errs []error
	failed := map[string]bool{}
	for _, v := range vars {
		val := v.def
		if e := getenv(v.env); e != "" {
			val = e
		}
		if setByFlag[flagName(v.env)] {
			val = *flags[v.env]
		}
		if err := v.set(&c, val); err != nil {
			failed[v.env] = true
			errs = append(errs, fmt.Errorf("invalid %s: %w", v.env, hideSecret(v.env, val, err)))
		}
	}
	if !failed["CONSUL_SESSION_TTL"] && !failed["CONSUL_LOCK_DELAY"] {
		errs = append(errs, fencingMargin(c)) // fleet.go; nil when safe
	}
	errs = append(errs, checkpointSettings(c)) // checkpoint.go; nil when consistent
	errs = append(errs, reshardSettings(c))    // reshard_auto.go; nil when consistent
	c.PoolIDSet = getenv("POOL_ID") != "" || setByFlag[flagName("POOL_ID")]
	return c, errors.Join(errs...)
}

// hideSecret keeps a secret variable's value out of the reason it was
// refused for. The setters of secrets never quote their value; this is the
// net under them. The whole reason goes, not just the value: cutting a
// short or blank value out of a sentence would garble it and still hint at
// the value.
func hideSecret(env, val string, reason error) error {
	if !secretVars[env] {
		return reason
	}
	// A Discord token may come as "Bot <token>": the token alone is secret.
	v := strings.TrimSpace(val)
	for _, secret := range []string{v, strings.TrimSpace(strings.TrimPrefix(v, "Bot "))} {
		if secret != "" && strings.Contains(reason.Error(), secret) {
			return errors.New("is not valid (its value is secret, so it is not shown)")
		}
	}
	return reason
}

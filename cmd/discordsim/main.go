// Command discordsim runs the Discord gateway simulator as a standalone
// process for demos and load tests. Point a gateway at the printed REST base
// (…/api/v10) and bot token; compression is chosen by each client through the
// compress query parameter of the websocket URL.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/shardpool/gateway/internal/discordsim"
)

func main() {
	var (
		listen         = flag.String("listen", "127.0.0.1:8090", "listen address")
		token          = flag.String("token", discordsim.DefaultToken, "expected bot token")
		shards         = flag.Int("shards", 1, "recommended shard count returned by /gateway/bot")
		maxConcurrency = flag.Int("max-concurrency", 1, "session_start_limit.max_concurrency")
		sessionStarts  = flag.Int("session-starts", 1000, "session_start_limit.total (and initial remaining)")
		identifyWindow = flag.Duration("identify-window", 5*time.Second, "identify bucket window")
		lenient        = flag.Bool("lenient-identify", false, "accept IDENTIFYs that violate the bucket limit (still recorded)")
		heartbeat      = flag.Duration("heartbeat", 41250*time.Millisecond, "heartbeat_interval sent in HELLO")
		guilds         = flag.Int("guilds", 0, "guilds per shard (unavailable in READY, then GUILD_CREATE each)")
		botGuilds      = flag.Int("bot-guilds", 0, "guilds the bot is in, routed to (guild_id >> 22) % total of every live shard count (replaces -guilds; -rate then counts per guild)")
		maxGuilds      = flag.Int("max-guilds-per-shard", discordsim.DefaultMaxGuildsPerShard, "IDENTIFY of a shard holding more guilds is closed with 4011 (negative: no limit)")
		connDelay      = flag.Duration("conn-delay", 0, "each connection delays each frame by a random time up to this (default 2ms with -bot-guilds; negative: none)")
		members        = flag.Int("members", 0, "members per guild in GUILD_CREATE")
		rate           = flag.Float64("rate", 0, "generated dispatches per second per shard session after READY")
		replay         = flag.Int("replay", 100000, "dispatches kept per session for RESUME")
		queue          = flag.Int("queue", 8192, "per-connection outbound queue before a slow client is dropped")
		ledger         = flag.Int("ledger", -1, "dispatch ledger entries kept (0 = unlimited, -1 = off; unlimited grows without bound under load)")
		statsEvery     = flag.Duration("stats", 10*time.Second, "print stats this often (0 = never)")
		verbose        = flag.Bool("v", false, "log every connection, identify, resume and violation")
	)
	flag.Usage = func() { usage(flag.CommandLine.Output(), *listen, *token) }
	flag.Parse()

	cfg := discordsim.Config{
		Addr:              *listen,
		Token:             *token,
		Shards:            *shards,
		MaxConcurrency:    *maxConcurrency,
		SessionStartTotal: *sessionStarts,
		IdentifyWindow:    *identifyWindow,
		LenientIdentify:   *lenient,
		HeartbeatInterval: *heartbeat,
		GuildsPerShard:    *guilds,
		Guilds:            *botGuilds,
		MaxGuildsPerShard: *maxGuilds,
		ConnDelay:         *connDelay,
		MembersPerGuild:   *members,
		EventRate:         *rate,
		ReplayLimit:       *replay,
		SendQueue:         *queue,
		LedgerLimit:       *ledger,
	}
	if *verbose {
		cfg.Logf = log.Printf
	}
	srv := discordsim.New(cfg)
	if err := srv.Start(); err != nil {
		log.Fatalf("discordsim: %v", err)
	}
	fmt.Printf("discordsim listening\n  REST base: %s\n  gateway:   %s\n  resume:    %s\n  token:     %s\n",
		srv.APIURL(), srv.GatewayURL(), srv.ResumeURL(), *token)
	fmt.Print(gatewaySettings(srv.APIURL(), *token))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	var tick <-chan time.Time
	if *statsEvery > 0 {
		t := time.NewTicker(*statsEvery)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-sig:
			printStats(srv)
			srv.Close()
			return
		case <-tick:
			printStats(srv)
		}
	}
}

func printStats(srv *discordsim.Server) {
	st := srv.Stats()
	log.Printf("conns=%d live=%d sessions=%d/%d identifies=%d resumes=%d dispatches=%d written=%d slow_drops=%d violations=%d starts_left=%d",
		st.Connections, st.LiveConnections, st.LiveSessions, st.Sessions, st.Identifies, st.Resumes,
		st.Dispatches, st.FramesWritten, st.SlowClientDrops, st.Violations, st.SessionStartRemaining)
	if st.Violations > 0 {
		rec := srv.Record()
		from := max(0, len(rec.Violations)-5)
		for _, v := range rec.Violations[from:] {
			log.Printf("  violation %s shard=%d: %s", v.Kind, v.Shard, v.Detail)
		}
	}
}

func usage(w io.Writer, listen, token string) {
	fmt.Fprintf(w, `Usage: discordsim [flags]   (from the repository: go run ./cmd/discordsim [flags])

Serves Discord's REST /api/v10/gateway/bot and the gateway websocket, so that
a gateway runs against it instead of Discord. Give the gateway:
  DISCORD_TOKEN     the token it expects (-token)
  DISCORD_API_URL   its REST base, http://<-listen>/api/v10
  NATS_URL          a NATS server with JetStream (nats-server -js); unset,
                    the gateway runs in local mode (events logged and counted)
It prints them, ready to paste, when it starts. With the defaults:
%s
By default a session gets READY and nothing more: -guilds and -rate make
events flow (for example -shards 2 -guilds 5 -members 3 -rate 20).

Flags:
`, gatewaySettings("http://"+listen+"/api/v10", token))
	flag.PrintDefaults()
}

// gatewaySettings is what a gateway needs to run against the simulator, as
// shell lines to paste where the gateway will run.
func gatewaySettings(apiURL, token string) string {
	return fmt.Sprintf(`
Run a gateway against it (another shell, in the repository):
  export DISCORD_TOKEN='%s'
  export DISCORD_API_URL='%s'
  export NATS_URL=nats://127.0.0.1:4222   # nats-server -js; leave NATS_URL unset for local mode
  export HTTP_HOST=127.0.0.1              # /ready, /status, /metrics on 127.0.0.1:9090
  go build -o bin/gateway ./cmd/gateway && bin/gateway
`, token, apiURL)
}

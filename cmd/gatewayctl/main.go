// Command gatewayctl talks to a running gateway over NATS, as a worker
// does, through the client package: the fleet's plan, the bot's presence,
// a guild's members, and the events as they arrive.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/shardpool/gateway/client"
)

const usage = `gatewayctl talks to the gateway over NATS, as a worker does.

Usage:
  gatewayctl [-nats URL] [-creds FILE] [-timeout D] <command> [arguments]

Commands:
  plan                      the fleet's plan: total_shards, shards_per_pool, pools
                            (a guild's shard is (guild_id >> 22) % total_shards)
  presence [flags]          set the bot's presence on every shard of every instance
                            and for every later IDENTIFY
      -status S             online, dnd, idle, invisible or offline (default online)
      -activity NAME        an activity, e.g. "with shards"
      -type N               the activity's type: 0 playing, 2 listening, 3 watching,
                            4 custom, 5 competing (default 0)
      -afk                  mark the bot AFK
  members [flags] <guild_id>
                            request a guild's members from its shard and print each
                            chunk as it arrives (Discord allows all members of a guild
                            once per 30 s; a second request says when to retry)
      -query Q              usernames starting with Q (default: all members)
      -limit N              at most N members with -query (0: no limit)
      -user ID,...          these members only, instead of -query
      -presences            with their presences (needs GUILD_PRESENCES)
      -json                 print the members' JSON, one per line
  tail <subject>            print events as they arrive on a NATS subject, e.g.
                            events.>, events.member.join, events.dispatch.*
  reshard [flags]           reshard the fleet without downtime (over HTTP, not NATS):
                            the next generation comes up beside the plan in force and
                            takes over once every one of its shards is READY
      -url URL              a gateway instance (default $GATEWAY_URL, else
                            http://127.0.0.1:9090)
      -token T              its DRAIN_TOKEN (default $DRAIN_TOKEN)
      -total N              the new shard count
      -per-pool M           shards per pool of the new generation (default: unchanged)
      -abort                drop the next generation before its cut-over instead

Environment: NATS_URL (default nats://127.0.0.1:4222), NATS_CREDS.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gatewayctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	url := fs.String("nats", envOr("NATS_URL", nats.DefaultURL), "NATS server URL")
	creds := fs.String("creds", os.Getenv("NATS_CREDS"), "NATS credentials file")
	timeout := fs.Duration("timeout", 10*time.Second, "how long a request may take")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	if cmd == "help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	if cmd == "reshard" {
		return exitCode(cmd, reshard(rest, stdout, stderr, *timeout), stderr)
	}
	opts := []nats.Option{nats.Name("gatewayctl")}
	if *creds != "" {
		opts = append(opts, nats.UserCredentials(*creds))
	}
	nc, err := nats.Connect(*url, opts...)
	if err != nil {
		fmt.Fprintf(stderr, "gatewayctl: cannot connect to NATS at %s: %v\n", *url, err)
		return 1
	}
	defer nc.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	c := ctl{c: client.New(nc), nc: nc, out: stdout, timeout: *timeout}
	switch cmd {
	case "plan":
		err = c.plan(ctx)
	case "presence":
		err = c.presence(ctx, rest, stderr)
	case "members":
		err = c.members(ctx, rest, stderr)
	case "tail":
		err = c.tail(ctx, rest)
	default:
		fmt.Fprintf(stderr, "gatewayctl: unknown command %q\n\n", cmd)
		fs.Usage()
		return 2
	}
	return exitCode(cmd, err, stderr)
}

// exitCode reports err and returns the exit status: 2 for a usage error.
func exitCode(cmd string, err error, stderr io.Writer) int {
	var usageErr usageError
	switch {
	case errors.As(err, &usageErr):
		fmt.Fprintf(stderr, "gatewayctl %s: %v (gatewayctl -h explains)\n", cmd, err)
		return 2
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "gatewayctl %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

type ctl struct {
	c       *client.Client
	nc      *nats.Conn
	out     io.Writer
	timeout time.Duration
}

func (c ctl) plan(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	p, err := c.c.Plan(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.out, "total_shards=%d shards_per_pool=%d pools=%d\n", p.TotalShards, p.ShardsPerPool, p.Pools)
	printGenerations(c.out, p)
	return nil
}

func (c ctl) presence(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("presence", flag.ContinueOnError)
	fs.SetOutput(stderr)
	status := fs.String("status", "online", "online, dnd, idle, invisible or offline")
	activity := fs.String("activity", "", "an activity's name")
	typ := fs.Int("type", 0, "the activity's type")
	afk := fs.Bool("afk", false, "AFK")
	if err := fs.Parse(args); err != nil {
		return err
	}
	p := client.Presence{Status: *status, AFK: *afk}
	if *activity != "" {
		p.Activities = []client.Activity{{Name: *activity, Type: *typ}}
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	r, err := c.c.SetPresence(ctx, p)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.out, "presence %s sent on %d shard(s) of the first instance to answer; every instance sends it on its shards\n", *status, r.Shards)
	for _, e := range r.Errors {
		fmt.Fprintf(c.out, "  not sent: %s\n", e)
	}
	return nil
}

func (c ctl) members(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("members", flag.ContinueOnError)
	fs.SetOutput(stderr)
	query := fs.String("query", "", "usernames starting with it")
	limit := fs.Int("limit", 0, "at most this many with -query")
	users := fs.String("user", "", "user ids, comma separated")
	presences := fs.Bool("presences", false, "with presences")
	asJSON := fs.Bool("json", false, "print each member's JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"give one guild id"}
	}
	req := client.AllMembers(fs.Arg(0))
	req.Presences = *presences
	switch {
	case *users != "":
		req.Query, req.Limit, req.UserIDs = nil, nil, strings.Split(*users, ",")
	case *query != "" || *limit != 0:
		req.Query, req.Limit = query, limit
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	total := 0
	for ch, err := range c.c.Members(ctx, req) {
		if err != nil {
			return err
		}
		total += len(ch.Members)
		fmt.Fprintf(c.out, "chunk %d/%d: %d members, %d presences, %d not found (nonce %s)\n",
			ch.ChunkIndex+1, ch.ChunkCount, len(ch.Members), len(ch.Presences), len(ch.NotFound), ch.Nonce)
		if *asJSON {
			for _, m := range ch.Members {
				fmt.Fprintf(c.out, "%s\n", m)
			}
		}
	}
	fmt.Fprintf(c.out, "%d members\n", total)
	return nil
}

// tail prints each event on subject as one line: time, subject, type,
// shard, ids, and the size of its data.
func (c ctl) tail(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return usageError{"give one subject, e.g. events.>"}
	}
	msgs := make(chan *nats.Msg, 256)
	sub, err := c.nc.ChanSubscribe(args[0], msgs)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	if err := c.nc.FlushTimeout(c.timeout); err != nil {
		return err
	}
	fmt.Fprintf(c.out, "tailing %s (Ctrl-C ends)\n", args[0])
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-msgs:
			fmt.Fprintln(c.out, pretty(m))
		}
	}
}

func pretty(m *nats.Msg) string {
	var e client.Envelope
	if err := json.Unmarshal(m.Data, &e); err != nil || e.EventType == "" {
		return fmt.Sprintf("%s %s %s", time.Now().Format("15:04:05.000"), m.Subject, m.Data)
	}
	at := time.UnixMilli(e.Timestamp).Format("15:04:05.000")
	return fmt.Sprintf("%s %-28s %-20s shard=%d guild=%s channel=%s user=%s data=%dB",
		at, m.Subject, e.EventType, e.ShardID, or(e.GuildID), or(e.ChannelID), or(e.UserID), len(e.Data))
}

func or(p *string) string {
	if p == nil {
		return "-"
	}
	return *p
}

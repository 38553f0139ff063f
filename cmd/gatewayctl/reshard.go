package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/shardpool/gateway/client"
)

// reshard is gatewayctl reshard: POST /reshard (or DELETE with -abort) to
// one gateway instance, which writes the next generation in Consul for the
// whole fleet.
func reshard(args []string, stdout, stderr io.Writer, timeout time.Duration) error {
	fs := flag.NewFlagSet("reshard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", envOr("GATEWAY_URL", "http://127.0.0.1:9090"), "a gateway instance's HTTP address")
	token := fs.String("token", os.Getenv("DRAIN_TOKEN"), "the instance's DRAIN_TOKEN")
	total := fs.Int("total", 0, "the new shard count")
	perPool := fs.Int("per-pool", 0, "shards per pool of the new generation (0: unchanged)")
	abort := fs.Bool("abort", false, "drop the next generation before its cut-over")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !*abort && *total < 1 {
		return usageError{"-total N (N >= 1) or -abort is required"}
	}
	if *abort && *total != 0 {
		return usageError{"-abort takes no -total"}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := &http.Client{Timeout: timeout}
	var p client.Plan
	var err error
	if *abort {
		p, err = client.AbortReshard(ctx, hc, *url, *token)
	} else {
		p, err = client.Reshard(ctx, hc, *url, *token, *total, *perPool)
	}
	if err != nil {
		return err
	}
	printGenerations(stdout, p)
	return nil
}

// printGenerations prints one line per generation of the plan.
func printGenerations(out io.Writer, p client.Plan) {
	for _, g := range p.Generations {
		fmt.Fprintf(out, "generation %d %s: total_shards=%d shards_per_pool=%d pools claimed %d/%d, shards READY %d/%d, created %s\n",
			g.Generation, g.State, g.TotalShards, g.ShardsPerPool, g.PoolsClaimed, g.Pools, g.ShardsReady, g.TotalShards,
			g.CreatedAt.Format(time.RFC3339))
	}
}

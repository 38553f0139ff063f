// Command gateway runs a Discord gateway shard pool that publishes the
// dispatches its shards receive to NATS JetStream.
//
//	gateway [flags]            run (configuration from the environment or flags)
//	gateway healthcheck        GET /health on the local port; exit 0 or 1
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// demo, when set by a build with the demo tag, starts the embedded Discord
// simulator and NATS server and points the configuration at them. The
// production build has neither.
var demo func(getenv func(string) string) (env func(string) string, stop func())

func main() {
	os.Exit(realMain())
}

func realMain() int {
	getenv := os.Getenv
	if demo != nil {
		var stopDemo func()
		getenv, stopDemo = demo(getenv)
		defer stopDemo()
	}
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		return healthcheck(getenv)
	}
	m := NewMain()
	if err := m.ParseFlags(os.Args[1:], getenv); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		return 2
	}
	// SIGTERM and SIGINT start a drain; Run returns when it is done.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := m.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		return 1
	}
	return 0
}

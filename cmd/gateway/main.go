// Command gateway runs a Discord gateway shard pool that publishes the
// dispatches its shards receive to NATS JetStream.
//
//	gateway [flags]            run (configuration from the environment or flags)
//	gateway healthcheck        GET /health on the local port; exit 0 or 1
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-kit/log/level"
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
		if errors.Is(err, flag.ErrHelp) { // -h: the usage is printed; asked for, so no failure
			return 0
		}
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
	m.logStopped(context.Cause(ctx))
	return 0
}

// logStopped ends the log with how the run ended, so that the exit 0 of a
// Ctrl-C reads as the clean stop it is (and a drain that missed acks does
// not).
func (m *Main) logStopped(cause error) {
	if m.drainedClean {
		level.Info(m.logger).Log("msg", "stopped cleanly: pool drained, every event acked; exit 0", "cause", cause)
		return
	}
	level.Warn(m.logger).Log("msg", "stopped without a clean drain (see above); exit 0", "cause", cause)
}

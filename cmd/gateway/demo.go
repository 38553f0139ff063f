//go:build demo

package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/shardpool/gateway/discovery/consultest"
	"github.com/shardpool/gateway/internal/discordsim"
)

// The demo build (go run -tags demo ./cmd/gateway, or make run) runs the real
// gateway wiring against an in-process Discord simulator and an embedded
// NATS JetStream server, and prints a tally of published events per subject.
func init() { demo = startDemo }

func startDemo(getenv func(string) string) (func(string) string, func()) {
	giveBackTerminal := takeTerminal()
	shards := 4
	sim := discordsim.New(discordsim.Config{
		Shards:            shards,
		MaxConcurrency:    shards,
		GuildsPerShard:    20,
		MembersPerGuild:   5,
		EventRate:         50,
		HeartbeatInterval: 10 * time.Second,
	})
	if err := sim.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "demo: discord simulator:", err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "gateway-demo-nats-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoSigs: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo: nats:", err)
		os.Exit(1)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		fmt.Fprintln(os.Stderr, "demo: nats did not start")
		os.Exit(1)
	}
	stopTally := tally(ns.ClientURL())
	fmt.Fprintf(os.Stderr, "demo: Discord simulator at %s, NATS JetStream at %s; open http://127.0.0.1:%s/ready, /status and /metrics\n",
		sim.APIURL(), ns.ClientURL(), or(getenv("HTTP_PORT"), "9090"))

	defaults := map[string]string{
		"DISCORD_TOKEN":   discordsim.DefaultToken,
		"DISCORD_API_URL": sim.APIURL(),
		"NATS_URL":        ns.ClientURL(),
		"HTTP_HOST":       "127.0.0.1",
	}
	stopConsul := func() {}
	if v := getenv("DEMO_CONSUL"); v != "" && v != "0" {
		defaults["CONSUL_HTTP_ADDR"], stopConsul = startDemoConsul()
	}
	env := func(k string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return defaults[k]
	}
	return env, func() {
		stopConsul()
		stopTally()
		ns.Shutdown()
		sim.Close()
		os.RemoveAll(dir)
		giveBackTerminal()
	}
}

// startDemoConsul starts a Consul dev agent (make run CONSUL=1) as the tests
// do, in a process group of its own: the Ctrl-C that drains the gateway does
// not reach it, so the hand-off and the deregistration still find it. The
// gateway then registers, claims its pool and shows it in /status.
func startDemoConsul() (addr string, stop func()) {
	agent, err := consultest.StartAgentWith(ownProcessGroup())
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo: consul:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "demo: Consul dev agent at http://%s (UI: http://%s/ui): the gateway registers there and claims its pool; /status shows the discovery block\n",
		agent.Addr, agent.Addr)
	return agent.Addr, agent.Stop
}

// tally subscribes to everything the gateway publishes and prints counts per
// subject every five seconds.
func tally(url string) func() {
	nc, err := nats.Connect(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo: tally:", err)
		return func() {}
	}
	var (
		mu     sync.Mutex
		counts = map[string]int{}
	)
	for _, subj := range []string{"events.>", "commands.>"} {
		nc.Subscribe(subj, func(m *nats.Msg) {
			mu.Lock()
			counts[m.Subject]++
			mu.Unlock()
		})
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			mu.Lock()
			var parts []string
			for s, n := range counts {
				parts = append(parts, fmt.Sprintf("%s=%d", s, n))
			}
			mu.Unlock()
			sort.Strings(parts)
			fmt.Fprintf(os.Stderr, "demo: published so far: %s\n", strings.Join(parts, " "))
		}
	}()
	return func() {
		close(done)
		nc.Close()
	}
}

func or(v, def string) string {
	if v != "" {
		return v
	}
	return def
}

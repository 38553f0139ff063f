package main

import (
	"bytes"
	"errors"
	"flag"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shardpool/gateway/internal/discordsim"
	"github.com/shardpool/gateway/internal/natstest"
)

// buildGateway builds the production binary for a test that runs it as a
// user does.
func buildGateway(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "gateway")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.ExitCode()
	}
	t.Fatal(err)
	return -1
}

func TestHelpExitsZeroWithUsageSubcommandPrecedenceAndTypes(t *testing.T) {
	bin := buildGateway(t)
	for _, arg := range []string{"-h", "-help", "--help"} {
		out, err := exec.Command(bin, arg).CombinedOutput()
		if code := exitCode(t, err); code != 0 {
			t.Errorf("gateway %s: exit %d, want 0\n%s", arg, code, out)
		}
		for _, want := range []string{
			"Usage:\n  gateway [flags]",
			"\n  gateway healthcheck ",
			"a flag wins over its variable",
			"\n  -discord-token string   (env DISCORD_TOKEN, required)\n",
			"\n  -total-shards int|auto   (env TOTAL_SHARDS, default auto)\n",
			"\n  -http-port int   (env HTTP_PORT, default 9090)\n",
			"\n  -drain-timeout duration   (env DRAIN_TIMEOUT, default 20s)\n",
			"\n  -nats-url string   (env NATS_URL, unset by default)\n",
		} {
			if !bytes.Contains(out, []byte(want)) {
				t.Errorf("gateway %s does not say %q:\n%s", arg, want, out)
			}
		}
		if bytes.Contains(out, []byte("help requested")) {
			t.Errorf("gateway %s reports the help it was asked for as an error:\n%s", arg, out)
		}
	}
}

func TestUsageListsEverySettingOnce(t *testing.T) {
	var out bytes.Buffer
	if _, err := ParseConfig([]string{"-h"}, func(string) string { return "" }, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("ParseConfig(-h) = %v, want flag.ErrHelp", err)
	}
	for _, v := range vars {
		line := "\n  -" + flagName(v.env) + " " + valueType(v) + "   (env " + v.env + ", "
		if n := strings.Count(out.String(), line); n != 1 {
			t.Errorf("%s: %d usage lines starting %q, want 1", v.env, n, line)
		}
	}
}

// The table has no type column; the usage's type is what each setter takes.
func TestValueTypeIsWhatTheSetterAccepts(t *testing.T) {
	want := map[string]string{
		"DISCORD_TOKEN":           "string",
		"DISCORD_API_URL":         "string",
		"TOTAL_SHARDS":            "int|auto",
		"POOL_ID":                 "int",
		"HTTP_PORT":               "int",
		"BUFFER_MAX_BYTES":        "int",
		"LOG_LEVEL":               "string",
		"STREAM_STORAGE":          "string",
		"CONSUL_HTTP_ADDR":        "string",
		"DRAIN_TIMEOUT":           "duration",
		"CONSUL_LOCK_DELAY":       "duration",
		"CONSUL_DEREGISTER_AFTER": "duration",
	}
	for _, v := range vars {
		if w, ok := want[v.env]; ok {
			if got := valueType(v); got != w {
				t.Errorf("%s: type %s, want %s", v.env, got, w)
			}
		}
	}
}

// Ctrl-C on the binary (what make run execs): a drain, exit 0, and a last
// line that says the stop was clean.
func TestSIGINTStopsCleanlyWithExitZero(t *testing.T) {
	bin := buildGateway(t)
	sim := discordsim.New(discordsim.Config{Shards: 2, MaxConcurrency: 2, EventRate: 100})
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	ns := natstest.Run(t)
	defer ns.Shutdown()

	port := strconv.Itoa(freePort(t))
	var logs bytes.Buffer
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"DISCORD_TOKEN="+discordsim.DefaultToken, "DISCORD_API_URL="+sim.APIURL(), "NATS_URL="+ns.ClientURL(),
		"HTTP_HOST=127.0.0.1", "HTTP_PORT="+port, "DRAIN_TIMEOUT=10s")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if !waitReady("http://127.0.0.1:"+port+"/ready", 30*time.Second) {
		cmd.Process.Kill()
		t.Fatalf("never ready:\n%s", logs.String())
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if code := exitCode(t, err); code != 0 {
			t.Fatalf("exit %d after SIGINT, want 0\n%s", code, logs.String())
		}
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("still running 15 s after SIGINT (DRAIN_TIMEOUT 10s)\n%s", logs.String())
	}
	// The NATS client's closing callbacks may still log after it.
	out := logs.String()
	stopped := strings.Index(out, `msg="stopped cleanly: pool drained, every event acked; exit 0"`)
	if stopped < 0 || stopped < strings.Index(out, `msg="pool drained"`) {
		t.Fatalf("no clean stop logged after the drain:\n%s", out)
	}
	line, _, _ := strings.Cut(out[strings.LastIndex(out[:stopped], "\n")+1:], "\n")
	for _, want := range []string{"level=info", `cause="interrupt signal received"`} {
		if !strings.Contains(line, want) {
			t.Errorf("%q lacks %s", line, want)
		}
	}
}

func waitReady(url string, within time.Duration) bool {
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
	}
	return false
}

package main

import (
	"bytes"
	"net"
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

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestSIGTERMDrainsThenExitsZero runs the real binary, as Nomad would.
func TestSIGTERMDrainsThenExitsZero(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "gateway")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	sim := discordsim.New(discordsim.Config{Shards: 2, MaxConcurrency: 2, EventRate: 100})
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	ns := natstest.Run(t)
	defer ns.Shutdown()

	port := freePort(t)
	var logs bytes.Buffer
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"DISCORD_TOKEN="+discordsim.DefaultToken, "DISCORD_API_URL="+sim.APIURL(), "NATS_URL="+ns.ClientURL(),
		"HTTP_HOST=127.0.0.1", "HTTP_PORT="+strconv.Itoa(port), "DRAIN_TIMEOUT=10s")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	ready := false
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && !ready; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/ready")
		if err == nil {
			ready = resp.StatusCode == 200
			resp.Body.Close()
		}
	}
	if !ready {
		cmd.Process.Kill()
		t.Fatalf("gateway never became ready:\n%s", logs.String())
	}
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("still running 15 s after SIGTERM (DRAIN_TIMEOUT 10s)")
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("exit took %v, beyond DRAIN_TIMEOUT", took)
	}
	if !strings.Contains(logs.String(), "pool drained") {
		t.Fatalf("no drain in the log:\n%s", logs.String())
	}
	for _, c := range sim.Record().ClientCloses {
		if c.Code == 1000 || c.Code == 1001 || c.Code == 0 {
			t.Fatalf("shard %d closed with %d on SIGTERM; the session must stay resumable", c.Shard, c.Code)
		}
	}
	if n := len(sim.Record().ClientCloses); n != 2 {
		t.Fatalf("%d client closes recorded, want 2", n)
	}
}

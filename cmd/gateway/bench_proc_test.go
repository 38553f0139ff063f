package main

// The gateway as a process of its own, for the benchmark phases that ask
// what only such a process can tell: its resident memory, its goroutines
// and its CPU time, read from /proc and its /metrics, with nothing of the
// simulator or the NATS server (which stay in the test process) mixed in.

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/shardpool/gateway/internal/discordsim"
)

type benchProc struct {
	t         *testing.T
	cmd       *exec.Cmd
	port      int
	pprofPort int // net/http/pprof of the benchpprof build
	logPath   string
	exited    chan struct{}
}

// buildBenchGateway builds the gateway binary with its pprof endpoint
// (bench_pprof.go).
func buildBenchGateway(t *testing.T) string {
	bin := filepath.Join(t.TempDir(), "gateway-bench")
	if out, err := exec.Command("go", "build", "-tags", "benchpprof", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// startBenchProc runs the gateway binary bin with env (plus an HTTP port
// of its own) and returns once /health answers.
func startBenchProc(t *testing.T, bin string, env map[string]string) *benchProc {
	p := &benchProc{t: t, port: freePort(t), pprofPort: freePort(t), exited: make(chan struct{})}
	p.logPath = filepath.Join(t.TempDir(), "gateway.log")
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin)
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HTTP_HOST=127.0.0.1", "HTTP_PORT=" + strconv.Itoa(p.port), "LOG_LEVEL=warn",
		"BENCH_PPROF_ADDR=127.0.0.1:" + strconv.Itoa(p.pprofPort)}
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = childAttr()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); logf.Close(); close(p.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := http.Get(p.url("/health")); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("gateway exited at start:\n%s", p.logTail())
		default:
		}
		if time.Now().After(deadline) {
			p.kill()
			t.Fatalf("gateway: no /health within 30s:\n%s", p.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *benchProc) url(path string) string {
	return "http://127.0.0.1:" + strconv.Itoa(p.port) + path
}

// profile writes a CPU profile of the next d to path.
func (p *benchProc) profile(d time.Duration, path string) error {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", p.pprofPort, int(d.Seconds())))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile: %s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return err
}

// stop drains the gateway (SIGTERM) and waits for it, killing it after
// the drain's deadline.
func (p *benchProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.kill()
	}
}

func (p *benchProc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

func (p *benchProc) logTail() string {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// cpu is the process's user + system CPU time so far.
func (p *benchProc) cpu() time.Duration {
	user, sys := p.cpuSplit()
	return user + sys
}

// cpuSplit is the process's user and system CPU time so far, from
// /proc/<pid>/stat.
func (p *benchProc) cpuSplit() (user, sys time.Duration) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const tick = 10 * time.Millisecond // USER_HZ = 100
	return time.Duration(utime) * tick, time.Duration(stime) * tick
}

// memory returns a /proc/<pid>/status size (VmRSS, VmHWM) in bytes.
func (p *benchProc) memory(field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb * 1024
		}
	}
	return 0
}

// metrics scrapes /metrics and returns each sample's value summed over the
// series of its metric (counters and gauges).
func (p *benchProc) metrics() (map[string]float64, error) {
	resp, err := http.Get(p.url("/metrics"))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			switch {
			case m.Counter != nil:
				out[name] += m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[name] += m.GetGauge().GetValue()
			}
		}
	}
	return out, nil
}

// gatewayEnv is the environment of a benchmark gateway process: shards
// shards in one pool, the simulator as Discord, JetStream at natsURL.
func gatewayEnv(simAPI, natsURL string, shards int) map[string]string {
	return map[string]string{
		"DISCORD_TOKEN": discordsim.DefaultToken, "DISCORD_API_URL": simAPI, "NATS_URL": natsURL,
		"TOTAL_SHARDS": strconv.Itoa(shards), "SHARDS_PER_POOL": strconv.Itoa(shards), "POOL_ID": "0",
	}
}

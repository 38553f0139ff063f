package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/shardpool/gateway/discovery"
	"github.com/shardpool/gateway/discovery/consultest"
	"github.com/shardpool/gateway/internal/discordsim"
	"github.com/shardpool/gateway/internal/natstest"
	"github.com/shardpool/gateway/internal/tcpproxy"
	"github.com/shardpool/gateway/service"
)

// procFleet is gateway instances as real processes (the binary built from
// ./cmd/gateway), each reaching Consul through a proxy of its own that the
// test can partition, and the simulator, NATS and Consul they share. The
// simulator names every connection after the process that opened it.
type procFleet struct {
	t      *testing.T
	bin    string
	dir    string // logs
	sim    *discordsim.Server
	ns     *natstest.Server
	consul *consultest.Agent
	env    map[string]string // every instance's, but CONSUL_HTTP_ADDR and HTTP_PORT

	mu    sync.Mutex
	procs []*gwProc // every process started, in order
	seq   int
}

// gwProc is one gateway process.
type gwProc struct {
	name    string
	port    int
	proxy   *tcpproxy.Proxy
	cmd     *exec.Cmd
	pid     int
	logPath string
	started time.Time
	exited  chan struct{}
	exitErr error // set before exited closes

	mu      sync.Mutex
	stopped bool // SIGSTOP without SIGCONT yet
	killed  bool
	gone    bool // killed, or exited
	leaving bool // told to drain and exit
}

// expectExit marks the process as one the test stops (a drain, SIGTERM).
func (p *gwProc) expectExit() {
	p.mu.Lock()
	p.leaving = true
	p.mu.Unlock()
}

// exitedUnasked reports whether the process exited without being killed
// or told to leave.
func (p *gwProc) exitedUnasked() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gone && !p.killed && !p.leaving
}

// buildFleetBinary builds the gateway without the race detector by default:
// four race-instrumented processes next to a race-instrumented test do not
// fit two cores. FLEET_RACE=1 builds it with -race.
func buildFleetBinary(t *testing.T) string {
	t.Helper()
	if os.Getenv("FLEET_RACE") == "" {
		return buildGateway(t) // the same build as the CLI tests: one link, cached packages
	}
	bin := filepath.Join(t.TempDir(), "gateway-race")
	if out, err := exec.Command("go", "build", "-race", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build -race: %v\n%s", err, out)
	}
	return bin
}

// label is the simulator's ConnLabel: the name of the gateway process that
// owns the client end of the websocket connection, found through /proc
// (the socket's inode, then the process holding it), or "?".
func (f *procFleet) label(r *http.Request) string {
	_, port, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return "?"
	}
	local, _ := strconv.Atoi(port)
	_, simPort, _ := net.SplitHostPort(r.Host)
	remote, _ := strconv.Atoi(simPort)
	inode := socketInode(local, remote)
	if inode == "" {
		return "?"
	}
	f.mu.Lock()
	procs := append([]*gwProc(nil), f.procs...)
	f.mu.Unlock()
	for _, p := range procs {
		if p.holds(inode) {
			return p.name
		}
	}
	return "?"
}

// socketInode finds the inode of the TCP socket whose local port is local
// and remote port remote, from /proc/net/tcp and tcp6.
func socketInode(local, remote int) string {
	want := fmt.Sprintf(":%04X", local)
	wantRemote := fmt.Sprintf(":%04X", remote)
	for _, path := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || !strings.HasSuffix(fields[1], want) || !strings.HasSuffix(fields[2], wantRemote) {
				continue
			}
			return fields[9]
		}
	}
	return ""
}

// holds reports whether the process has socket inode open.
func (p *gwProc) holds(inode string) bool {
	dir := fmt.Sprintf("/proc/%d/fd", p.pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	want := "socket:[" + inode + "]"
	for _, e := range entries {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && l == want {
			return true
		}
	}
	return false
}

// start starts one more gateway process, its Consul traffic through a proxy
// of its own, and returns once its HTTP server answers.
func (f *procFleet) start() *gwProc {
	t := f.t
	t.Helper()
	proxy, err := tcpproxy.Start(f.consul.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	return f.spawn(proxy, func(string) bool { return true }, "CONSUL_HTTP_ADDR="+proxy.Addr())
}

// spawn starts one gateway process with f.env's variables that keep
// passes, then extra, and returns once its HTTP server answers.
func (f *procFleet) spawn(proxy *tcpproxy.Proxy, keep func(name string) bool, extra ...string) *gwProc {
	t := f.t
	t.Helper()
	f.mu.Lock()
	f.seq++
	p := &gwProc{name: "gw" + strconv.Itoa(f.seq), port: freePort(t), proxy: proxy, exited: make(chan struct{})}
	f.mu.Unlock()
	p.logPath = filepath.Join(f.dir, p.name+".log")
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(f.bin)
	for k, v := range f.env {
		if keep(k) {
			p.cmd.Env = append(p.cmd.Env, k+"="+v)
		}
	}
	p.cmd.Env = append(p.cmd.Env, extra...)
	p.cmd.Env = append(p.cmd.Env, "HTTP_PORT="+strconv.Itoa(p.port), "PATH="+os.Getenv("PATH"))
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = childAttr()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.pid, p.started = p.cmd.Process.Pid, time.Now()
	f.mu.Lock()
	f.procs = append(f.procs, p)
	f.mu.Unlock()
	go func() {
		p.exitErr = p.cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.gone = true
		p.mu.Unlock()
		close(p.exited)
	}()
	t.Cleanup(func() { p.signal(syscall.SIGCONT); p.signal(syscall.SIGKILL); <-p.exited })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _, err := p.get("/health"); err == nil && code == http.StatusOK {
			return p
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited at start: %v\n%s", p.name, p.exitErr, p.logTail(40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no /health within 30s\n%s", p.name, p.logTail(40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// live returns the processes that have not exited and were not killed.
func (f *procFleet) live() []*gwProc {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*gwProc
	for _, p := range f.procs {
		if !p.isGone() {
			out = append(out, p)
		}
	}
	return out
}

func (p *gwProc) isGone() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gone || p.killed
}

func (p *gwProc) isLeaving() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.leaving
}

func (p *gwProc) isStopped() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopped
}

// signal sends sig and keeps track of SIGSTOP, SIGCONT and SIGKILL.
func (p *gwProc) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gone {
		return
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return
	}
	switch sig {
	case syscall.SIGSTOP:
		p.stopped = true
	case syscall.SIGCONT:
		p.stopped = false
	case syscall.SIGKILL:
		p.killed = true
	}
}

var fleetHTTP = &http.Client{Timeout: 3 * time.Second}

func (p *gwProc) get(path string) (int, []byte, error) {
	return p.do("GET", path, fleetHTTP)
}

func (p *gwProc) do(method, path string, c *http.Client) (int, []byte, error) {
	req, _ := http.NewRequest(method, "http://127.0.0.1:"+strconv.Itoa(p.port)+path, nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// status is the process's /status, or false when it does not answer (it is
// stopped, gone, or busy).
func (p *gwProc) status() (service.Status, bool) {
	if p.isGone() || p.isStopped() {
		return service.Status{}, false
	}
	code, b, err := p.get("/status")
	var st service.Status
	if err != nil || code != http.StatusOK || json.Unmarshal(b, &st) != nil {
		return st, false
	}
	return st, true
}

func (p *gwProc) role() string {
	st, ok := p.status()
	if !ok || st.Discovery == nil {
		return ""
	}
	return st.Discovery.Role
}

// procUsage is what a process's /metrics says about its resources.
type procUsage struct {
	goroutines int
	heap       float64 // go_memstats_heap_alloc_bytes, lowest of a few samples
	rss        float64 // process_resident_memory_bytes
	role       string
	shards     int
}

func (u procUsage) String() string {
	return fmt.Sprintf("%s (%d shards): %d goroutines, heap %s, rss %s", u.role, u.shards, u.goroutines,
		mib(int64(u.heap)), mib(int64(u.rss)))
}

// usage samples /metrics for two seconds: the heap in use swings with the
// garbage collector's cycle, its low point is nearest to what is live.
func (p *gwProc) usage() (procUsage, error) {
	var u procUsage
	for i := 0; i < 10; i++ {
		code, b, err := p.get("/metrics")
		if err != nil || code != http.StatusOK {
			return u, fmt.Errorf("%s /metrics: %d %v", p.name, code, err)
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		families, err := parser.TextToMetricFamilies(bytes.NewReader(b))
		if err != nil {
			return u, err
		}
		gauge := func(name string) float64 {
			if f := families[name]; f != nil && len(f.GetMetric()) > 0 {
				return f.GetMetric()[0].GetGauge().GetValue()
			}
			return 0
		}
		heap := gauge("go_memstats_heap_alloc_bytes")
		if i == 0 || heap < u.heap {
			u.heap = heap
		}
		u.goroutines = int(gauge("go_goroutines"))
		u.rss = gauge("process_resident_memory_bytes")
		time.Sleep(200 * time.Millisecond)
	}
	st, ok := p.status()
	if !ok || st.Discovery == nil {
		return u, fmt.Errorf("%s /status does not answer", p.name)
	}
	u.role, u.shards = st.Discovery.Role, len(st.Shards)
	return u, nil
}

func (p *gwProc) logTail(n int) string {
	b, _ := os.ReadFile(p.logPath)
	return tail(string(b), n)
}

// fleetShape is who runs what, as the instances' /status say.
type fleetShape struct {
	owners  map[int]*gwProc // pool → owner whose shards are all ready
	spares  []*gwProc
	byShard map[int]*gwProc // shard → the instance running it ready
	acked   map[int]int64   // shard → last acked seq on that instance
	buffer  int             // events buffered across the fleet
}

func (f *procFleet) shape() fleetShape {
	s := fleetShape{owners: map[int]*gwProc{}, byShard: map[int]*gwProc{}, acked: map[int]int64{}}
	for _, p := range f.live() {
		st, ok := p.status()
		if !ok || st.Discovery == nil {
			continue
		}
		s.buffer += st.Publish.BufferEvents
		switch st.Discovery.Role {
		case discovery.RoleSpare:
			s.spares = append(s.spares, p)
		case discovery.RoleOwner:
			ready := len(st.Shards) > 0
			for _, sh := range st.Shards {
				if sh.State != "ready" {
					ready = false
					continue
				}
				s.byShard[sh.ID] = p
				s.acked[sh.ID] = sh.LastAckedSeq
			}
			if ready {
				s.owners[st.PoolID] = p
			}
		}
	}
	return s
}

// Package consultest runs a real Consul agent (consul agent -dev, in memory)
// on free loopback ports for tests, as net/http/httptest runs servers.
//
// The binary is $CONSUL_BIN, else .tools/bin/consul under the module root
// (make consul builds it), else consul on PATH. Without one the test fails:
// the tests that need Consul are part of the suite, not optional.
package consultest

import (
	"bytes"
	"errors"
	"fmt"
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

	"github.com/hashicorp/consul/api"
)

// Agent is a running consul agent -dev.
type Agent struct {
	// Addr is the HTTP API address, host:port.
	Addr string
	// Node is the agent's node name.
	Node string

	bin    string
	args   []string
	attr   *syscall.SysProcAttr
	mu     sync.Mutex
	cmd    *exec.Cmd
	out    *lockedBuffer
	exited chan struct{}
}

// Binary finds the consul binary.
func Binary() (string, error) {
	if b := os.Getenv("CONSUL_BIN"); b != "" {
		if _, err := os.Stat(b); err != nil {
			return "", fmt.Errorf("CONSUL_BIN=%s: %w", b, err)
		}
		return b, nil
	}
	if root, err := moduleRoot(); err == nil {
		b := filepath.Join(root, ".tools", "bin", "consul")
		if _, err := os.Stat(b); err == nil {
			return b, nil
		}
	}
	if b, err := exec.LookPath("consul"); err == nil {
		return b, nil
	}
	return "", errors.New("no consul binary: run `make consul` (builds .tools/bin/consul), or set CONSUL_BIN")
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Start starts an agent for the test and stops it when the test ends.
func Start(tb testing.TB) *Agent {
	tb.Helper()
	a, err := StartAgent()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(a.Stop)
	return a
}

// StartAgent starts an agent; the caller stops it (TestMain).
func StartAgent() (*Agent, error) { return StartAgentWith(nil) }

// StartAgentWith starts an agent with attr as its process attributes; the
// caller stops it. The demo (make run CONSUL=1) puts the agent in a process
// group of its own, so that the terminal's Ctrl-C drains the gateway while
// Consul is still there to take its hand-off and deregistration.
func StartAgentWith(attr *syscall.SysProcAttr) (*Agent, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	// A free port can be taken by another process between the probe and
	// the agent's bind (other test packages start agents too): retry with
	// new ports.
	var last error
	for attempt := 0; attempt < 5; attempt++ {
		ports, err := freePorts(4)
		if err != nil {
			return nil, err
		}
		a := &Agent{
			Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])),
			Node: "consultest-" + strconv.Itoa(ports[0]),
			bin:  bin,
			attr: attr,
		}
		a.args = []string{"agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1",
			"-http-port", strconv.Itoa(ports[0]), "-serf-lan-port", strconv.Itoa(ports[1]),
			"-serf-wan-port", strconv.Itoa(ports[2]), "-server-port", strconv.Itoa(ports[3]),
			"-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1",
			"-node", a.Node, "-disable-host-node-id", "-log-level", "warn"}
		if last = a.start(); last == nil {
			return a, nil
		}
	}
	return nil, last
}

// Restart starts the agent again on the same ports, with an empty state (a
// dev agent keeps nothing).
func (a *Agent) Restart() error {
	a.Stop()
	return a.start()
}

func (a *Agent) start() error {
	a.mu.Lock()
	a.out = &lockedBuffer{}
	cmd := exec.Command(a.bin, a.args...)
	cmd.Stdout, cmd.Stderr = a.out, a.out
	cmd.SysProcAttr = a.attr
	if err := cmd.Start(); err != nil {
		a.mu.Unlock()
		return fmt.Errorf("start consul: %w", err)
	}
	a.cmd = cmd
	exited := make(chan struct{})
	a.exited = exited
	a.mu.Unlock()
	go func() {
		cmd.Wait()
		close(exited)
	}()
	if err := a.waitReady(60 * time.Second); err != nil {
		a.Stop()
		return fmt.Errorf("consul agent not ready: %w\n%s", err, a.Output())
	}
	return nil
}

// waitReady waits for a leader and for the node's serfHealth check to pass:
// sessions cannot be created before.
func (a *Agent) waitReady(timeout time.Duration) error {
	c := a.Client()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-a.exited:
			return errors.New("consul exited")
		default:
		}
		leader, err := c.Status().Leader()
		if err == nil && leader != "" {
			checks, _, err := c.Health().Node(a.Node, nil)
			if err == nil {
				for _, ch := range checks {
					if ch.CheckID == "serfHealth" && ch.Status == api.HealthPassing {
						return nil
					}
				}
				err = errors.New("serfHealth not passing yet")
			}
			last = err
		} else if err != nil {
			last = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("timed out: %v", last)
}

// Client returns an API client for the agent.
func (a *Agent) Client() *api.Client {
	cfg := api.DefaultConfig()
	cfg.Address = a.Addr
	cfg.Token = ""
	c, err := api.NewClient(cfg)
	if err != nil {
		panic(err)
	}
	return c
}

// Stop kills the agent (idempotent).
func (a *Agent) Stop() {
	a.mu.Lock()
	cmd, exited := a.cmd, a.exited
	a.cmd = nil
	a.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-exited
	// The port must refuse connections before Stop returns.
	for i := 0; i < 100; i++ {
		resp, err := http.Get("http://" + a.Addr + "/v1/status/leader")
		if err != nil {
			return
		}
		resp.Body.Close()
		time.Sleep(20 * time.Millisecond)
	}
}

// Output returns what the agent logged.
func (a *Agent) Output() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.out == nil {
		return ""
	}
	return a.out.String()
}

func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		port := l.Addr().(*net.TCPAddr).Port
		// Serf also needs the UDP port.
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		u.Close()
		ports = append(ports, port)
	}
	return ports, nil
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.TrimSpace(b.buf.String())
}

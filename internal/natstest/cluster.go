package natstest

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// clusterName names every test cluster; clusters of parallel tests never
// meet, as their routes differ.
const clusterName = "natstest"

// Cluster is a JetStream cluster: servers routed to each other on loopback.
type Cluster struct {
	// Servers are the nodes, n1, n2, ... by server name, each with its own
	// ports and store directory; shut one down to take it out.
	Servers []*Server
	tb      testing.TB
}

// RunCluster starts n JetStream servers routed to each other and waits until
// they have elected a meta leader; they shut down when the test ends. opts
// apply to every node, but a node's ports and store directory are its own.
func RunCluster(tb testing.TB, n int, opts ...Option) *Cluster {
	tb.Helper()
	if n < 1 {
		tb.Fatalf("natstest: a cluster of %d servers", n)
	}
	if !options(opts).JetStream {
		tb.Fatal("natstest: a cluster without JetStream")
	}
	// A route port found free can be taken before its node binds it (other
	// test packages start servers too): try again with new ports.
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		var c *Cluster
		if c, err = startCluster(tb, n, opts); err == nil {
			c.WaitReady()
			return c
		}
	}
	tb.Fatalf("natstest: cluster of %d: %v", n, err)
	return nil
}

func startCluster(tb testing.TB, n int, opts []Option) (*Cluster, error) {
	ports, err := freePorts(n)
	if err != nil {
		return nil, err
	}
	// Every node lists every route, its own too (nats-server skips it): the
	// number of routes is the meta group's expected size.
	var routes []*url.URL
	for _, p := range ports {
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(p))})
	}
	c := &Cluster{tb: tb}
	for i, p := range ports {
		o := options(opts)
		o.ServerName = "n" + strconv.Itoa(i+1)
		o.Port, o.StoreDir = server.RANDOM_PORT, tb.TempDir()
		o.Cluster = server.ClusterOpts{Name: clusterName, Host: "127.0.0.1", Port: p}
		o.Routes = routes
		s := &Server{tb: tb, opts: o}
		if err := s.start(); err != nil {
			c.Shutdown()
			return nil, err
		}
		tb.Cleanup(s.Shutdown)
		c.Servers = append(c.Servers, s)
	}
	return c, nil
}

// WaitReady waits until the running nodes have a meta leader that counts
// each of them as a current peer: before, creating a replicated stream
// can fail. Call it again after starting a node that was shut down.
func (c *Cluster) WaitReady() {
	c.tb.Helper()
	deadline := time.Now().Add(readyTimeout)
	for !c.ready() {
		if time.Now().After(deadline) {
			c.tb.Fatalf("natstest: no meta leader with every running node current after %v", readyTimeout)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (c *Cluster) ready() bool {
	leader := c.Leader()
	if leader == nil {
		return false
	}
	peers := leader.NATS().JetStreamClusterPeers()
	for _, s := range c.Servers {
		if !s.Running() {
			continue
		}
		ns := s.NATS()
		if !ns.JetStreamIsCurrent() || !slices.Contains(peers, ns.Name()) {
			return false
		}
	}
	return true
}

// Leader is the running node that leads the JetStream meta group, or nil
// during an election.
func (c *Cluster) Leader() *Server {
	for _, s := range c.Servers {
		if s.Running() && s.NATS().JetStreamIsLeader() {
			return s
		}
	}
	return nil
}

// StreamLeader is the running node that leads stream (of the default
// account), or nil during an election.
func (c *Cluster) StreamLeader(stream string) *Server {
	for _, s := range c.Servers {
		if s.Running() && s.NATS().JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return s
		}
	}
	return nil
}

// ClientURL lists every node's URL, comma-separated, as nats.Connect takes
// them: a client moves to another node when its own goes down.
func (c *Cluster) ClientURL() string {
	urls := make([]string, len(c.Servers))
	for i, s := range c.Servers {
		urls[i] = s.ClientURL()
	}
	return strings.Join(urls, ",")
}

// Shutdown shuts every node down.
func (c *Cluster) Shutdown() {
	for _, s := range c.Servers {
		s.Shutdown()
	}
}

// freePorts finds n ports free on loopback now.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		// Held open until all are found, so the n differ.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

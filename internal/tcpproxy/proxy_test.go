package tcpproxy

import (
	"bufio"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// echoServer echoes every line and counts the connections it accepted.
func echoServer(t *testing.T) (addr string, accepted *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted = &atomic.Int32{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String(), accepted
}

func startProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := Start(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// readLine reads one line within d, or returns "" when none came.
func readLine(t *testing.T, c net.Conn, r *bufio.Reader, d time.Duration) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	line, err := r.ReadString('\n')
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return ""
		}
		t.Fatal(err)
	}
	return line
}

func TestProxyForwardsBothWays(t *testing.T) {
	target, _ := echoServer(t)
	p := startProxy(t, target)
	c, r := dial(t, p.Addr())
	for _, msg := range []string{"one\n", "two\n"} {
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		if got := readLine(t, c, r, 5*time.Second); got != msg {
			t.Fatalf("echo %q, want %q", got, msg)
		}
	}
}

func TestPartitionHoldsTrafficOfAnOpenConnectionUntilHealed(t *testing.T) {
	target, _ := echoServer(t)
	p := startProxy(t, target)
	c, r := dial(t, p.Addr())
	_, _ = io.WriteString(c, "before\n")
	if got := readLine(t, c, r, 5*time.Second); got != "before\n" {
		t.Fatalf("echo %q", got)
	}

	p.Partition()
	if !p.Partitioned() {
		t.Fatal("not partitioned after Partition")
	}
	if _, err := io.WriteString(c, "during\n"); err != nil {
		t.Fatalf("a write into a partition must not fail at once: %v", err)
	}
	if got := readLine(t, c, r, 300*time.Millisecond); got != "" {
		t.Fatalf("%q crossed the partition", got)
	}

	p.Heal()
	if got := readLine(t, c, r, 5*time.Second); got != "during\n" {
		t.Fatalf("after the heal got %q, want what was held", got)
	}
}

func TestPartitionAcceptsNewConnectionsButReachesTheTargetOnlyAfterTheHeal(t *testing.T) {
	target, accepted := echoServer(t)
	p := startProxy(t, target)
	p.Partition()
	c, r := dial(t, p.Addr()) // accepted by the proxy: no refusal, no reset
	_, _ = io.WriteString(c, "hello\n")
	if got := readLine(t, c, r, 300*time.Millisecond); got != "" {
		t.Fatalf("%q crossed the partition", got)
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("the target accepted %d connections during the partition", n)
	}
	p.Heal()
	if got := readLine(t, c, r, 5*time.Second); got != "hello\n" {
		t.Fatalf("after the heal got %q", got)
	}
	if n := accepted.Load(); n != 1 {
		t.Fatalf("the target accepted %d connections, want 1", n)
	}
}

func TestCloseEndsEveryConnectionEvenWhilePartitioned(t *testing.T) {
	target, _ := echoServer(t)
	p := startProxy(t, target)
	c, r := dial(t, p.Addr())
	_, _ = io.WriteString(c, "x\n")
	readLine(t, c, r, 5*time.Second)
	p.Partition()
	_, _ = io.WriteString(c, "held\n")

	done := make(chan struct{})
	go func() { p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("the connection is still open after Close")
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Fatal("the proxy still accepts connections after Close")
	}
}

func TestAClientThatClosesEndsTheConnectionToTheTarget(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	eof := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			eof <- err
			return
		}
		defer c.Close()
		_, err = io.ReadAll(c)
		eof <- err
	}()
	p := startProxy(t, ln.Addr().String())
	c, _ := dial(t, p.Addr())
	_, _ = io.WriteString(c, "bye")
	c.Close()
	select {
	case err := <-eof:
		if err != nil {
			t.Fatalf("target read: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the target never saw the client's close")
	}
}

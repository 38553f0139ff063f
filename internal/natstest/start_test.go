package natstest

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestStartSaysAtOnceThatThePortIsTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port

	began := time.Now()
	ns, err := start(options([]Option{WithPort(port), WithoutJetStream()}))
	if err == nil {
		ns.Shutdown()
		t.Fatal("started on a port in use")
	}
	if took := time.Since(began); took > readyTimeout/2 {
		t.Errorf("took %v to fail; want the server's reason at once", took)
	}
	if !strings.Contains(err.Error(), strconv.Itoa(port)) || !strings.Contains(err.Error(), "in use") {
		t.Errorf("error %q does not say that port %d is in use", err, port)
	}
}

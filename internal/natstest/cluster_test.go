package natstest_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shardpool/gateway/internal/natstest"
)

// createR3 creates a stream replicated on three nodes and returns its
// leader.
func createR3(t *testing.T, c *natstest.Cluster, js jetstream.JetStream) *natstest.Server {
	t.Helper()
	cfg := jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Storage: jetstream.FileStorage, Replicas: 3}
	if _, err := js.CreateStream(timeout(t, 20*time.Second), cfg); err != nil {
		t.Fatal(err)
	}
	var leader *natstest.Server
	eventually(t, "a stream leader", func() bool { leader = c.StreamLeader("R3"); return leader != nil })
	return leader
}

// publish publishes until JetStream acks, as a publisher riding out an
// election would.
func publish(t *testing.T, js jetstream.JetStream, subject string) {
	t.Helper()
	var err error
	eventually(t, "an ack for "+subject, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err = js.Publish(ctx, subject, []byte(subject))
		return err == nil
	})
}

// localMsgs is how many messages of stream the node holds itself.
func localMsgs(t *testing.T, s *natstest.Server, stream string) uint64 {
	t.Helper()
	acc, err := s.NATS().JszAccount(&server.JSzOptions{Account: server.DEFAULT_GLOBAL_ACCOUNT, Streams: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, sd := range acc.Streams {
		if sd.Name == stream {
			return sd.State.Msgs
		}
	}
	return 0
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 30s", what)
		}
	}
}

func TestClusterKeepsAnR3StreamWritableWhenItsLeaderDies(t *testing.T) {
	c := natstest.RunCluster(t, 3)
	js := newJetStream(t, connect(t, c.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond)))
	leader := createR3(t, c, js)
	publish(t, js, "r3.before")

	leader.Shutdown()
	publish(t, js, "r3.after")

	if got := streamInfo(t, js, "R3"); got.State.Msgs != 2 || got.Cluster.Leader == leader.NATS().Name() {
		t.Errorf("R3 holds %d messages, led by %s; want 2, led by another node than the dead %s",
			got.State.Msgs, got.Cluster.Leader, leader.NATS().Name())
	}
}

func TestClusterNodeRestartedOnItsPortsAndStoreCatchesUp(t *testing.T) {
	c := natstest.RunCluster(t, 3)
	js := newJetStream(t, connect(t, c.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond)))
	leader := createR3(t, c, js)
	follower := c.Servers[0]
	if follower == leader {
		follower = c.Servers[1]
	}

	follower.Shutdown()
	for i := range 5 {
		publish(t, js, "r3."+strconv.Itoa(i))
	}
	follower.Start()
	c.WaitReady()
	eventually(t, "5 messages on the restarted node", func() bool { return localMsgs(t, follower, "R3") == 5 })
}

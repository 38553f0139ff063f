package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/shardpool/gateway/internal/natstest"
)

func TestHelpExplainsEachCommandAndExitsZero(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"-h"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, cmd := range []string{"plan", "presence", "members", "tail", "NATS_URL"} {
		if !strings.Contains(errOut.String(), cmd) {
			t.Errorf("-h does not explain %s", cmd)
		}
	}
}

func TestUnknownCommandsAndMissingArgumentsExitTwo(t *testing.T) {
	ns := natstest.Run(t, natstest.WithoutJetStream())
	for _, args := range [][]string{{}, {"-nats", ns.ClientURL(), "bogus"}, {"-nats", ns.ClientURL(), "members"}, {"-nats", ns.ClientURL(), "tail"}} {
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != 2 {
			t.Errorf("%v: exit %d (%s)", args, code, errOut.String())
		}
	}
}

func TestPlanPrintsTheFleetsPlan(t *testing.T) {
	ns := natstest.Run(t, natstest.WithoutJetStream())
	gw, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	gw.Subscribe("gateway.plan", func(m *nats.Msg) { m.Respond([]byte(`{"total_shards":4,"shards_per_pool":2,"pools":2}`)) })
	gw.Flush()
	var out, errOut bytes.Buffer
	if code := run([]string{"-nats", ns.ClientURL(), "plan"}, &out, &errOut); code != 0 || out.String() != "total_shards=4 shards_per_pool=2 pools=2\n" {
		t.Fatalf("exit %d: %q %q", code, out.String(), errOut.String())
	}
}

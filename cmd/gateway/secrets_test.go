package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/shardpool/gateway/discovery/consultest"
	"github.com/shardpool/gateway/internal/discordsim"
	"github.com/shardpool/gateway/internal/natstest"
)

// TestSecretsNeverLeak runs the whole program with every kind of secret set
// and greps every log line and every HTTP answer of the run for each.
func TestSecretsNeverLeak(t *testing.T) {
	secrets := map[string]string{
		"DISCORD_TOKEN":     "discord-secret-T0KEN.abcdef",
		"DRAIN_TOKEN":       "drain-secret-9f8e7d",
		"NATS_PASSWORD":     "nats-secret-pa55w0rd",
		"CONSUL_HTTP_TOKEN": "c0nsul-secret-6b1f2c3d",
	}
	sim := discordsim.New(discordsim.Config{Token: secrets["DISCORD_TOKEN"], Shards: 2, MaxConcurrency: 2, EventRate: 50, IdentifyWindow: 200 * time.Millisecond})
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	ns := natstest.Run(t, natstest.WithOptions(func(o *server.Options) { o.Username, o.Password = "gateway", secrets["NATS_PASSWORD"] }))
	defer ns.Shutdown()
	agent := consultest.Start(t)

	env := map[string]string{
		"DISCORD_API_URL": sim.APIURL(), "NATS_URL": ns.ClientURL(), "NATS_USER": "gateway",
		"HTTP_HOST": "127.0.0.1", "HTTP_PORT": "0", "LOG_LEVEL": "debug", "POOL_ID": "0",
		"CONSUL_HTTP_ADDR": agent.Addr, "KV_PREFIX": "secrets-test",
	}
	for k, v := range secrets {
		env[k] = v
	}
	logs := &lockedBuffer{}
	m := NewMain()
	m.LogOutput = logs
	if err := m.ParseFlags(nil, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	m.Config.IdentifyWindow = 200 * time.Millisecond
	runErr := make(chan error, 1)
	go func() { runErr <- m.Run(context.Background()) }()
	base := "http://" + m.HTTPAddr()

	var answers strings.Builder
	get := func(method, path, auth string) int {
		req, _ := http.NewRequest(method, base+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		answers.WriteString(resp.Header.Get("WWW-Authenticate"))
		answers.Write(b)
		return resp.StatusCode
	}
	deadline := time.Now().Add(30 * time.Second)
	for get("GET", "/ready", "") != 200 {
		if time.Now().After(deadline) {
			t.Fatalf("not ready:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // events flow, debug logs fill
	sim.Drop(0)                        // a reconnect and a RESUME carry the token
	time.Sleep(500 * time.Millisecond)
	for _, p := range []string{"/health", "/status", "/metrics"} {
		get("GET", p, "")
	}
	if code := get("POST", "/drain", "Bearer "+secrets["DRAIN_TOKEN"]+"x"); code != 401 {
		t.Fatalf("drain with a wrong token: %d", code)
	}
	if code := get("POST", "/drain", "Bearer "+secrets["DRAIN_TOKEN"]); code != 200 {
		t.Fatalf("drain: %d", code)
	}
	get("GET", "/status", "")
	sim.CloseWith(1, 4004, "Authentication failed.") // an error path that is about the token
	m.Close()
	if err := <-runErr; err != nil {
		t.Fatal(err)
	}

	// Errors of config parsing are part of the surface too.
	var errs strings.Builder
	for _, bad := range []map[string]string{
		{"DISCORD_TOKEN": "   "},
		{"NATS_URL": "nats://gateway:" + secrets["NATS_PASSWORD"] + "@::bad"},
		{"NATS_USER": "", "NATS_PASSWORD": secrets["NATS_PASSWORD"]},
	} {
		e := map[string]string{"DISCORD_TOKEN": secrets["DISCORD_TOKEN"]}
		for k, v := range bad {
			e[k] = v
		}
		c, err := ParseConfig(nil, func(k string) string { return e[k] }, io.Discard)
		if err == nil {
			_, err = c.NATSAuth.Options()
		}
		if err != nil {
			errs.WriteString(err.Error())
		}
	}

	all := logs.String() + answers.String() + errs.String()
	if !strings.Contains(logs.String(), "msg=ready") || !strings.Contains(answers.String(), "handoff") {
		t.Fatal("the run did not exercise the gateway")
	}
	for name, secret := range secrets {
		if strings.Contains(all, secret) {
			i := strings.Index(all, secret)
			t.Errorf("%s leaked: …%s…", name, all[max(0, i-120):min(len(all), i+len(secret)+40)])
		}
	}
}

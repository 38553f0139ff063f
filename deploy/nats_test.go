package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shardpool/gateway/internal/natstest"
	jspub "github.com/shardpool/gateway/service/publish/jetstream"
)

// deployedStreams is what the service ensures with the settings the Nomad
// job gives it (STREAM_STORAGE=file, STREAM_REPLICAS=3; a test in
// nomad_test.go ties the two).
func deployedStreams(replicas int) map[string]jetstream.StreamConfig {
	out := map[string]jetstream.StreamConfig{}
	for _, s := range jspub.Streams(jspub.StreamConfig{Storage: jetstream.FileStorage, Replicas: replicas}) {
		out[s.Name] = s
	}
	return out
}

func TestNATSStreamDefinitionsEqualWhatTheServiceEnsures(t *testing.T) {
	want := deployedStreams(3)
	if len(want) != len(streamFiles()) {
		t.Errorf("the service ensures %d streams, deploy/nats defines %d", len(want), len(streamFiles()))
	}
	for name, file := range streamFiles() {
		var got jetstream.StreamConfig
		decodeStrict(t, file, &got)
		w, ok := want[name]
		if !ok {
			t.Errorf("%s defines stream %s, which the service does not ensure", file, name)
			continue
		}
		if got.Name != name {
			t.Errorf("%s: name %q; want %q", file, got.Name, name)
		}
		// Field by field, so a difference names its field.
		gv, wv := reflect.ValueOf(got), reflect.ValueOf(w)
		for i := range gv.NumField() {
			f := gv.Type().Field(i)
			if !reflect.DeepEqual(gv.Field(i).Interface(), wv.Field(i).Interface()) {
				tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
				t.Errorf("%s: %s (%s) is %v; the service ensures %v", file, tag, f.Name, gv.Field(i).Interface(), wv.Field(i).Interface())
			}
		}
	}
}

// startJetStream runs an embedded NATS server with JetStream.
func startJetStream(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	ns := natstest.Run(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// addStreamsAsTheCLIDoes sends each file to $JS.API.STREAM.CREATE, as
// `nats stream add --config <file>` does (one replica: the test server is
// not a cluster).
func addStreamsAsTheCLIDoes(t *testing.T, nc *nats.Conn) {
	t.Helper()
	for name, file := range streamFiles() {
		var cfg map[string]any
		decodeLoose(t, file, &cfg)
		cfg["num_replicas"] = 1
		body, _ := json.Marshal(cfg)
		resp, err := nc.Request("$JS.API.STREAM.CREATE."+name, body, 5*time.Second)
		if err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		var r struct {
			Error *struct {
				Description string `json:"description"`
			} `json:"error"`
		}
		if err := json.Unmarshal(resp.Data, &r); err != nil || r.Error != nil {
			t.Fatalf("NATS refuses %s: %s", file, resp.Data)
		}
	}
}

func TestNATSStreamDefinitionsAreAcceptedAndNeedNoUpdateByTheService(t *testing.T) {
	nc, js := startJetStream(t)
	addStreamsAsTheCLIDoes(t, nc)

	// The service, starting against streams created from deploy/nats,
	// finds them up to date: no update, no recreate.
	var logs bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := jspub.EnsureStreams(ctx, js, jspub.StreamConfig{Storage: jetstream.FileStorage, Replicas: 1}, log.NewLogfmtLogger(&logs))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "stream up to date"); n != len(streamFiles()) || strings.Contains(logs.String(), "stream updated") {
		t.Errorf("the service changed the streams created from deploy/nats:\n%s", logs.String())
	}
	for name, want := range deployedStreams(1) {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		got := s.CachedInfo().Config
		if got.MaxAge != want.MaxAge || got.Duplicates != want.Duplicates || got.Storage != want.Storage || !reflect.DeepEqual(got.Subjects, want.Subjects) {
			t.Errorf("%s as NATS stored it: max_age %v, duplicate_window %v, storage %v, subjects %v; want %v, %v, %v, %v",
				name, got.MaxAge, got.Duplicates, got.Storage, got.Subjects, want.MaxAge, want.Duplicates, want.Storage, want.Subjects)
		}
	}
}

// TestNATSWorkerConsumesWithTheExampleConsumer is the worker example of
// deploy/nats/README.md, run: a durable pull consumer from
// events-worker.json, fetch, handle, ack.
func TestNATSWorkerConsumesWithTheExampleConsumer(t *testing.T) {
	nc, js := startJetStream(t)
	addStreamsAsTheCLIDoes(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for stream, file := range map[string]string{"EVENTS": "nats/events-worker.json", "COMMANDS": "nats/commands-worker.json"} {
		var cfg jetstream.ConsumerConfig
		decodeStrict(t, file, &cfg)
		if cfg.Durable == "" || cfg.AckPolicy != jetstream.AckExplicitPolicy {
			t.Errorf("%s: want a durable consumer with explicit acks", file)
		}
		if _, err := js.CreateConsumer(ctx, stream, cfg); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
	}

	// What the gateway publishes: the event body, Nats-Msg-Id = event_id.
	publish := func(id, subject string) {
		body := `{"event_id":"` + id + `","event_type":"member.join","shard_id":0,"timestamp":1,"guild_id":"1","channel_id":null,"user_id":"2","data":{}}`
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: []byte(body), Header: nats.Header{jetstream.MsgIDHeader: []string{id}}}); err != nil {
			t.Fatal(err)
		}
	}
	publish("a", "events.member.join")
	publish("a", "events.member.join") // a replay after RESUME: dropped by the duplicate window
	publish("b", "events.guild.join")  // not this consumer's subject
	publish("c", "events.member.leave")

	// The worker.
	cons, err := js.Consumer(ctx, "EVENTS", "member-worker")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 2 {
		batch, err := cons.Fetch(10, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			var ev struct {
				EventID   string `json:"event_id"`
				EventType string `json:"event_type"`
			}
			if err := json.Unmarshal(msg.Data(), &ev); err != nil {
				msg.Term() // a body no retry can fix
				continue
			}
			got = append(got, ev.EventID)
			if err := msg.Ack(); err != nil {
				t.Fatal(err)
			}
		}
		if batch.Error() != nil || n == 0 {
			break
		}
	}
	if strings.Join(got, ",") != "a,c" {
		t.Errorf("the worker got %v; want [a c] (each member event once, in order)", got)
	}
}

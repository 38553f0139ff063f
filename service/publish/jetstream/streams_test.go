package jetstream

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shardpool/gateway/internal/natstest"
)

func TestStreamsDefinesEventsAndCommands(t *testing.T) {
	streams := Streams(StreamConfig{Storage: jetstream.FileStorage, Replicas: 3})
	if len(streams) != 2 {
		t.Fatalf("%d streams; want 2", len(streams))
	}
	tests := []struct {
		name, subject      string
		maxAge, duplicates time.Duration
	}{
		{"EVENTS", "events.>", 5 * time.Minute, 2 * time.Minute},
		// NATS allows no duplicate window longer than the max age.
		{"COMMANDS", "commands.>", 60 * time.Second, 60 * time.Second},
	}
	for i, tt := range tests {
		s := streams[i]
		if s.Name != tt.name || len(s.Subjects) != 1 || s.Subjects[0] != tt.subject || s.MaxAge != tt.maxAge ||
			s.Duplicates != tt.duplicates || s.Storage != jetstream.FileStorage || s.Replicas != 3 ||
			s.Retention != jetstream.LimitsPolicy || s.Discard != jetstream.DiscardOld {
			t.Errorf("stream %d = %+v; want %s on %s, max age %s, duplicates %s, file, 3 replicas", i, s, tt.name, tt.subject, tt.maxAge, tt.duplicates)
		}
	}
}

func TestStreamsDefaultsToOneReplica(t *testing.T) {
	for _, s := range Streams(StreamConfig{Storage: jetstream.MemoryStorage}) {
		if s.Replicas != 1 {
			t.Errorf("%s has %d replicas; want 1", s.Name, s.Replicas)
		}
	}
}

func streamConfig(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamConfig {
	t.Helper()
	s, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return s.CachedInfo().Config
}

func TestEnsureStreamsCreatesMissingStreams(t *testing.T) {
	js := newJetStream(t, connect(t, natstest.Run(t), log.NewNopLogger()))
	cfg := StreamConfig{Storage: jetstream.MemoryStorage, Replicas: 1}
	if err := EnsureStreams(context.Background(), js, cfg, log.NewNopLogger()); err != nil {
		t.Fatal(err)
	}
	for _, want := range Streams(cfg) {
		if d := differences(streamConfig(t, js, want.Name), want); len(d) > 0 {
			t.Errorf("stream %s created with %v", want.Name, d)
		}
	}
}

func TestEnsureStreamsLeavesAnUpToDateStreamAlone(t *testing.T) {
	js := newJetStream(t, connect(t, natstest.Run(t), log.NewNopLogger()))
	cfg := StreamConfig{Storage: jetstream.FileStorage}
	if err := EnsureStreams(context.Background(), js, cfg, log.NewNopLogger()); err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	if err := EnsureStreams(context.Background(), js, cfg, logs.logger()); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "updated") || strings.Contains(logs.String(), "created") {
		t.Errorf("second EnsureStreams changed something:\n%s", logs.String())
	}
}

func TestStreamKeeperLeavesAnOperatorsSettingsAndWarnsOnce(t *testing.T) {
	js := newJetStream(t, connect(t, natstest.Run(t), log.NewNopLogger()))
	ctx := context.Background()
	cfg := StreamConfig{Storage: jetstream.FileStorage}
	var logs logBuffer
	k := NewStreamKeeper(cfg, logs.logger())
	if err := k.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	// An operator changes the stream with the nats CLI.
	changed := streamConfig(t, js, StreamEvents)
	changed.MaxAge = time.Hour
	changed.Duplicates = 10 * time.Second
	changed.MaxMsgSize = 64 << 10
	changed.Metadata = map[string]string{"owner": "ops"}
	if _, err := js.UpdateStream(ctx, changed); err != nil {
		t.Fatal(err)
	}

	for range 3 { // the reconnects that follow
		if err := k.Ensure(ctx, js); err != nil {
			t.Fatal(err)
		}
	}
	have := streamConfig(t, js, StreamEvents)
	if have.MaxAge != time.Hour || have.Duplicates != 10*time.Second || have.MaxMsgSize != 64<<10 || have.Metadata["owner"] != "ops" {
		t.Errorf("EVENTS changed: max_age %v, duplicate_window %v, max_msg_size %d, metadata %v; want the operator's settings kept",
			have.MaxAge, have.Duplicates, have.MaxMsgSize, have.Metadata)
	}
	warnings := logs.lines("level=warn")
	if len(warnings) != 1 {
		t.Fatalf("%d warnings over 3 reconnects; want 1:\n%s", len(warnings), logs.String())
	}
	for _, s := range []string{"stream=EVENTS", "max_age=1h0m0s (recommended 5m0s)", "duplicate_window=10s (recommended 2m0s)", "max_msg_size=65536 (recommended -1)"} {
		if !strings.Contains(warnings[0], s) {
			t.Errorf("the warning lacks %q:\n%s", s, warnings[0])
		}
	}
	if strings.Contains(warnings[0], "description") || strings.Contains(warnings[0], "max_msgs=") {
		t.Errorf("the warning names settings that do not differ:\n%s", warnings[0])
	}
}

func TestStreamKeeperWarnsAgainWhenTheDifferencesChange(t *testing.T) {
	js := newJetStream(t, connect(t, natstest.Run(t), log.NewNopLogger()))
	ctx := context.Background()
	var logs logBuffer
	k := NewStreamKeeper(StreamConfig{Storage: jetstream.FileStorage}, logs.logger())
	if err := k.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	for _, age := range []time.Duration{time.Hour, 2 * time.Hour} {
		c := streamConfig(t, js, StreamEvents)
		c.MaxAge = age
		if _, err := js.UpdateStream(ctx, c); err != nil {
			t.Fatal(err)
		}
		if err := k.Ensure(ctx, js); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(logs.lines("level=warn")); n != 2 {
		t.Errorf("%d warnings for two different changes; want 2:\n%s", n, logs.String())
	}
}

func TestEnsureStreamsUsesAStreamOfAnotherStorageTypeAsItIs(t *testing.T) {
	js := newJetStream(t, connect(t, natstest.Run(t), log.NewNopLogger()))
	ctx := context.Background()
	// EVENTS exists in memory with other settings; the configuration asks
	// for file storage.
	old := Streams(StreamConfig{Storage: jetstream.MemoryStorage})[0]
	old.MaxAge = time.Hour
	if _, err := js.CreateStream(ctx, old); err != nil {
		t.Fatal(err)
	}

	var logs logBuffer
	cfg := StreamConfig{Storage: jetstream.FileStorage}
	if err := EnsureStreams(ctx, js, cfg, logs.logger()); err != nil {
		t.Fatal(err)
	}
	have := streamConfig(t, js, StreamEvents)
	if have.Storage != jetstream.MemoryStorage || have.MaxAge != time.Hour {
		t.Errorf("EVENTS storage %s, max age %s; want it left as it is (memory, 1h)", have.Storage, have.MaxAge)
	}
	if s := streamConfig(t, js, StreamCommands); s.Storage != jetstream.FileStorage {
		t.Errorf("COMMANDS storage %s; want file", s.Storage)
	}
	out := logs.String()
	if !strings.Contains(out, "level=warn") || !strings.Contains(out, "stream=EVENTS") || !strings.Contains(out, "storage=Memory (recommended File)") {
		t.Errorf("no storage warning logged:\n%s", out)
	}
}

func TestEnsureStreamsReportsAnImpossibleConfiguration(t *testing.T) {
	js := newJetStream(t, connect(t, natstest.Run(t), log.NewNopLogger()))
	// A single server cannot hold 3 replicas.
	err := EnsureStreams(context.Background(), js, StreamConfig{Storage: jetstream.FileStorage, Replicas: 3}, log.NewNopLogger())
	if err == nil || !strings.Contains(err.Error(), "EVENTS") {
		t.Errorf("err = %v; want an error naming the stream", err)
	}
}

func TestEnsureStreamsFailsWithoutJetStreamSayingHowToEnableIt(t *testing.T) {
	s := natstest.Run(t, withoutJetStream)
	js := newJetStream(t, connect(t, s, log.NewNopLogger()))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := EnsureStreams(ctx, js, StreamConfig{Storage: jetstream.FileStorage}, log.NewNopLogger())
	want := "JetStream is not enabled on the NATS server " + s.ClientURL() +
		": start the server with -js (nats-server -js), or add jetstream {} to its configuration file"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
	if !errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
		t.Errorf("%v does not unwrap to jetstream.ErrJetStreamNotEnabled", err)
	}
}

func TestCheckJetStream(t *testing.T) {
	// One server with JetStream, where account B has none.
	withAccounts := natstest.WithOptions(func(o *server.Options) {
		a, b := server.NewAccount("A"), server.NewAccount("B")
		o.Accounts = []*server.Account{a, b}
		o.Users = []*server.User{{Username: "a", Password: "pa", Account: a}, {Username: "b", Password: "hunter2secret", Account: b}}
	})
	s := natstest.Run(t, withAccounts)
	enableFor := func(acc string) {
		a, err := s.NATS().LookupAccount(acc)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.EnableJetStream(nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	enableFor("A")
	plain := natstest.Run(t, withoutJetStream)
	port := strconv.Itoa(s.Port())

	cases := []struct {
		name, url, want string
		unwrapsTo       error
	}{
		{"enabled", "nats://a:pa@127.0.0.1:" + port, "", nil},
		{"not for the account", "nats://b:hunter2secret@127.0.0.1:" + port,
			"JetStream is not enabled for this account on the NATS server nats://redacted@127.0.0.1:" + port +
				": enable it for the account (jetstream: enabled in its block of the server configuration, or JetStream limits in its JWT)",
			jetstream.ErrJetStreamNotEnabledForAccount},
		{"not on the server", plain.ClientURL(),
			"JetStream is not enabled on the NATS server " + plain.ClientURL() +
				": start the server with -js (nats-server -js), or add jetstream {} to its configuration file",
			jetstream.ErrJetStreamNotEnabled},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := Connect(tc.url, t.Name(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			waitFor(t, "connected", nc.IsConnected)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err = CheckJetStream(ctx, newJetStream(t, nc))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var off *NotEnabledError
			if !errors.As(err, &off) || err.Error() != tc.want || !errors.Is(err, tc.unwrapsTo) {
				t.Fatalf("err = %v\nwant %s", err, tc.want)
			}
		})
	}
}

// lines returns the log lines holding s.
func (b *logBuffer) lines(s string) []string {
	var out []string
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}

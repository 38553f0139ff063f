package jetstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shardpool/gateway/internal/natstest"
	"github.com/shardpool/gateway/service/event"
	"github.com/shardpool/gateway/service/publish"
)

func errorReply(code, errCode int, description string) *nats.Msg {
	return &nats.Msg{Data: fmt.Appendf(nil, `{"error":{"code":%d,"err_code":%d,"description":%q},"stream":"EVENTS"}`, code, errCode, description)}
}

// The contract of the publish path: only what refuses the message itself
// is a RejectedError (published compact, then dropped); everything else is
// retried until it is stored.
func TestAckErrorTellsRefusalsOfTheMessageFromFailuresThatPass(t *testing.T) {
	tests := []struct {
		name     string
		reply    *nats.Msg
		rejected bool
		reason   string
		why      string // a retried refusal: what lets a retry pass
	}{
		{"ack", &nats.Msg{Data: []byte(`{"stream":"EVENTS","seq":1}`)}, false, "", ""},
		{"stream max_msg_size or server max_payload", errorReply(400, 10054, "message size exceeds maximum allowed"), true, publish.ReasonTooLarge, ""},
		{"header over 64 KiB", errorReply(400, 10097, "header size exceeds maximum allowed of 64k"), true, publish.ReasonTooLarge, ""},
		{"file store cannot hold it", errorReply(500, 10077, "message too large"), true, publish.ReasonTooLarge, ""},
		{"invalid per-message TTL", errorReply(400, 10165, "invalid per-message TTL"), true, publish.ReasonRefused, ""},
		{"wrong last msg id", errorReply(400, 10070, "wrong last msg ID: x"), true, publish.ReasonRefused, ""},

		{"storage full", errorReply(500, 10047, "insufficient storage resources available"), false, "", "space is freed"},
		{"memory full", errorReply(500, 10028, "insufficient memory resources available"), false, "", "space is freed"},
		{"server resources", errorReply(503, 10023, "insufficient resources"), false, "", "space is freed"},
		{"account limits", errorReply(400, 10002, "resource limits exceeded for account"), false, "", "messages age out"},
		{"stream full, discard new", errorReply(500, 10077, "maximum messages exceeded"), false, "", "messages age out"},
		{"stream bytes full, discard new", errorReply(500, 10077, "maximum bytes exceeded"), false, "", "messages age out"},
		{"store closed", errorReply(500, 10077, "store is closed"), false, "", "the stream restarts"},
		{"sealed stream", errorReply(400, 10109, "invalid operation on sealed stream"), false, "", "an operator replaces it; dropping would lose every event"},
		{"duplicate in process", errorReply(409, 10158, "duplicate message id is in process"), false, "", "the first copy is stored"},
		{"too many requests", errorReply(429, 10167, "too many requests"), false, "", "load passes"},
		{"cluster unavailable", errorReply(503, 10008, "JetStream system temporarily unavailable"), false, "", "an election ends"},
		{"not leader", errorReply(500, 10009, "JetStream cluster can not handle request"), false, "", "an election ends"},
		{"stream offline", errorReply(500, 10118, "stream is offline"), false, "", "the stream comes back"},
		{"not enabled", errorReply(503, 10076, "JetStream not enabled"), false, "", "an operator enables it"},
		{"unknown code", errorReply(400, 19999, "something new"), false, "", "unknown: never drop on a guess"},
		{"no stream for the subject", &nats.Msg{Header: nats.Header{"Status": []string{"503"}}}, false, "", "the stream is created"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ackError(tt.reply)
			if tt.name == "ack" {
				if err != nil {
					t.Fatalf("ackError = %v; want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("ackError = nil; want an error")
			}
			var rej *publish.RejectedError
			if got := errors.As(err, &rej); got != tt.rejected {
				t.Fatalf("ackError = %v: rejected %v; want %v %s", err, got, tt.rejected, tt.why)
			}
			if tt.rejected && rej.Reason != tt.reason {
				t.Errorf("reason %q; want %q", rej.Reason, tt.reason)
			}
		})
	}
}

// bigEvent is an event of about n bytes with a data field.
func bigEvent(t *testing.T, seq, n int) *event.Event {
	t.Helper()
	d := fmt.Appendf(nil, `{"guild_id":"1","user":{"id":"2","username":"u"},"roles":[],"bio":"%s"}`, bytes.Repeat([]byte("x"), n))
	ev, ok, err := event.Build(0, "session", int64(seq), "GUILD_MEMBER_ADD", d, time.Now())
	if err != nil || !ok {
		t.Fatalf("event.Build: %v, %v", ok, err)
	}
	return ev
}

func TestPublishReportsAnEventOverTheStreamsMaxMsgSizeAsRejected(t *testing.T) {
	nc, js := setup(t)
	// An operator limits the stream's messages.
	ctx := context.Background()
	s, err := js.Stream(ctx, StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.MaxMsgSize = 1024
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	p := newPublisher(t, nc)
	rec := newDoneRecorder(2)
	for i, ev := range []*event.Event{bigEvent(t, 1, 4096), bigEvent(t, 2, 10)} {
		if err := p.Publish(ctx, ev, rec.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	rec.wait(t, 5*time.Second)
	got := rec.snapshot()
	var rej *publish.RejectedError
	if !errors.As(got[0][0], &rej) || rej.Reason != publish.ReasonTooLarge {
		t.Errorf("the 4 KiB event's done got %v; want a too_large rejection", got[0][0])
	}
	if got[1][0] != nil {
		t.Errorf("the small event's done got %v; want nil", got[1][0])
	}
}

func TestPublishReportsAFullStreamAsAFailureThatIsRetried(t *testing.T) {
	nc, js := setup(t)
	ctx := context.Background()
	s, err := js.Stream(ctx, StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.MaxMsgs, cfg.Discard = 1, jetstream.DiscardNew
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	p := newPublisher(t, nc)
	rec := newDoneRecorder(2)
	for i := range 2 {
		if err := p.Publish(ctx, bigEvent(t, i, 10), rec.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	rec.wait(t, 5*time.Second)
	err = rec.snapshot()[1][0]
	if err == nil || publish.IsRejected(err) {
		t.Errorf("the event refused by a full stream got %v; want an error that is not a rejection (it is retried)", err)
	}
}

func TestPublishRefusesAnEventOverTheServersMaxPayloadAsRejected(t *testing.T) {
	nc := connect(t, natstest.Run(t, natstest.WithMaxPayload(2048)), log.NewNopLogger())
	if err := EnsureStreams(context.Background(), newJetStream(t, nc), StreamConfig{Storage: jetstream.MemoryStorage}, log.NewNopLogger()); err != nil {
		t.Fatal(err)
	}
	p := newPublisher(t, nc)
	err := p.Publish(context.Background(), bigEvent(t, 1, 4096), func(error) { t.Error("done called for an event not accepted") })
	var rej *publish.RejectedError
	if !errors.As(err, &rej) || rej.Reason != publish.ReasonTooLarge {
		t.Fatalf("Publish = %v; want a too_large rejection", err)
	}
	if n := p.Pending(); n != 0 {
		t.Errorf("%d events pending; want none", n)
	}
}

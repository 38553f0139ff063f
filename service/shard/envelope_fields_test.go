package shard

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"github.com/shardpool/gateway/service/event"
)

// parseEnvelope locates d's routing fields in its one pass when a string t
// comes before d; whatever the payload's shape, the event built from them
// must be the one event.Build builds reading d itself.
func TestEnvelopeFieldsBuildTheEventBuildWould(t *testing.T) {
	for _, msg := range []string{
		`{"t":"GUILD_MEMBER_ADD","s":3,"op":0,"d":{"guild_id":"1","user":{"id":"2"},"x":[1,{"a":null}]}}`,
		`{"t":"GUILD_MEMBER_UPDATE","s":3,"op":0,"d":{"guild_id":"1","member":{"user":{"id":"2"}},"user":null}}`,
		`{"t":"GUILD_CREATE","s":3,"op":0,"d":{"id":"9","unavailable":false,"guild_id":"8","channels":[]}}`,
		`{"t":"GUILD_DELETE","s":3,"op":0,"d":{"id":"9","unavailable":true}}`,
		`{"t":"INTERACTION_CREATE","s":3,"op":0,"d":{"guild_id":"1","channel_id":"5","member":{"user":{"id":"2"}}}}`,
		`{"t":"GUILD_MEMBER_ADD","s":3,"op":0,"d":{"guild_id":"\u0031","user":{"id":"caf\u00e9"}}}`, // escaped ids
		`{"t":"GUILD_MEMBER_ADD","s":3,"op":0,"d":{"guild_id":1,"user":{"id":"2"}}}`,                // wrong type: an error
		`{"t":"GUILD_MEMBER_ADD","s":3,"op":0,"d":{"guild_id":1,"guild_id":"7","user":{"id":"2"}}}`, // the last one wins
		`{"t":"GUILD_MEMBER_ADD","s":3,"op":0,"d":{"guild_id":"1"},"d":{"guild_id":"4"}}`,           // a second d
		`{"t":"GUILD_CREATE","s":3,"op":0,"d":{"id":"9","guild_id":"8"},"t":"GUILD_MEMBER_ADD"}`,    // t changes after d
		`{"d":{"guild_id":"1","user":{"id":"2"}},"t":"GUILD_MEMBER_REMOVE","s":3,"op":0}`,           // d first
		`{"t":"GUILD_MEMBER_ADD","s":3,"op":0,"d":{}}`,
		`{"t":"GUILD_MEMBER_ADD","s":3,"op":0,"d":[1]}`,            // not an object: an error
		`{"t":"MESSAGE_CREATE","s":3,"op":0,"d":{"guild_id":"1"}}`, // not published
	} {
		checkEnvelopeFields(t, []byte(msg))
	}
}

// checkEnvelopeFields compares the event built from the envelope's fields
// with event.Build's, for every dispatch parseEnvelope accepts.
func checkEnvelopeFields(t *testing.T, msg []byte) {
	t.Helper()
	env, err := parseEnvelope(msg)
	if err != nil || env.Op != opDispatch || env.T == "" {
		return
	}
	at := time.UnixMilli(1700000000000)
	router, _ := event.NewRouter(nil)
	got, gotPub, gotErr := router.BuildScanned(1, "s", env.S, env.T, env.D, &env.Fields, at)
	want, wantPub, wantErr := event.Build(1, "s", env.S, env.T, env.D, at)
	if gotPub != wantPub || (gotErr == nil) != (wantErr == nil) || gotErr != nil && gotErr.Error() != wantErr.Error() {
		t.Fatalf("%s: BuildScanned = %v, %v; Build = %v, %v", msg, gotPub, gotErr, wantPub, wantErr)
	}
	if got == nil || want == nil {
		if got != want {
			t.Fatalf("%s: BuildScanned event %v, Build event %v", msg, got, want)
		}
		return
	}
	if !bytes.Equal(got.Body, want.Body) {
		t.Fatalf("%s: body\n%s\nwant\n%s", msg, got.Body, want.Body)
	}
	g, w := *got, *want
	g.Body, w.Body = nil, nil
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("%s: event %+v, want %+v", msg, g, w)
	}
}

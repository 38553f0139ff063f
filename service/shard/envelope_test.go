package shard

import (
	"bytes"
	"encoding/json"
	"testing"
)

var envelopeCases = []string{
	`{"op":0,"s":42,"t":"GUILD_MEMBER_ADD","d":{"guild_id":"1","user":{"id":"2"}}}`,
	`{"t":null,"s":null,"op":11,"d":null}`,
	`{"op":10,"d":{"heartbeat_interval":41250}}`,
	` { "op" : 0 , "s" : 7 , "t" : "X" , "d" : [1, "a\"]}", {"b": [] }] } `,
	`{"op":9,"d":false}`,
	`{"op":0,"s":1,"t":"READY","d":{"v":10,"guilds":[{"id":"1","unavailable":true}],"session_id":"abc"}}`,
	`{"op":0,"s":3,"t":"T","d":{"k":"\\","n":-1.5e3,"u":"\u00e9\ud83d\ude00"}}`,
	`{"d":{},"op":0,"s":2,"t":"SOMETHING_NEW","extra":{"x":[true,false,null]}}`,
}

func TestParseEnvelopeAgreesWithEncodingJSON(t *testing.T) {
	for _, c := range envelopeCases {
		got, err := parseEnvelope([]byte(c))
		if err != nil {
			t.Errorf("%s: %v", c, err)
			continue
		}
		var want struct {
			Op int             `json:"op"`
			S  *int64          `json:"s"`
			T  *string         `json:"t"`
			D  json.RawMessage `json:"d"`
		}
		if err := json.Unmarshal([]byte(c), &want); err != nil {
			t.Fatal(err)
		}
		if int(got.Op) != want.Op || (want.S != nil && got.S != *want.S) || (want.T != nil && got.T != *want.T) || !bytes.Equal(got.D, want.D) {
			t.Errorf("%s: got op=%d s=%d t=%q d=%s", c, got.Op, got.S, got.T, got.D)
		}
	}
}

func TestParseEnvelopeRejectsMalformedPayloads(t *testing.T) {
	for _, c := range []string{
		``, `[]`, `{}`, `{"op":0`, `{"op":"zero"}`, `{"op":0,"s":"1"}`, `{"op":0,"t":5}`,
		`{"op":0,"d":{"a":}}`, `{"op":0,"d":"unterminated}`, `{"op":0} trailing`, `{"s":1}`,
		`{"op":0,"d":{"a" 1}}`, `{"op":0,,"s":1}`, `{"op":0,"d":[1 2]}`,
	} {
		if _, err := parseEnvelope([]byte(c)); err == nil {
			t.Errorf("%q: want an error", c)
		}
	}
}

func TestParseEnvelopeBoundsNesting(t *testing.T) {
	deep := `{"op":0,"d":` + string(bytes.Repeat([]byte("["), 20000)) + string(bytes.Repeat([]byte("]"), 20000)) + `}`
	if _, err := parseEnvelope([]byte(deep)); err == nil {
		t.Fatal("20000 levels of nesting accepted")
	}
}

// FuzzParseEnvelope checks that no frame crashes the decoder and that a
// valid payload is decoded as encoding/json decodes it.
func FuzzParseEnvelope(f *testing.F) {
	for _, c := range envelopeCases {
		f.Add([]byte(c))
	}
	f.Add([]byte(`{"op":0,"d":{"a":"\`))
	f.Fuzz(func(t *testing.T, b []byte) {
		env, err := parseEnvelope(b)
		if err != nil || bytes.IndexByte(b, '\\') >= 0 {
			return
		}
		var want struct {
			Op int             `json:"op"`
			D  json.RawMessage `json:"d"`
		}
		if json.Unmarshal(b, &want) != nil || !json.Valid(b) {
			return
		}
		if int(env.Op) != want.Op || (len(want.D) > 0 && !bytes.Equal(env.D, want.D)) {
			t.Fatalf("op %d d %q; encoding/json: op %d d %q", env.Op, env.D, want.Op, want.D)
		}
	})
}

func BenchmarkParseEnvelope(b *testing.B) {
	msg := []byte(`{"t":"GUILD_MEMBER_ADD","s":1234,"op":0,"d":{"guild_id":"1197345237498982400","joined_at":"2026-11-28T19:00:00.000000+00:00","roles":["1197345237498982401","1197345237498982402"],"deaf":false,"mute":false,"flags":0,"pending":false,"user":{"id":"80351110224678912","username":"nelly","global_name":"Nelly","avatar":"8342729096ea3675442027381ff50dfe","discriminator":"0","public_flags":64,"bot":false,"banner":null,"accent_color":null,"avatar_decoration_data":null},"nick":null,"avatar":null,"communication_disabled_until":null,"premium_since":null}}`)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := parseEnvelope(msg); err != nil {
			b.Fatal(err)
		}
	}
}

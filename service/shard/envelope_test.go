package shard

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shardpool/gateway/internal/discordsim"
	"github.com/shardpool/gateway/service/event"
)

// envelopeCases are valid payloads, read as encoding/json reads them (see
// referenceEnvelope).
var envelopeCases = []string{
	`{"op":0,"s":42,"t":"GUILD_MEMBER_ADD","d":{"guild_id":"1","user":{"id":"2"}}}`,
	`{"t":"GUILD_CREATE","s":42,"op":0,"d":{"id":"1","members":[]}}`,
	`{"t":null,"s":null,"op":11,"d":null}`,
	`{"op":10,"d":{"heartbeat_interval":41250}}`,
	`{"op":11}`,
	` { "op" : 0 , "s" : 7 , "t" : "X" , "d" : [1, "a\"]}", {"b": [] }] } `,
	"\n{\"op\":9,\"d\":false}\r\n",
	`{"op":0,"s":1,"t":"READY","d":{"v":10,"guilds":[{"id":"1","unavailable":true}],"session_id":"abc"}}`,
	`{"op":0,"s":3,"t":"T","d":{"k":"\\","n":-1.5e3,"u":"\u00e9\ud83d\ude00","q":"\"}\\\"{"}}`,
	`{"d":{},"op":0,"s":2,"t":"SOMETHING_NEW","extra":{"x":[true,false,null]}}`,
	`{"\u006fp":0,"\u0073":5,"\u0074":"\u0047UILD_CREATE","\u0064":{"\u0069d":"1"}}`,
	`{"op":0,"t":"GUILD_\u0043REATE","s":1,"d":{}}`,
	`{"op":0,"t":"caf\u00e9 \ud83d\ude00 \ud800","s":1,"d":1}`,
	"{\"op\":0,\"t\":\"\xff\xfe\",\"s\":1,\"d\":\"\xff\"}",
	`{"op":1,"op":0,"s":"x","s":5,"t":1,"t":"B","d":"x","d":2}`,
	`{"op":0,"s":5,"s":null,"t":"A","t":null}`,
	`{"op":-0,"s":-9223372036854775808}`,
	`{"op":0,"s":9223372036854775807,"d":[0,-0,1.5,-1e-7,2E+10,0.0e0,123456789012345678901234567890]}`,
	`{"OP":5,"Op":6,"op":0,"S":7,"T":"x","D":1}`,
}

func TestParseEnvelopeAgreesWithEncodingJSON(t *testing.T) {
	for _, c := range envelopeCases {
		want, err := referenceEnvelope([]byte(c))
		if err != nil {
			t.Fatalf("%s: the reference rejects it: %v", c, err)
		}
		checkEnvelope(t, []byte(c), want)
	}
}

func TestParseEnvelopeRejectsInvalidJSONAnywhere(t *testing.T) {
	for _, c := range []string{
		``, ` `, `[]`, `null`, `"op"`, `{`, `{"op":0`, `{"op":0,}`, `{"op":0,,"s":1}`, `{"op":0} trailing`,
		`{"op":0}{}`, `{'op':0}`, `{op:0}`, "\xef\xbb\xbf{\"op\":0}",
		// Inside d, which the envelope used to check for brackets and
		// strings only.
		`{"op":0,"d":{"a":}}`, `{"op":0,"d":"unterminated}`, `{"op":0,"d":{"a" 1}}`, `{"op":0,"d":[1 2]}`,
		`{"op":0,"d":[1,]}`, `{"op":0,"d":{"a":1,}}`, `{"op":0,"d":01}`, `{"op":0,"d":{"a":-}}`, `{"op":0,"d":1.}`,
		`{"op":0,"d":.5}`, `{"op":0,"d":1e}`, `{"op":0,"d":+1}`, `{"op":0,"d":tru}`, `{"op":0,"d":nul}`,
		`{"op":0,"d":True}`, `{"op":0,"d":NaN}`, `{"op":0,"d":"\x"}`, `{"op":0,"d":"\u12"}`, `{"op":0,"d":"\u12g4"}`,
		"{\"op\":0,\"d\":\"\x01\"}", "{\"op\":0,\"d\":\"a\tb\"}", `{"op":0,"d":{"a":[}}`, `{"op":0,"d":[{]}`,
		`{"op":0,"d":{1:2}}`, `{"op":0,"d":[1]]}`, `{"op":0,"d":{"a":"b"}}}`, "{\"op\":0,\"d\":\x00}",
		`{"op":0,"x":01,"d":1}`, `{"op":0,"x":[1,],"d":1}`, `{"op":0,"s":01}`, `{"op":00}`,
	} {
		if _, err := parseEnvelope([]byte(c)); !errors.Is(err, errEnvelope) {
			t.Errorf("%q: err = %v; want errEnvelope", c, err)
		}
	}
}

func TestParseEnvelopeRejectsFieldsOfTheWrongType(t *testing.T) {
	for _, c := range []string{
		`{}`, `{"s":1}`, `{"op":null}`, `{"op":"0"}`, `{"op":0.0}`, `{"op":1e1}`, `{"op":true}`, `{"op":[0]}`,
		`{"op":99999999999999999999}`, `{"op":0,"s":"1"}`, `{"op":0,"s":1.5}`, `{"op":0,"s":1e3}`,
		`{"op":0,"s":9223372036854775808}`, `{"op":0,"s":{}}`, `{"op":0,"t":5}`, `{"op":0,"t":["X"]}`,
		`{"op":0,"t":false}`, `{"op":0,"op":null}`,
	} {
		if _, err := parseEnvelope([]byte(c)); !errors.Is(err, errEnvelope) {
			t.Errorf("%q: err = %v; want errEnvelope", c, err)
		}
	}
}

// TestParseEnvelopeNestingLimitIsEncodingJSONs accepts d as deep as
// encoding/json accepts the whole payload, and no deeper.
func TestParseEnvelopeNestingLimitIsEncodingJSONs(t *testing.T) {
	for _, depth := range []int{9999, 10000, 20000} { // the payload's object is one more level
		deep := `{"op":0,"d":` + strings.Repeat("[", depth-1) + strings.Repeat("]", depth-1) + `}`
		_, err := parseEnvelope([]byte(deep))
		if want := depth <= 10000; (err == nil) != want {
			t.Errorf("payload nested %d deep: err = %v; want accepted = %v", depth, err, want)
		}
	}
}

func TestParseEnvelopeDIsASubSliceOfTheMessage(t *testing.T) {
	msg := []byte(`{"t":"X","s":1,"op":0,"d":{"a":[1,2]} }`)
	env, err := parseEnvelope(msg)
	if err != nil {
		t.Fatal(err)
	}
	if string(env.D) != `{"a":[1,2]}` || &env.D[0] != &msg[strings.Index(string(msg), `{"a"`)] {
		t.Errorf("d = %q, not the bytes of the message", env.D)
	}
}

func TestParseEnvelopeWithoutDHasNilD(t *testing.T) {
	env, err := parseEnvelope([]byte(`{"op":11}`))
	if err != nil || env.D != nil {
		t.Errorf("d = %q, %v; want nil", env.D, err)
	}
}

func TestParseEnvelopeDoesNotAllocateForKnownTypes(t *testing.T) {
	for _, msg := range [][]byte{
		[]byte(`{"t":"GUILD_MEMBER_ADD","s":1234,"op":0,"d":{"guild_id":"1","user":{"id":"2","name":"caf\u00e9"}}}`),
		[]byte(`{"t":null,"s":null,"op":11,"d":null}`),
	} {
		if n := testing.AllocsPerRun(100, func() {
			if _, err := parseEnvelope(msg); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("%s: %.0f allocations; want 0", msg, n)
		}
	}
}

func TestPeekEnvelopeReadsTAndSBeforeTheCut(t *testing.T) {
	full := `{"t":"GUILD_CREATE","s":42,"op":0,"d":{"id":"1","name":"x","members":[{"user":{"id":"2"}}]}}`
	tests := []struct {
		name   string
		prefix string
		t      string
		s      int64
		ok     bool
	}{
		{"whole payload", full, "GUILD_CREATE", 42, true},
		{"cut inside d", full[:strings.Index(full, `"members"`)+5], "GUILD_CREATE", 42, true},
		{"cut right after d's brace", `{"t":"GUILD_CREATE","s":42,"op":0,"d":{`, "GUILD_CREATE", 42, true},
		{"cut after op", `{"t":"GUILD_CREATE","s":42,"op":0`, "GUILD_CREATE", 42, true},
		{"cut inside s", `{"t":"GUILD_CREATE","s":4`, "GUILD_CREATE", 0, false},
		{"cut after s, before its comma", `{"t":"GUILD_CREATE","s":42`, "GUILD_CREATE", 0, false},
		{"cut inside t", `{"t":"GUILD_CRE`, "", 0, false},
		{"cut before t's value", `{"t":`, "", 0, false},
		{"s before t", `{"s":7,"t":"MESSAGE_CREATE","op":0,"d":[`, "MESSAGE_CREATE", 7, true},
		{"op and d first", `{"op":0,"d":{"id":"1"},"t":"X","s":3,`, "X", 3, true},
		{"d first, cut inside it", `{"op":0,"d":{"id":"1","t":"NOT_THIS","s":9`, "", 0, false},
		{"escaped t and key", `{"\u0074":"GUILD_\u0043REATE","s":5,`, "GUILD_CREATE", 5, true},
		{"whitespace", " {\n \"t\" : \"A\" ,\n \"s\" : 1 , \"d\":", "A", 1, true},
		{"null t and s", `{"t":null,"s":null,"op":11,"d":`, "", 0, false},
		{"not a dispatch", `{"t":"A","s":1,"op":1,"d":`, "A", 1, false},
		{"s of the wrong type", `{"t":"A","s":"1","op":0,"d":`, "A", 0, false},
		{"t of the wrong type", `{"t":1,"s":1,"op":0,"d":`, "", 1, false},
		{"repeated keys: the last read wins", `{"t":"A","s":1,"t":"B","s":2,"d":{`, "B", 2, true},
		{"garbage after t and s", `{"t":"A","s":1,x"op":0`, "A", 1, true},
		{"garbage before", `x{"t":"A","s":1,`, "", 0, false},
		{"not an object", `["t","A"]`, "", 0, false},
		{"empty", ``, "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ, s, ok := peekEnvelope([]byte(tt.prefix))
			if typ != tt.t || s != tt.s || ok != tt.ok {
				t.Errorf("peekEnvelope(%q) = %q, %d, %v; want %q, %d, %v", tt.prefix, typ, s, ok, tt.t, tt.s, tt.ok)
			}
		})
	}
}

// TestPeekEnvelopeNeverReportsWhatTheWholePayloadDoesNotSay cuts a payload
// at every byte: what a prefix reports is what the whole payload says, and
// once both t and s are known, every longer prefix knows them.
func TestPeekEnvelopeNeverReportsWhatTheWholePayloadDoesNotSay(t *testing.T) {
	for _, full := range []string{
		`{"t":"GUILD_MEMBER_ADD","s":1234,"op":0,"d":{"guild_id":"1","user":{"id":"2","name":"\"}\\"}}}`,
		`{"op":0,"d":{"a":[1,{"t":"X","s":5}]},"s":77,"t":"MESSAGE_\u0043REATE"}`,
		` { "s" : -3 , "t" : "A" , "op" : 0 , "d" : null } `,
	} {
		env, err := parseEnvelope([]byte(full))
		if err != nil {
			t.Fatal(err)
		}
		known := false
		for i := range len(full) + 1 {
			typ, s, ok := peekEnvelope([]byte(full[:i]))
			if typ != "" && typ != env.T || s != 0 && s != env.S {
				t.Fatalf("prefix %q: %q, %d; the payload says %q, %d", full[:i], typ, s, env.T, env.S)
			}
			if known && !ok {
				t.Fatalf("prefix %q: t and s lost", full[:i])
			}
			known = ok
		}
		if !known {
			t.Fatalf("%s: t and s never found", full)
		}
	}
}

func TestPeekEnvelopeDoesNotAllocateForKnownTypes(t *testing.T) {
	prefix := []byte(`{"t":"GUILD_CREATE","s":42,"op":0,"d":{"id":"1","name":"x","members":[{"us`)
	if n := testing.AllocsPerRun(100, func() { peekEnvelope(prefix) }); n != 0 {
		t.Errorf("%.0f allocations; want 0", n)
	}
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

// checkEnvelope fails unless parseEnvelope reads msg as want, with d a
// sub-slice of msg.
func checkEnvelope(t *testing.T, msg []byte, want envelope) {
	t.Helper()
	got, err := parseEnvelope(msg)
	if err != nil {
		t.Fatalf("%q: %v; encoding/json accepts it", msg, err)
	}
	if got.Op != want.Op || got.S != want.S || got.T != want.T || !bytes.Equal(got.D, want.D) || (got.D == nil) != (want.D == nil) {
		t.Fatalf("%q: op=%d s=%d t=%q d=%q; encoding/json: op=%d s=%d t=%q d=%q",
			msg, got.Op, got.S, got.T, got.D, want.Op, want.S, want.T, want.D)
	}
	if len(got.D) > 0 && !inside(msg, got.D) {
		t.Fatalf("%q: d is not a sub-slice of the message", msg)
	}
}

// inside reports whether sub's bytes are part of msg's array.
func inside(msg, sub []byte) bool {
	for i := range msg {
		if &msg[i] == &sub[0] {
			return i+len(sub) <= len(msg)
		}
	}
	return false
}

// referenceEnvelope is parseEnvelope's specification written with
// encoding/json: the payload is valid JSON whose top level is an object,
// read as a map (exact keys after unescaping, the last of repeated keys
// winning); op is an integer, s an integer or null, t a string or null, and
// d any value.
func referenceEnvelope(msg []byte) (envelope, error) {
	var env envelope
	var top map[string]json.RawMessage
	if !json.Valid(msg) {
		return env, errors.New("invalid JSON")
	}
	if err := json.Unmarshal(msg, &top); err != nil || top == nil {
		return env, errors.New("not an object")
	}
	op, ok := top["op"]
	if !ok || string(op) == "null" {
		return env, errors.New("no op")
	}
	if err := json.Unmarshal(op, &env.Op); err != nil {
		return env, err
	}
	if s := top["s"]; s != nil {
		var seq *int64
		if err := json.Unmarshal(s, &seq); err != nil {
			return env, err
		}
		if seq != nil {
			env.S = *seq
		}
	}
	if t := top["t"]; t != nil {
		var typ *string
		if err := json.Unmarshal(t, &typ); err != nil {
			return env, err
		}
		if typ != nil {
			env.T = *typ
		}
	}
	env.D = top["d"]
	return env, nil
}

// referenceFields is event.ParseFields's specification written with
// encoding/json, for a d that is valid JSON: the routing fields are looked
// up in maps and must be strings (IDs), objects (user, member) or booleans
// (unavailable), or null.
func referenceFields(t string, d []byte) (event.Fields, error) {
	var f event.Fields
	top, err := refObject(d)
	if err != nil || top == nil {
		return f, errors.New("not an object")
	}
	self := t == "GUILD_CREATE" || t == "GUILD_DELETE"
	guildKey := "guild_id"
	if self {
		guildKey = "id"
	}
	user, err1 := refObject(top["user"])
	member, err2 := refObject(top["member"])
	memberUser, err3 := refObject(member["user"])
	var err4 error
	if raw := top["unavailable"]; self && raw != nil {
		err4 = json.Unmarshal(raw, &f.Unavailable)
	}
	var userID, memberUserID string
	for _, e := range []error{
		refString(top[guildKey], &f.GuildID), refString(top["channel_id"], &f.ChannelID), err1, err2, err3,
		refString(user["id"], &userID), refString(memberUser["id"], &memberUserID), err4,
	} {
		if e != nil {
			return f, e
		}
	}
	f.UserID = userID
	if _, ok := user["id"]; !ok || string(user["id"]) == "null" {
		f.UserID = memberUserID
	}
	return f, nil
}

func refString(raw json.RawMessage, s *string) error {
	if raw == nil {
		return nil
	}
	var p *string
	err := json.Unmarshal(raw, &p)
	if p != nil {
		*s = *p
	}
	return err
}

func refObject(raw json.RawMessage) (map[string]json.RawMessage, error) {
	if raw == nil {
		return nil, nil
	}
	var m map[string]json.RawMessage
	err := json.Unmarshal(raw, &m)
	return m, err
}

// fuzzSeeds are frames that exercise the scanner's corners: escapes,
// unicode, invalid UTF-8, deep nesting, numbers in every form, repeated and
// escaped keys, and the routing fields. (The nesting limit itself has unit
// tests: seeds 10000 levels deep make every new input the fuzzer finds from
// them slow to minimize.)
var fuzzSeeds = []string{
	`{"op":0,"d":{"a":"\`,
	`{"t":"GUILD_MEMBER_ADD","s":1,"op":0,"d":{"guild_id":"\u0031\u0032","user":{"id":"\"2\\"},"nick":"\ud83d\ude00"}}`,
	`{"t":"INTERACTION_CREATE","s":2,"op":0,"d":{"id":"3","channel_id":"4","member":{"user":{"id":"5"}},"user":null}}`,
	`{"t":"GUILD_CREATE","s":3,"op":0,"d":{"id":"1","unavailable":false,"name":"caf\u00e9 é 😀","members":[{"user":{"id":"2"}}]}}`,
	`{"t":"GUILD_DELETE","s":4,"op":0,"d":{"id":"1","unavailable":true}}`,
	`{"t":"GUILD_\u004dEMBER_ADD","s":5,"op":0,"d":{"guild\u005fid":"1","user":{"\u0069d":"2"}}}`,
	`{"\u0074":"A","\u0073":6,"\u006fp":0,"\u0064":{"\u0041":"\u0041"}}`,
	`{"op":0,"t":"\ud800","s":7,"d":"\udc00\ud800\udc00"}`,
	`{"op":0,"t":"\uD83D\uDE00","s":8,"d":["\"","\\","\/","\b\f\n\r\t"]}`,
	"{\"op\":0,\"t\":\"\xff\",\"s\":9,\"d\":{\"\xfe\":\"\xc3\",\"guild_id\":\"\xed\xa0\x80\"}}",
	"{\"op\":0,\"d\":\"\x7f\x80\"}",
	`{"op":0,"s":10,"d":[0,-0,1,-1,0.5,-0.5e-3,1E+2,1e2,1.0E-0,123456789012345678901234567890,1.7976931348623157e309]}`,
	`{"op":0,"s":-9223372036854775808,"d":9223372036854775807}`,
	`{"op":0,"s":9223372036854775808}`,
	`{"op":1.0}`, `{"op":1e0}`, `{"op":-0}`, `{"op":0,"s":01}`, `{"op":0,"d":[1,]}`, `{"op":0,"d":{"a":1,}}`,
	`{"op":0,"op":"x"}`, `{"op":"x","op":0}`, `{"op":0,"s":1,"s":null,"t":"A","t":null}`,
	`{"op":0,"d":` + strings.Repeat(`{"a":[`, 40) + "1" + strings.Repeat("]}", 40) + `}`,
	`{"op":0,"d":` + strings.Repeat(`{"a":[`, 40) + "1" + strings.Repeat("}]", 40) + `}`,
	" \t\r\n{ \"op\" :\n0 , \"d\" : { } }\n",
	"{\"op\":0,\"d\":\"a\tb\"}", "{\"op\":0,\"d\":\"\x00\"}", "\xef\xbb\xbf{\"op\":0}",
	`{"op":0,"d":tru}`, `{"op":0,"d":nul}`, `{"op":0,"d":"\u12"}`, `{"op":0,"d":"\x41"}`,
	`{"op":0,"t":"exactly8","s":1,"d":"exactly8"}`, `{"op":0,"t":"0123456789abcdef","d":"01234567\""}`,
	`{"op":0} `, `{"op":0}x`, `{"op":0}{}`, `null`, `[]`, `{}`,
}

// FuzzParseEnvelope holds the one JSON scanner to encoding/json on arbitrary
// frames: parseEnvelope accepts exactly the frames encoding/json decodes
// into an envelope, with the same op, s, t and d; and for an accepted
// frame whose d is an object, event.ParseFields finds the routing fields
// encoding/json finds, or rejects a wrong type as it does.
func FuzzParseEnvelope(f *testing.F) {
	for _, c := range envelopeCases {
		f.Add([]byte(c))
	}
	for _, c := range fuzzSeeds {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		want, wantErr := referenceEnvelope(msg)
		got, err := parseEnvelope(msg)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("%q: parseEnvelope error = %v; encoding/json says %v", msg, err, wantErr)
		}
		if err != nil {
			if !errors.Is(err, errEnvelope) {
				t.Fatalf("%q: error %v does not wrap errEnvelope", msg, err)
			}
			return
		}
		checkEnvelope(t, msg, want)
		checkEnvelopeFields(t, msg)
		if len(got.D) == 0 || got.D[0] != '{' {
			return
		}
		types := []string{"GUILD_CREATE", "INTERACTION_CREATE"}
		if _, _, routed := event.Route(got.T); routed {
			types = []string{got.T}
		}
		for _, typ := range types {
			wantF, wantErr := referenceFields(typ, got.D)
			gotF, err := event.ParseFields(typ, got.D)
			if (err == nil) != (wantErr == nil) || err == nil && gotF != wantF {
				t.Fatalf("%q: ParseFields(%s) = %+v, %v; encoding/json says %+v, %v", msg, typ, gotF, err, wantF, wantErr)
			}
		}
	})
}

// benchFrames are realistic dispatch frames, built by the simulator and
// framed as Discord frames them (t, s, op, d).
func benchFrames(b *testing.B) []struct {
	name  string
	frame []byte
} {
	sim := discordsim.New(discordsim.Config{})
	const guild, channel, user = "1197345237498982400", "1197345237498982405", "80351110224678912"
	frame := func(t string, d []byte) []byte {
		return []byte(`{"t":"` + t + `","s":` + strconv.Itoa(1234) + `,"op":0,"d":` + string(d) + `}`)
	}
	return []struct {
		name  string
		frame []byte
	}{
		{"MESSAGE_CREATE", frame("MESSAGE_CREATE", sim.MessageCreateBody(guild, channel, user, true))},
		{"GUILD_MEMBER_ADD", frame("GUILD_MEMBER_ADD", sim.MemberAddBody(guild, user))},
		{"INTERACTION_CREATE", frame("INTERACTION_CREATE", sim.InteractionCreateBody(guild, channel, user))},
		{"GUILD_CREATE", frame("GUILD_CREATE", sim.GuildCreateBody(0, guild, 80))},
	}
}

// BenchmarkDispatchPath is the read goroutine's CPU per dispatch: the
// envelope pass over the frame, then the event built from the routing
// fields that pass located (one pass over d), the event released for
// reuse as an ack would. two-pass is the path before: event.Build reading d
// again after the envelope's validation (MESSAGE_CREATE is not published:
// Build returns at once).
func BenchmarkDispatchPath(b *testing.B) {
	at := time.Now()
	router, _ := event.NewRouter(nil)
	publishes := router.Publishes // bound once, as the read loop does
	for _, f := range benchFrames(b) {
		for _, path := range []string{"one-pass", "two-pass"} {
			b.Run(f.name+"/"+strconv.Itoa(len(f.frame))+"B/"+path, func(b *testing.B) {
				b.SetBytes(int64(len(f.frame)))
				b.ReportAllocs()
				var env envelope
				for i := 0; i < b.N; i++ {
					if err := parseEnvelopeInto(f.frame, &env, publishes); err != nil {
						b.Fatal(err)
					}
					var ev *event.Event
					var err error
					if path == "one-pass" {
						ev, _, err = router.BuildScanned(0, "session", env.S, env.T, env.D, &env.Fields, at)
					} else {
						ev, _, err = event.Build(0, "session", env.S, env.T, env.D, at)
					}
					if err != nil {
						b.Fatal(err)
					}
					event.Release(ev)
				}
			})
		}
	}
}

// BenchmarkEnvelope is the envelope pass alone on the same frames.
func BenchmarkEnvelope(b *testing.B) {
	for _, f := range benchFrames(b) {
		b.Run(f.name+"/"+strconv.Itoa(len(f.frame))+"B", func(b *testing.B) {
			b.SetBytes(int64(len(f.frame)))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := parseEnvelope(f.frame); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

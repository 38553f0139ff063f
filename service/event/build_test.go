package event

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// memberAdd is a realistic GUILD_MEMBER_ADD body (~650 bytes) with escaped
// quotes and braces, non-ASCII and a surrogate pair.
const memberAdd = `{"user":{"username":"example_user","public_flags":0,"primary_guild":null,"id":"80351110224678912","global_name":"Example \"User\" {}","display_name":null,"discriminator":"0","collectibles":null,"clan":null,"bot":false,"avatar_decoration_data":null,"avatar":"a_1269e74af4df7417b13759eae50c83dc"},"unusual_dm_activity_until":null,"roles":["41771983423143936","41771983423143937","41771983423143938"],"premium_since":null,"pending":false,"nick":"caf\u00e9 \ud83d\ude00","mute":false,"joined_at":"2024-01-09T18:07:32.123000+00:00","guild_id":"41771983423143937","flags":0,"deaf":false,"communication_disabled_until":null,"banner":null,"avatar":null}`

var receivedAt = time.UnixMilli(1700000000123)

func TestRouteMapsTheSixPublishedDispatchTypes(t *testing.T) {
	tests := []struct {
		t, eventType, subject string
	}{
		{"GUILD_CREATE", "guild.join", "events.guild.join"},
		{"GUILD_DELETE", "guild.leave", "events.guild.leave"},
		{"GUILD_MEMBER_ADD", "member.join", "events.member.join"},
		{"GUILD_MEMBER_REMOVE", "member.leave", "events.member.leave"},
		{"GUILD_MEMBER_UPDATE", "member.update", "events.member.update"},
		{"INTERACTION_CREATE", "interaction.create", "commands.interaction"},
	}
	for _, tt := range tests {
		eventType, subject, ok := Route(tt.t)
		if !ok || eventType != tt.eventType || subject != tt.subject {
			t.Errorf("Route(%q) = %q, %q, %v; want %q, %q, true", tt.t, eventType, subject, ok, tt.eventType, tt.subject)
		}
	}
}

func TestRouteRejectsOtherDispatchTypes(t *testing.T) {
	for _, typ := range []string{"", "READY", "RESUMED", "MESSAGE_CREATE", "GUILD_UPDATE", "guild_create", "GUILD_CREATE ", "GUILD_MEMBERS_CHUNK"} {
		if eventType, subject, ok := Route(typ); ok || eventType != "" || subject != "" {
			t.Errorf("Route(%q) = %q, %q, %v; want not routed", typ, eventType, subject, ok)
		}
	}
}

func TestBuildWritesTheBodyFieldsInOrder(t *testing.T) {
	tests := []struct {
		name    string
		t       string
		d       string
		typ     string
		subject string
		guild   string // as in the body: quoted or null
		channel string
		user    string
	}{
		{
			name: "guild create uses the guild's own id",
			t:    "GUILD_CREATE", typ: "guild.join", subject: "events.guild.join",
			d:     `{"id":"111","name":"g","unavailable":false,"channels":[{"id":"9","guild_id":"999"}],"guild_id":"ignored"}`,
			guild: `"111"`, channel: `null`, user: `null`,
		},
		{
			name: "guild delete uses the guild's own id",
			t:    "GUILD_DELETE", typ: "guild.leave", subject: "events.guild.leave",
			d:     `{"id":"111"}`,
			guild: `"111"`, channel: `null`, user: `null`,
		},
		{
			name: "guild delete with unavailable false is a leave",
			t:    "GUILD_DELETE", typ: "guild.leave", subject: "events.guild.leave",
			d:     `{"unavailable":false,"id":"111"}`,
			guild: `"111"`, channel: `null`, user: `null`,
		},
		{
			name: "member add",
			t:    "GUILD_MEMBER_ADD", typ: "member.join", subject: "events.member.join",
			d:     memberAdd,
			guild: `"41771983423143937"`, channel: `null`, user: `"80351110224678912"`,
		},
		{
			name: "member remove",
			t:    "GUILD_MEMBER_REMOVE", typ: "member.leave", subject: "events.member.leave",
			d:     `{"user":{"id":"222","username":"u"},"guild_id":"111"}`,
			guild: `"111"`, channel: `null`, user: `"222"`,
		},
		{
			name: "member update",
			t:    "GUILD_MEMBER_UPDATE", typ: "member.update", subject: "events.member.update",
			d:     `{"guild_id":"111","roles":[],"user":{"id":"222"},"nick":"n"}`,
			guild: `"111"`, channel: `null`, user: `"222"`,
		},
		{
			name: "interaction in a guild takes the user from member.user",
			t:    "INTERACTION_CREATE", typ: "interaction.create", subject: "commands.interaction",
			d:     `{"id":"333","type":2,"guild_id":"111","channel_id":"444","member":{"roles":["1"],"user":{"id":"222"}},"data":{"name":"ping","options":[{"name":"x","value":"}"}]}}`,
			guild: `"111"`, channel: `"444"`, user: `"222"`,
		},
		{
			name: "interaction in a DM takes the user from user",
			t:    "INTERACTION_CREATE", typ: "interaction.create", subject: "commands.interaction",
			d:     `{"id":"333","type":2,"channel_id":"444","user":{"id":"222"}}`,
			guild: `null`, channel: `"444"`, user: `"222"`,
		},
		{
			name: "user.id wins over member.user.id",
			t:    "INTERACTION_CREATE", typ: "interaction.create", subject: "commands.interaction",
			d:     `{"member":{"user":{"id":"1"}},"user":{"id":"2"}}`,
			guild: `null`, channel: `null`, user: `"2"`,
		},
		{
			name: "a user without id falls back to member.user.id",
			t:    "INTERACTION_CREATE", typ: "interaction.create", subject: "commands.interaction",
			d:     `{"user":{"username":"x"},"member":{"user":{"id":"1"}}}`,
			guild: `null`, channel: `null`, user: `"1"`,
		},
		{
			name: "missing fields are null",
			t:    "GUILD_MEMBER_ADD", typ: "member.join", subject: "events.member.join",
			d:     `{}`,
			guild: `null`, channel: `null`, user: `null`,
		},
		{
			name: "null fields are null",
			t:    "GUILD_MEMBER_ADD", typ: "member.join", subject: "events.member.join",
			d:     `{"guild_id":null,"channel_id":null,"user":null,"member":null}`,
			guild: `null`, channel: `null`, user: `null`,
		},
		{
			name: "nested ids do not count",
			t:    "GUILD_MEMBER_UPDATE", typ: "member.update", subject: "events.member.update",
			d:     `{"x":{"guild_id":"1","channel_id":"2","user":{"id":"3"}},"y":[{"member":{"user":{"id":"4"}}}]}`,
			guild: `null`, channel: `null`, user: `null`,
		},
		{
			name: "escaped ids are copied as valid JSON",
			t:    "GUILD_MEMBER_ADD", typ: "member.join", subject: "events.member.join",
			d:     `{"guild_id":"1\"2","user":{"id":"\u0033\\"}}`,
			guild: `"1\"2"`, channel: `null`, user: `"\u0033\\"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, publish, err := Build(3, "sess", 42, tt.t, []byte(tt.d), receivedAt)
			if err != nil || !publish {
				t.Fatalf("Build = %v, %v; want published", publish, err)
			}
			wantID := ID(3, "sess", 42)
			want := fmt.Sprintf(`{"event_id":%q,"event_type":%q,"shard_id":3,"timestamp":1700000000123,"guild_id":%s,"channel_id":%s,"user_id":%s,"data":%s}`,
				wantID, tt.typ, tt.guild, tt.channel, tt.user, tt.d)
			if string(ev.Body) != want {
				t.Errorf("body\n got %s\nwant %s", ev.Body, want)
			}
			if !json.Valid(ev.Body) {
				t.Errorf("body is not valid JSON: %s", ev.Body)
			}
			var wantGuild string
			if tt.guild != "null" {
				if err := json.Unmarshal([]byte(tt.guild), &wantGuild); err != nil {
					t.Fatal(err)
				}
			}
			got := *ev
			got.Body = nil
			wantEv := Event{ID: wantID, Type: tt.typ, Subject: tt.subject, ShardID: 3, Seq: 42, GuildID: wantGuild, ReceivedAt: receivedAt}
			if !reflect.DeepEqual(got, wantEv) {
				t.Errorf("event = %+v; want %+v", got, wantEv)
			}
			// Sized up front (to the size class of the exact size, the
			// pools' unit), not grown by append.
			if _, size, _ := sizeClass(len(ev.Body) + 40); cap(ev.Body) > size {
				t.Errorf("body cap %d for len %d: sized up front badly", cap(ev.Body), len(ev.Body))
			}
		})
	}
}

func TestBuildSkipsUnpublishedDispatches(t *testing.T) {
	tests := []struct{ t, d string }{
		{"MESSAGE_CREATE", `{"guild_id":"1"}`},
		{"READY", `not even JSON`}, // not read at all
		{"GUILD_DELETE", `{"id":"1","unavailable":true}`},
		{"GUILD_DELETE", `{"unavailable":true,"id":"1"}`},
	}
	for _, tt := range tests {
		ev, publish, err := Build(0, "s", 1, tt.t, []byte(tt.d), receivedAt)
		if ev != nil || publish || err != nil {
			t.Errorf("Build(%s, %s) = %v, %v, %v; want nil, false, nil", tt.t, tt.d, ev, publish, err)
		}
	}
}

func TestBuildPublishesAnUnavailableGuildCreate(t *testing.T) {
	// Only a GUILD_DELETE outage is filtered; the shard uses Fields to
	// count guilds and decides on GUILD_CREATE itself.
	_, publish, err := Build(0, "s", 1, "GUILD_CREATE", []byte(`{"id":"1","unavailable":true}`), receivedAt)
	if err != nil || !publish {
		t.Fatalf("Build = %v, %v; want published", publish, err)
	}
}

func TestBuildCopiesDataByteForByte(t *testing.T) {
	docs := []string{
		memberAdd,
		"{ \"guild_id\" : \"1\" ,\n\t\"z\":1e10, \"a\":[ ] , \"u\":\"\\u00e9\\/é\" }",
		`{"guild_id":"1","big":123456789012345678901234567890,"f":-0.5E-3}`,
	}
	for _, d := range docs {
		ev, _, err := Build(1, "s", 1, "GUILD_MEMBER_UPDATE", []byte(d), receivedAt)
		if err != nil {
			t.Fatalf("Build(%s): %v", d, err)
		}
		var body struct {
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(ev.Body, &body); err != nil {
			t.Fatalf("body %s: %v", ev.Body, err)
		}
		if string(body.Data) != d {
			t.Errorf("data\n got %s\nwant %s", body.Data, d)
		}
	}
}

func TestBuildDoesNotRetainTheCallersBuffer(t *testing.T) {
	d := []byte(`{"guild_id":"1"}`)
	ev, _, err := Build(1, "s", 1, "GUILD_MEMBER_ADD", d, receivedAt)
	if err != nil {
		t.Fatal(err)
	}
	before := string(ev.Body)
	copy(d, `{"guild_id":"2"}`)
	if string(ev.Body) != before || ev.GuildID != "1" {
		t.Errorf("event changed with the caller's buffer: %s, %q", ev.Body, ev.GuildID)
	}
}

func TestBuildRejectsMalformedData(t *testing.T) {
	docs := []string{
		``, ` `, `null`, `[]`, `"x"`, `1`, `{`, `}`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{,}`,
		`{"a":1}x`, `{"a":1}{}`, `{'a':1}`, `{a:1}`, `{"a":01}`, `{"a":1.}`, `{"a":.5}`,
		`{"a":1e}`, `{"a":-}`, `{"a":+1}`, `{"a":tru}`, `{"a":nul}`, `{"a":True}`,
		`{"a":"\x"}`, `{"a":"\u12"}`, `{"a":"\u12g4"}`, "{\"a\":\"\x01\"}", `{"a":"`, `{"a":"\`,
		`{"a":[1,]}`, `{"a":[1 2]}`, `{"a":{"b":1,}}`, `{"a":{"b"}}`, `{"a":[}`, `{"a":{]}`,
		`{"guild_id":"1"`, `{"guild_id":"1",`, `{"user":{"id":"1"}`, `{"member":{"user":{"id":"1"}}`,
		`{"guild_id":"1""channel_id":"2"}`, "{\"a\":1}\x00",
		`{"a":` + strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth) + `}`,
	}
	for _, d := range docs {
		for _, typ := range []string{"GUILD_CREATE", "GUILD_MEMBER_ADD", "INTERACTION_CREATE"} {
			ev, publish, err := Build(0, "s", 1, typ, []byte(d), receivedAt)
			if !errors.Is(err, ErrMalformed) || ev != nil || publish {
				t.Errorf("Build(%s, %.40q) = %v, %v, %v; want ErrMalformed", typ, d, ev, publish, err)
			}
		}
	}
}

func TestBuildRejectsRoutingFieldsOfTheWrongType(t *testing.T) {
	tests := []struct{ t, d string }{
		{"GUILD_MEMBER_ADD", `{"guild_id":1}`},
		{"GUILD_MEMBER_ADD", `{"channel_id":["1"]}`},
		{"GUILD_MEMBER_ADD", `{"user":"1"}`},
		{"GUILD_MEMBER_ADD", `{"user":{"id":1}}`},
		{"GUILD_MEMBER_ADD", `{"user":{"id":"1"},"member":{"user":{"id":false}}}`},
		{"GUILD_MEMBER_ADD", `{"member":[]}`},
		{"GUILD_MEMBER_ADD", `{"member":{"user":true}}`},
		{"GUILD_CREATE", `{"id":{}}`},
		{"GUILD_DELETE", `{"id":"1","unavailable":"true"}`},
	}
	for _, tt := range tests {
		if _, _, err := Build(0, "s", 1, tt.t, []byte(tt.d), receivedAt); !errors.Is(err, ErrMalformed) {
			t.Errorf("Build(%s, %s) = %v; want ErrMalformed", tt.t, tt.d, err)
		}
	}
}

func TestBuildIgnoresTheTypeOfFieldsItDoesNotRouteOn(t *testing.T) {
	tests := []struct{ t, d string }{
		{"GUILD_MEMBER_ADD", `{"id":1,"unavailable":"x","guild_id":"1"}`},
		{"GUILD_CREATE", `{"id":"1","guild_id":1}`},
	}
	for _, tt := range tests {
		if _, publish, err := Build(0, "s", 1, tt.t, []byte(tt.d), receivedAt); err != nil || !publish {
			t.Errorf("Build(%s, %s) = %v, %v; want published", tt.t, tt.d, publish, err)
		}
	}
}

func TestBuildErrorNamesTheProblemAndWhere(t *testing.T) {
	_, _, err := Build(0, "s", 77, "GUILD_MEMBER_ADD", []byte(`{"guild_id":1}`), receivedAt)
	if want := "event: malformed dispatch data: guild_id: want a string or null at offset 12"; err == nil || err.Error() != want {
		t.Errorf("err = %v; want %s", err, want)
	}
}

func TestIDIsAStableUUIDv5OfShardSessionAndSeq(t *testing.T) {
	// Pinned: changing the namespace or the name format would break
	// deduplication across a rolling upgrade.
	if got, want := idNamespace.String(), "71a1adaa-24c3-52e2-ba88-2131c2174dae"; got != want {
		t.Errorf("namespace = %s; want %s", got, want)
	}
	got := ID(3, "abc", 42)
	if want := "3be6e235-52e0-55c6-bb67-ccf5cd1c7cce"; got != want {
		t.Errorf("ID = %s; want %s", got, want)
	}
	if want := uuid.NewSHA1(idNamespace, []byte("3:abc:42")).String(); got != want {
		t.Errorf("ID = %s; want uuid.NewSHA1 %s", got, want)
	}
	if u := uuid.MustParse(got); u.Version() != 5 || u.Variant() != uuid.RFC4122 {
		t.Errorf("ID %s is version %d variant %v; want 5, RFC4122", got, u.Version(), u.Variant())
	}
	if ID(3, "abc", 42) != got {
		t.Error("ID is not deterministic")
	}
	long := strings.Repeat("s", 300) // past the stack buffer
	if ID(1, long, 1) != uuid.NewSHA1(idNamespace, []byte("1:"+long+":1")).String() {
		t.Error("ID differs from uuid.NewSHA1 for a long session ID")
	}
}

func TestIDDiffersByShardSessionAndSeq(t *testing.T) {
	ids := map[string]string{}
	for _, k := range []struct {
		shard int
		sess  string
		seq   int64
	}{{0, "a", 1}, {1, "a", 1}, {0, "b", 1}, {0, "a", 2}, {0, "a:1", 1}, {0, "a", 11}, {-1, "a", 1}} {
		id := ID(k.shard, k.sess, k.seq)
		name := fmt.Sprint(k)
		if prev, ok := ids[id]; ok {
			t.Errorf("%s and %s share ID %s", prev, name, id)
		}
		ids[id] = name
	}
}

func TestBuildUsesID(t *testing.T) {
	ev, _, err := Build(5, "sess", 9, "GUILD_MEMBER_ADD", []byte(`{}`), receivedAt)
	if err != nil {
		t.Fatal(err)
	}
	if ev.ID != ID(5, "sess", 9) || !strings.HasPrefix(string(ev.Body), `{"event_id":"`+ev.ID+`"`) {
		t.Errorf("event ID %s, body %s; want ID(5, sess, 9)", ev.ID, ev.Body)
	}
}

func BenchmarkBuild(b *testing.B) {
	d := []byte(memberAdd)
	b.SetBytes(int64(len(d)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Build(7, "9f3c2a1b7e6d5c4b3a291807f6e5d4c3", 123456, "GUILD_MEMBER_ADD", d, receivedAt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseFields(b *testing.B) {
	d := []byte(memberAdd)
	b.SetBytes(int64(len(d)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseFields("GUILD_MEMBER_ADD", d); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkID(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		ID(7, "9f3c2a1b7e6d5c4b3a291807f6e5d4c3", 123456)
	}
}

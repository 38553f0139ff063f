package event

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// messageCreate is a realistic MESSAGE_CREATE body (~1.2 KB).
const messageCreate = `{"type":0,"tts":false,"timestamp":"2024-01-09T18:07:32.123000+00:00","pinned":false,"nonce":"1194365221419417600","mentions":[],"mention_roles":[],"mention_everyone":false,"member":{"roles":["41771983423143937"],"premium_since":null,"pending":false,"nick":"caf\u00e9","mute":false,"joined_at":"2023-05-01T10:00:00.000000+00:00","flags":0,"deaf":false,"communication_disabled_until":null,"banner":null,"avatar":null},"id":"1194365221419417601","flags":0,"embeds":[],"edited_timestamp":null,"content":"the new update broke my build again","components":[],"channel_type":0,"channel_id":"41771983423143938","author":{"username":"example_user","public_flags":0,"id":"80351110224678912","global_name":"Example \"User\" {}","discriminator":"0","clan":null,"avatar_decoration_data":null,"avatar":"a_1269e74af4df7417b13759eae50c83dc"},"attachments":[],"guild_id":"41771983423143937"}`

func mustContentID(t *testing.T, typ, d string) string {
	t.Helper()
	id, ok := ContentID(typ, []byte(d))
	if !ok {
		t.Fatalf("ContentID(%s, %.80s) has no key, want one", typ, d)
	}
	return id
}

func TestContentIDIsAStableUUIDv5(t *testing.T) {
	id := mustContentID(t, "MESSAGE_CREATE", `{"id":"1194365221419417601"}`)
	// Pinned: every gateway version must derive the same ID for an event,
	// or JetStream stores both copies during a rolling upgrade.
	if id != "22e5eea7-f65d-5c26-87c5-bb198ea4019b" {
		t.Errorf("ContentID = %s; the derivation changed", id)
	}
	u := uuid.MustParse(id)
	if u.Version() != 5 || u.Variant() != uuid.RFC4122 {
		t.Errorf("ContentID %s is version %d variant %v, want a UUIDv5", id, u.Version(), u.Variant())
	}
	if contentNamespace == idNamespace {
		t.Fatal("content IDs share the namespace of (shard, session, seq) IDs")
	}
}

func TestContentIDKeysEachTypeOnWhatMakesItOneEvent(t *testing.T) {
	tests := []struct {
		t     string
		d     string
		same  []string // other payloads of the same event (another session's copy)
		other []string // payloads of other events of the same type
	}{
		{"MESSAGE_CREATE", messageCreate,
			[]string{strings.Replace(messageCreate, `"the new update broke my build again"`, `""`, 1), `{"id":"1194365221419417601"}`},
			[]string{`{"id":"1194365221419417602"}`}},
		{"INTERACTION_CREATE", `{"id":"1194365221419417601","type":2,"token":"abc","guild_id":"1"}`,
			[]string{`{"token":"abc","id":"1194365221419417601"}`},
			[]string{`{"id":"1194365221419417600","type":2,"token":"abc","guild_id":"1"}`}},
		{"MESSAGE_DELETE", `{"id":"5","channel_id":"2","guild_id":"1"}`, nil,
			[]string{`{"id":"6","channel_id":"2","guild_id":"1"}`}},
		{"MESSAGE_DELETE_BULK", `{"ids":["5","6"],"channel_id":"2","guild_id":"1"}`, nil,
			[]string{`{"ids":["7"],"channel_id":"2","guild_id":"1"}`}},
		{"GUILD_MEMBER_ADD", memberAdd,
			[]string{`{"guild_id":"41771983423143937","joined_at":"2024-01-09T18:07:32.123000+00:00","user":{"id":"80351110224678912"}}`},
			[]string{
				strings.Replace(memberAdd, "18:07:32.123000", "18:08:01.000001", 1),               // the same user rejoining
				strings.Replace(memberAdd, `"guild_id":"41771983423143937"`, `"guild_id":"9"`, 1), // another guild
				strings.Replace(memberAdd, `"id":"80351110224678912"`, `"id":"9"`, 1),             // another user
			}},
		{"GUILD_ROLE_CREATE", `{"guild_id":"1","role":{"id":"7","name":"Member"}}`, nil,
			[]string{`{"guild_id":"1","role":{"id":"8","name":"Member"}}`}},
		{"GUILD_ROLE_DELETE", `{"guild_id":"1","role_id":"7"}`, nil,
			[]string{`{"guild_id":"1","role_id":"8"}`}},
		{"THREAD_CREATE", `{"id":"11","newly_created":true,"parent_id":"2"}`, nil,
			[]string{`{"id":"12","newly_created":true,"parent_id":"2"}`}},
		{"GUILD_AUDIT_LOG_ENTRY_CREATE", `{"id":"13","action_type":20,"guild_id":"1"}`, nil,
			[]string{`{"id":"14","action_type":20,"guild_id":"1"}`}},
	}
	for _, tt := range tests {
		t.Run(tt.t, func(t *testing.T) {
			id := mustContentID(t, tt.t, tt.d)
			for _, d := range tt.same {
				if got := mustContentID(t, tt.t, d); got != id {
					t.Errorf("copy %.80s has ID %s, want %s: one event, one ID", d, got, id)
				}
			}
			for _, d := range tt.other {
				if got := mustContentID(t, tt.t, d); got == id {
					t.Errorf("%.80s shares ID %s with %.80s: two events, one ID", d, id, tt.d)
				}
			}
		})
	}
}

func TestContentIDDiffersByType(t *testing.T) {
	// A message's creation and deletion name the same id.
	d := `{"id":"1194365221419417601","channel_id":"2"}`
	if mustContentID(t, "MESSAGE_CREATE", d) == mustContentID(t, "MESSAGE_DELETE", d) {
		t.Fatal("MESSAGE_CREATE and MESSAGE_DELETE of one message share an ID")
	}
}

func TestContentIDRefusesTypesWhoseContentCanRepeat(t *testing.T) {
	tests := []struct{ t, d string }{
		{"GUILD_CREATE", `{"id":"1","joined_at":"2024-01-09T18:07:32.123000+00:00","unavailable":false}`},
		{"GUILD_DELETE", `{"id":"1"}`},
		{"GUILD_MEMBER_REMOVE", `{"guild_id":"1","user":{"id":"2"}}`},
		{"GUILD_MEMBER_UPDATE", memberAdd},
		{"MESSAGE_UPDATE", `{"id":"5","edited_timestamp":"2024-01-09T18:07:32.123000+00:00","channel_id":"2"}`},
		{"MESSAGE_REACTION_ADD", `{"user_id":"2","message_id":"5","emoji":{"id":null,"name":"👍"},"channel_id":"3"}`},
		{"MESSAGE_REACTION_REMOVE", `{"user_id":"2","message_id":"5","emoji":{"id":null,"name":"👍"},"channel_id":"3"}`},
		{"MESSAGE_REACTION_REMOVE_ALL", `{"message_id":"5","channel_id":"3"}`},
		{"TYPING_START", `{"user_id":"2","timestamp":1704823652,"channel_id":"3","guild_id":"1"}`},
		{"PRESENCE_UPDATE", `{"user":{"id":"2"},"status":"online","guild_id":"1"}`},
		{"VOICE_STATE_UPDATE", `{"user_id":"2","session_id":"abc","channel_id":"3","self_mute":true}`},
		{"GUILD_BAN_ADD", `{"guild_id":"1","user":{"id":"2"}}`},
		{"CHANNEL_UPDATE", `{"id":"3","name":"general"}`},
		{"READY", `{"session_id":"abc"}`},
		{"SOMETHING_NEW", `{"id":"1"}`},
	}
	for _, tt := range tests {
		if HasContentKey(tt.t) {
			t.Errorf("HasContentKey(%s) = true, want false", tt.t)
		}
		if id, ok := ContentID(tt.t, []byte(tt.d)); ok {
			t.Errorf("ContentID(%s) = %s, want no key", tt.t, id)
		}
	}
}

func TestContentIDRefusesPayloadsWithoutTheirKey(t *testing.T) {
	tests := []struct{ name, t, d string }{
		{"no id", "MESSAGE_CREATE", `{"channel_id":"2"}`},
		{"null id", "MESSAGE_CREATE", `{"id":null}`},
		{"numeric id", "MESSAGE_CREATE", `{"id":5}`},
		{"an earlier id does not count", "MESSAGE_CREATE", `{"id":"5","id":null}`},
		{"no user", "GUILD_MEMBER_ADD", `{"guild_id":"1","joined_at":"2024-01-09T18:07:32.123000+00:00"}`},
		{"null user", "GUILD_MEMBER_ADD", `{"guild_id":"1","user":null,"joined_at":"2024-01-09T18:07:32.123000+00:00"}`},
		{"a later user without id", "GUILD_MEMBER_ADD", `{"guild_id":"1","user":{"id":"2"},"user":{},"joined_at":"2024-01-09T18:07:32.123000+00:00"}`},
		{"no joined_at", "GUILD_MEMBER_ADD", `{"guild_id":"1","user":{"id":"2"}}`},
		{"thread joined, not created", "THREAD_CREATE", `{"id":"11","parent_id":"2"}`},
		{"thread not newly created", "THREAD_CREATE", `{"id":"11","newly_created":false}`},
		{"empty bulk", "MESSAGE_DELETE_BULK", `{"ids":[ ],"channel_id":"2"}`},
		{"bulk ids not an array", "MESSAGE_DELETE_BULK", `{"ids":"5"}`},
		{"not an object", "MESSAGE_CREATE", `["id","5"]`},
		{"malformed", "MESSAGE_CREATE", `{"id":"5",}`},
		{"truncated", "MESSAGE_CREATE", `{"id":"5"`},
		{"trailing data", "MESSAGE_CREATE", `{"id":"5"} {}`},
		{"empty", "MESSAGE_CREATE", ``},
	}
	for _, tt := range tests {
		if id, ok := ContentID(tt.t, []byte(tt.d)); ok {
			t.Errorf("%s: ContentID(%s, %s) = %s, want no key", tt.name, tt.t, tt.d, id)
		}
	}
}

func TestContentIDOfALargeBulkDeleteHashesItsIDs(t *testing.T) {
	ids := func(from int) string {
		var b strings.Builder
		for i := range 100 {
			fmt.Fprintf(&b, "%q,", fmt.Sprint(1194365221419417600+from+i))
		}
		return `{"ids":[` + strings.TrimSuffix(b.String(), ",") + `],"channel_id":"2"}`
	}
	a, b := mustContentID(t, "MESSAGE_DELETE_BULK", ids(0)), mustContentID(t, "MESSAGE_DELETE_BULK", ids(100))
	if a == b {
		t.Fatal("two bulk deletes of 100 different messages share an ID")
	}
	if again := mustContentID(t, "MESSAGE_DELETE_BULK", ids(0)); again != a {
		t.Fatalf("the same bulk delete gave %s and %s", a, again)
	}
}

func TestUseContentIDGivesBothCopiesOneID(t *testing.T) {
	d := []byte(memberAdd)
	old, _, err := Build(2, "old-session", 41, "GUILD_MEMBER_ADD", d, receivedAt)
	if err != nil {
		t.Fatal(err)
	}
	next, _, err := Build(5, "new-session", 7, "GUILD_MEMBER_ADD", d, receivedAt)
	if err != nil {
		t.Fatal(err)
	}
	before := string(old.Body)
	for _, ev := range []*Event{old, next} {
		if ok, err := UseContentID(ev, "GUILD_MEMBER_ADD", d); !ok || err != nil {
			t.Fatalf("UseContentID = %v, %v", ok, err)
		}
	}
	want := mustContentID(t, "GUILD_MEMBER_ADD", memberAdd)
	if old.ID != want || next.ID != want {
		t.Fatalf("IDs %s and %s, want both %s", old.ID, next.ID, want)
	}
	var body struct {
		EventID string          `json:"event_id"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(old.Body, &body); err != nil {
		t.Fatalf("body after UseContentID: %v", err)
	}
	if body.EventID != want || string(body.Data) != memberAdd {
		t.Errorf("body event_id %s, data %.40s...; want %s and d unchanged", body.EventID, body.Data, want)
	}
	if got := strings.Replace(before, ID(2, "old-session", 41), want, 1); got != string(old.Body) {
		t.Errorf("UseContentID changed more than the event_id:\n%s\n%s", before, old.Body)
	}
}

func TestUseContentIDLeavesAnEventWithoutKeyAsItIs(t *testing.T) {
	d := []byte(`{"guild_id":"1","user":{"id":"2"}}`)
	ev, _, err := Build(2, "s", 41, "GUILD_MEMBER_REMOVE", d, receivedAt)
	if err != nil {
		t.Fatal(err)
	}
	body := string(ev.Body)
	if ok, err := UseContentID(ev, "GUILD_MEMBER_REMOVE", d); ok || err != nil {
		t.Fatalf("UseContentID = %v, %v; want false, nil", ok, err)
	}
	if ev.ID != ID(2, "s", 41) || string(ev.Body) != body {
		t.Error("an event without a content key was changed")
	}
}

func TestUseContentIDRefusesABodyThatDoesNotBeginWithItsID(t *testing.T) {
	ev := &Event{ID: ID(1, "s", 1), Body: []byte(`{"event_type":"x"}`)}
	if _, err := UseContentID(ev, "MESSAGE_CREATE", []byte(`{"id":"5"}`)); err == nil {
		t.Fatal("no error for a body without the event_id at its head")
	}
}

func TestContentUUIDDoesNotAllocate(t *testing.T) {
	for _, c := range []struct{ t, d string }{{"MESSAGE_CREATE", messageCreate}, {"GUILD_MEMBER_ADD", memberAdd}} {
		d := []byte(c.d)
		if n := testing.AllocsPerRun(100, func() { ContentUUID(c.t, d) }); n != 0 {
			t.Errorf("ContentUUID(%s) allocates %v times, want 0", c.t, n)
		}
	}
}

// referenceContentID is ContentUUID written with encoding/json, to hold
// the scanner to the decoder's reading of a payload.
func referenceContentID(typ string, d []byte) (uuid.UUID, bool) {
	k, ok := contentKeyOf(typ)
	if !ok {
		return uuid.UUID{}, false
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(d, &top) != nil || top == nil {
		return uuid.UUID{}, false
	}
	if k.whenTrue != "" && string(top[k.whenTrue]) != "true" {
		return uuid.UUID{}, false
	}
	var text []byte
	for _, p := range k.parts {
		raw := top[p]
		if parent, child, nested := strings.Cut(p, "."); nested {
			var obj map[string]json.RawMessage
			_ = json.Unmarshal(top[parent], &obj)
			raw = obj[child]
		}
		switch {
		case k.array && (len(raw) == 0 || raw[0] != '[' || !strings.Contains(string(raw), `"`)):
			return uuid.UUID{}, false
		case !k.array && (len(raw) == 0 || raw[0] != '"'):
			return uuid.UUID{}, false
		}
		text = append(text, raw...)
	}
	if len(contentNamespace)+len(typ)+len(text) > 512 {
		return uuid.UUID{}, false // hashed parts: not modelled here
	}
	return uuid.NewSHA1(contentNamespace, append([]byte(typ), text...)), true
}

func FuzzContentIDAgreesWithEncodingJSON(f *testing.F) {
	for _, s := range []string{messageCreate, memberAdd, `{"id":"5","id":null}`, `{"guild_id":"1","user":{"id":"2"},"user":{},"joined_at":"x"}`,
		`{"id":"11","newly_created":true}`, `{"ids":["5"]}`, `{"guild_id":"1","role":{"id":"7"}}`, `{"\u0069d":"5"}`, `{"id":"5"} x`} {
		f.Add(s)
	}
	types := []string{"MESSAGE_CREATE", "GUILD_MEMBER_ADD", "THREAD_CREATE", "MESSAGE_DELETE_BULK", "GUILD_ROLE_CREATE", "GUILD_ROLE_DELETE"}
	f.Fuzz(func(t *testing.T, d string) {
		for _, typ := range types {
			got, gotOK := ContentUUID(typ, []byte(d))
			want, wantOK := referenceContentID(typ, []byte(d))
			if gotOK != wantOK || got != want {
				if gotOK && len(d) > 400 {
					continue // a hashed part, which the reference does not model
				}
				t.Fatalf("ContentUUID(%s, %q) = %v, %v; encoding/json reads %v, %v", typ, d, got, gotOK, want, wantOK)
			}
		}
	})
}

func BenchmarkContentUUID(b *testing.B) {
	for _, c := range []struct{ t, d string }{{"MESSAGE_CREATE", messageCreate}, {"GUILD_MEMBER_ADD", memberAdd}, {"GUILD_MEMBER_REMOVE", memberAdd}} {
		b.Run(c.t, func(b *testing.B) {
			d := []byte(c.d)
			b.SetBytes(int64(len(d)))
			b.ReportAllocs()
			for b.Loop() {
				ContentUUID(c.t, d)
			}
		})
	}
}

func BenchmarkUseContentID(b *testing.B) {
	d := []byte(memberAdd)
	b.ReportAllocs()
	for b.Loop() {
		ev, _, _ := Build(2, "s", 41, "GUILD_MEMBER_ADD", d, receivedAt)
		_, _ = UseContentID(ev, "GUILD_MEMBER_ADD", d)
	}
}

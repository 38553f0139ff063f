package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
)

// refFields is the specification of the scanner written with encoding/json:
// d must be valid JSON whose top level is an object; the routing fields are
// looked up in maps (last duplicate wins, exact key match after unescaping)
// and must be strings, objects or booleans as expected, or null. A nil
// pointer means null in the body.
type refFields struct {
	guild, channel, user *string
	unavailable          bool
}

func reference(t string, d []byte) (refFields, error) {
	var r refFields
	// d must stay valid JSON one level deeper, as it is in the body.
	if !json.Valid(d) || !json.Valid([]byte("["+string(d)+"]")) {
		return r, errors.New("invalid JSON")
	}
	if trimmed := bytes.TrimLeft(d, " \t\r\n"); trimmed[0] != '{' {
		return r, errors.New("not an object")
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(d, &top); err != nil {
		return r, err
	}
	self := t == "GUILD_CREATE" || t == "GUILD_DELETE"
	guildKey := "guild_id"
	if self {
		guildKey = "id"
	}
	var err error
	if r.guild, err = refString(top[guildKey]); err != nil {
		return r, err
	}
	if r.channel, err = refString(top["channel_id"]); err != nil {
		return r, err
	}
	user, err := refObject(top["user"])
	if err != nil {
		return r, err
	}
	if r.user, err = refString(user["id"]); err != nil {
		return r, err
	}
	member, err := refObject(top["member"])
	if err != nil {
		return r, err
	}
	memberUser, err := refObject(member["user"])
	if err != nil {
		return r, err
	}
	memberUserID, err := refString(memberUser["id"])
	if err != nil {
		return r, err
	}
	if r.user == nil {
		r.user = memberUserID
	}
	if raw := top["unavailable"]; self && raw != nil && string(raw) != "null" {
		if err := json.Unmarshal(raw, &r.unavailable); err != nil {
			return r, err
		}
	}
	return r, nil
}

func refString(raw json.RawMessage) (*string, error) {
	if raw == nil || string(raw) == "null" {
		return nil, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

func refObject(raw json.RawMessage) (map[string]json.RawMessage, error) {
	if raw == nil || string(raw) == "null" {
		return nil, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	return m, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

var dispatchTypes = []string{"GUILD_CREATE", "GUILD_DELETE", "GUILD_MEMBER_ADD", "GUILD_MEMBER_REMOVE", "GUILD_MEMBER_UPDATE", "INTERACTION_CREATE", "MESSAGE_CREATE"}

// crossCheck reports how ParseFields and Build disagree with reference on
// (t, d).
func crossCheck(t *testing.T, typ string, d []byte) {
	t.Helper()
	want, wantErr := reference(typ, d)
	got, err := ParseFields(typ, d)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("ParseFields(%s, %q) error = %v; encoding/json says %v", typ, d, err, wantErr)
	}
	if err != nil {
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("ParseFields(%s, %q) error = %v; want ErrMalformed", typ, d, err)
		}
		return
	}
	wantFields := Fields{GuildID: deref(want.guild), ChannelID: deref(want.channel), UserID: deref(want.user), Unavailable: want.unavailable}
	if got != wantFields {
		t.Fatalf("ParseFields(%s, %q) = %+v; encoding/json says %+v", typ, d, got, wantFields)
	}

	ev, publish, err := Build(1, "s", 1, typ, d, receivedAt)
	_, _, routed := Route(typ)
	switch {
	case err != nil:
		t.Fatalf("Build(%s, %q): %v; ParseFields accepted it", typ, d, err)
	case !routed || typ == "GUILD_DELETE" && want.unavailable:
		if publish || ev != nil {
			t.Fatalf("Build(%s, %q) published", typ, d)
		}
		return
	case !publish:
		t.Fatalf("Build(%s, %q) did not publish", typ, d)
	}
	checkBody(t, ev.Body, d)
	var body struct {
		GuildID   *string `json:"guild_id"`
		ChannelID *string `json:"channel_id"`
		UserID    *string `json:"user_id"`
	}
	if err := json.Unmarshal(ev.Body, &body); err != nil {
		t.Fatalf("body %q: %v", ev.Body, err)
	}
	if !eqPtr(body.GuildID, want.guild) || !eqPtr(body.ChannelID, want.channel) || !eqPtr(body.UserID, want.user) {
		t.Fatalf("Build(%s, %q) ids %v %v %v; encoding/json says %v %v %v", typ, d,
			show(body.GuildID), show(body.ChannelID), show(body.UserID), show(want.guild), show(want.channel), show(want.user))
	}
	if ev.GuildID != deref(want.guild) {
		t.Fatalf("Build(%s, %q) GuildID %q; want %q", typ, d, ev.GuildID, deref(want.guild))
	}
}

// checkBody asserts the body is valid JSON that ends with d verbatim as data.
func checkBody(t *testing.T, body, d []byte) {
	t.Helper()
	if !json.Valid(body) {
		t.Fatalf("body is not valid JSON: %q", body)
	}
	suffix := append(append([]byte(`,"data":`), d...), '}')
	if !bytes.HasSuffix(body, suffix) {
		t.Fatalf("body %q does not end with data %q", body, d)
	}
	var v struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	if !bytes.Equal(v.Data, bytes.Trim(d, " \t\r\n")) {
		t.Fatalf("data %q; want %q", v.Data, d)
	}
}

func eqPtr(a, b *string) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}

func show(s *string) string {
	if s == nil {
		return "null"
	}
	return "'" + *s + "'"
}

// tricky are JSON values a naive scanner gets wrong.
var tricky = []string{
	`"plain"`, `""`, `"\""`, `"\\"`, `"\\\""`, `"}"`, `"{"`, `"]"`, `"["`, `","`, `":"`,
	`"\"}"`, `"\\\\"`, `"a\"b\\c\/d\b\f\n\r\t"`, `"\u0000"`, `"\u00e9"`, `"\uD83D\uDE00"`,
	`"\ud83d"`, `"\ude00x"`, `"é"`, `"😀"`, "\"\xff\xfe\"", "\"\xc3\"", `"guild_id"`, `"\"guild_id\":\"9\""`,
	`0`, `-0`, `1`, `-1`, `12.5`, `1e5`, `1E+5`, `-1.5e-10`, `123456789012345678901234567890`,
	`true`, `false`, `null`, `[]`, `{}`, `[[]]`, `[{}]`, `{"a":[]}`, `[1,"2",[3,{"4":"}"}]]`,
	`{"id":"nested"}`, `{"user":{"id":"deep"}}`, `[{"guild_id":"x"}]`,
	` [ 1 , 2 ] `, "\t{\n\"a\"\r:\n1}\n",
}

// broken are JSON-looking values that are not JSON.
var broken = []string{
	`"`, `"\"`, `"\u"`, `"\u00"`, `"\u00g0"`, `"\a"`, `"\'"`, "\"\x01\"", "\"\t\"", "\"\n\"",
	`01`, `-`, `1.`, `.1`, `1e`, `1e+`, `+1`, `0x1`, `1-`, `--1`, `NaN`, `Infinity`,
	`t`, `tru`, `truee`, `nul`, `nulll`, `fals`, `True`, `NULL`,
	`[`, `]`, `[1`, `[1,`, `[1,]`, `[,1]`, `[1 2]`, `{`, `{"a"`, `{"a":`, `{"a":1,}`, `{1:1}`,
	`{"a" 1}`, `{"a"::1}`, `'a'`, ``, ` `, `/**/1`, "\x00",
}

func TestScannerAgreesWithEncodingJSONOnValues(t *testing.T) {
	for _, v := range append(append([]string{}, tricky...), broken...) {
		for _, key := range []string{"x", "guild_id", "channel_id", "id", "user", "member", "unavailable"} {
			for _, typ := range dispatchTypes {
				crossCheck(t, typ, []byte(`{"`+key+`":`+v+`}`))
				crossCheck(t, typ, []byte(`{"user":{"`+key+`":`+v+`},"member":{"user":{"`+key+`":`+v+`}}}`))
				crossCheck(t, typ, []byte(`{"member":{"`+key+`":`+v+`}}`))
				crossCheck(t, typ, []byte(`{"a":[`+v+`],"`+key+`":"k"}`))
			}
		}
	}
}

func TestScannerAgreesWithEncodingJSONOnDocuments(t *testing.T) {
	docs := []string{
		memberAdd,
		`{"guild_id":"1","guild_id":"2"}`,
		`{"guild_id":"1","guild_id":null}`,
		`{"user":{"id":"1"},"user":{"name":"x"},"member":{"user":{"id":"2"}}}`,
		`{"user":{"id":"1","id":"3"}}`,
		`{"member":{"user":{"id":"1"},"user":null}}`,
		`{"guild\u005fid":"escaped key"}`,
		`{"\u0069\u0064":"escaped id key","user":{"\u0069d":"u"}}`,
		`{"Guild_ID":"case matters"}`,
		"{\"guild_id\xff\":\"invalid UTF-8 in a key is not guild_id\"}",
		"{\"guild_id\":\"\xff\xfe invalid UTF-8 in an ID\",\"user\":{\"id\":\"\xed\xa0\x80\"}}",
		`{"guild_id":"\ud83d\ude00","channel_id":"\ud800","user":{"id":"\u0041\"\\"}}`,
		`{"guild_id ":"space matters"}`,
		`{"id":"1","unavailable":true}`,
		`{"id":"1","unavailable":null}`,
		`{"id":"1","unavailable":true,"unavailable":false}`,
		`{"channel_id":"\"},\"guild_id\":\"injected"}`,
		`{"a":"\\","guild_id":"after a backslash"}`,
		`{"a":"\\\"","guild_id":"after an escaped quote"}`,
		`{"a":{"b":[{"c":"]}"},[[["}"]]]]},"guild_id":"after nesting"}`,
		"  {}  ",
		"{}\n",
	}
	for _, d := range docs {
		for _, typ := range dispatchTypes {
			crossCheck(t, typ, []byte(d))
		}
	}
}

func TestScannerAgreesWithEncodingJSONOnNestingDepth(t *testing.T) {
	for _, depth := range []int{maxDepth - 1, maxDepth, maxDepth + 1, maxDepth + 2} {
		// The top-level object is one level, the arrays the others.
		d := `{"a":` + strings.Repeat("[", depth-1) + strings.Repeat("]", depth-1) + `,"guild_id":"1"}`
		crossCheck(t, "GUILD_MEMBER_ADD", []byte(d))
		d = `{"a":` + strings.Repeat(`{"b":`, depth-1) + `1` + strings.Repeat("}", depth-1) + `}`
		crossCheck(t, "GUILD_MEMBER_ADD", []byte(d))
	}
}

func TestScannerAgreesWithEncodingJSONOnGeneratedDocuments(t *testing.T) {
	n := 3000
	if testing.Short() {
		n = 300
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range n {
		d := genDoc(rng)
		typ := dispatchTypes[rng.IntN(len(dispatchTypes))]
		crossCheck(t, typ, d)
		// Damaged copies: truncated, a byte replaced, inserted or removed.
		for range 5 {
			crossCheck(t, typ, mutate(rng, d))
		}
	}
}

func TestScannerAgreesWithEncodingJSONOnEveryPrefix(t *testing.T) {
	d := []byte(memberAdd)
	for i := range len(d) {
		crossCheck(t, "GUILD_MEMBER_ADD", d[:i])
	}
}

var genKeys = []string{"id", "guild_id", "channel_id", "user", "member", "unavailable", "x", "roles", `guild\u005fid`, "ID", "user_id", `\"`}

// genDoc writes a random object that favours the routing keys.
func genDoc(rng *rand.Rand) []byte {
	var b bytes.Buffer
	genObject(rng, &b, 0)
	return b.Bytes()
}

func genObject(rng *rand.Rand, b *bytes.Buffer, depth int) {
	b.WriteByte('{')
	n := rng.IntN(6)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		genWS(rng, b)
		key := genKeys[rng.IntN(len(genKeys))]
		b.WriteString(`"` + key + `"`)
		genWS(rng, b)
		b.WriteByte(':')
		genWS(rng, b)
		switch {
		case (key == "user" || key == "member") && rng.IntN(4) > 0:
			genObject(rng, b, depth+1)
		case (key == "id" || key == "guild_id" || key == "channel_id") && rng.IntN(4) > 0:
			genString(rng, b)
		default:
			genValue(rng, b, depth+1)
		}
		genWS(rng, b)
	}
	b.WriteByte('}')
}

func genValue(rng *rand.Rand, b *bytes.Buffer, depth int) {
	max := 8
	if depth > 4 {
		max = 6 // scalars only
	}
	switch rng.IntN(max) {
	case 0, 1:
		genString(rng, b)
	case 2:
		b.WriteString(tricky[rng.IntN(len(tricky))])
	case 3:
		b.WriteString([]string{"0", "-12", "3.25", "1e9", "-0.0E-2"}[rng.IntN(5)])
	case 4:
		b.WriteString([]string{"true", "false"}[rng.IntN(2)])
	case 5:
		b.WriteString("null")
	case 6:
		genObject(rng, b, depth)
	case 7:
		b.WriteByte('[')
		for i := range rng.IntN(4) {
			if i > 0 {
				b.WriteByte(',')
			}
			genWS(rng, b)
			genValue(rng, b, depth+1)
		}
		b.WriteByte(']')
	}
}

var genStringParts = []string{"1", "80351110224678912", `\"`, `\\`, `\/`, `\n`, `\u0041`, `\u00e9`, `\ud83d\ude00`, `\ud800`, "é", "😀", "\xff", "}", "{", "]", ",", ":", " ", "guild_id"}

func genString(rng *rand.Rand, b *bytes.Buffer) {
	b.WriteByte('"')
	for range rng.IntN(5) {
		b.WriteString(genStringParts[rng.IntN(len(genStringParts))])
	}
	b.WriteByte('"')
}

func genWS(rng *rand.Rand, b *bytes.Buffer) {
	if rng.IntN(4) == 0 {
		b.WriteString([]string{" ", "\n", "\t", "\r\n  "}[rng.IntN(4)])
	}
}

var mutationBytes = []byte("\"\\{}[],:0-.eE tfn\x00\x1f\xff/u")

func mutate(rng *rand.Rand, d []byte) []byte {
	if len(d) == 0 {
		return d
	}
	m := bytes.Clone(d)
	i := rng.IntN(len(m))
	switch rng.IntN(4) {
	case 0:
		return m[:i]
	case 1:
		m[i] = mutationBytes[rng.IntN(len(mutationBytes))]
		return m
	case 2:
		return append(m[:i:i], append([]byte{mutationBytes[rng.IntN(len(mutationBytes))]}, d[i:]...)...)
	default:
		return append(m[:i:i], d[i+1:]...)
	}
}

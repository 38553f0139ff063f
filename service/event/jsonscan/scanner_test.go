package jsonscan

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
)

// checkValue fails when the scanner and encoding/json disagree on doc: on
// whether it is JSON, and if it is, on where its value is, or, for an
// object, on its members (unescaped keys, the last of repeated keys winning,
// raw values).
func checkValue(t *testing.T, doc []byte) {
	t.Helper()
	want := json.Valid(doc)
	s := New(doc, MaxDepth)
	v, err := s.Skip()
	if err == nil {
		err = s.End()
	}
	if got := err == nil; got != want {
		t.Fatalf("%q: scanner accepts = %v (%v); encoding/json accepts = %v", doc, got, err, want)
	}
	if err != nil {
		var se *SyntaxError
		if !errors.As(err, &se) || se.Offset < 0 || se.Offset > len(doc) {
			t.Fatalf("%q: error %v is not a SyntaxError with an offset in the document", doc, err)
		}
		return
	}
	if got, want := v.Bytes(doc), bytes.Trim(doc, " \t\r\n"); !bytes.Equal(got, want) {
		t.Fatalf("%q: value %q; want %q", doc, got, want)
	}
	if k := kindOf(doc[v.Start]); v.Kind != k {
		t.Fatalf("%q: kind %d; want %d", doc, v.Kind, k)
	}
	if v.Kind == Object {
		checkMembers(t, doc)
	}
	if v.Kind == String {
		var want string
		if err := json.Unmarshal(doc, &want); err != nil {
			t.Fatal(err)
		}
		if got := v.Text(doc); got != want {
			t.Fatalf("%q: Text %q; encoding/json %q", doc, got, want)
		}
	}
}

func kindOf(first byte) Kind {
	switch first {
	case '{':
		return Object
	case '[':
		return Array
	case '"':
		return String
	case 't':
		return True
	case 'f':
		return False
	case 'n':
		return Null
	}
	return Number
}

// checkMembers walks the valid object doc with Object, Key, Skip and Next
// and compares what it finds with encoding/json's map of it.
func checkMembers(t *testing.T, doc []byte) {
	t.Helper()
	var want map[string]json.RawMessage
	if err := json.Unmarshal(doc, &want); err != nil {
		t.Fatal(err)
	}
	got := map[string]json.RawMessage{}
	s := New(doc, MaxDepth)
	more, err := s.Object()
	for more && err == nil {
		var k []byte
		var v Value
		if k, err = s.Key(); err != nil {
			break
		}
		if v, err = s.Skip(); err != nil {
			break
		}
		got[string(k)] = v.Bytes(doc)
		more, err = s.Next()
	}
	if err == nil {
		err = s.End()
	}
	if err != nil {
		t.Fatalf("%q: walking the object: %v", doc, err)
	}
	if len(got) != len(want) {
		t.Fatalf("%q: members %q; encoding/json %q", doc, got, want)
	}
	for k, v := range want {
		if !bytes.Equal(got[k], v) {
			t.Fatalf("%q: member %q = %q; encoding/json %q", doc, k, got[k], v)
		}
	}
}

// values are JSON values a naive scanner gets wrong.
var values = []string{
	`"plain"`, `""`, `"\""`, `"\\"`, `"\\\""`, `"}"`, `"{"`, `"]"`, `"["`, `","`, `":"`,
	`"\"}"`, `"\\\\"`, `"a\"b\\c\/d\b\f\n\r\t"`, `"\u0000"`, `"\u0041"`, `"\u00e9"`, `"\uD83D\uDE00"`,
	`"\ud83d"`, `"\ude00x"`, `"\ud83d\u0041"`, `"é"`, `"😀"`, "\"\xff\xfe\"", "\"\xc3\"", "\"\xed\xa0\x80\"", "\"\x7f\"",
	`"exactly8"`, `"exactly_9"`, `"seven77"`, `"0123456789abcdef"`, `"0123456\"89abcdef"`, `"01234567\\"`,
	`0`, `-0`, `1`, `-1`, `12.5`, `1e5`, `1E+5`, `1e-5`, `-1.5e-10`, `0.0`, `-0.0E-0`, `123456789012345678901234567890`,
	`1.7976931348623157e309`, `9223372036854775807`, `9223372036854775808`, `-9223372036854775809`,
	`true`, `false`, `null`, `[]`, `{}`, `[[]]`, `[{}]`, `{"a":[]}`, `[1,"2",[3,{"4":"}"}]]`,
	`{"a":1,"a":2}`, `{"\u0061":1,"a":2}`, `{"a":1,"\u0061":null}`, `{"":0}`, `{"a\"b":1}`, `{"\ud800":1}`,
	` [ 1 , 2 ] `, "\t{\n\"a\"\r:\n1}\n", `{ "a" : { "b" : [ true , false , null ] } }`,
}

// invalid are JSON-looking values that are not JSON.
var invalid = []string{
	`"`, `"\"`, `"\u"`, `"\u00"`, `"\u00g0"`, `"\a"`, `"\'"`, `"\U0041"`, "\"\x01\"", "\"\t\"", "\"\n\"", "\"\x1f\"",
	`01`, `-01`, `00`, `-`, `1.`, `.1`, `1e`, `1e+`, `1E-`, `+1`, `0x1`, `1-`, `--1`, `NaN`, `Infinity`, `1.0.0`, `1e5e5`,
	`t`, `tru`, `truee`, `nul`, `nulll`, `fals`, `True`, `NULL`, `nan`,
	`[`, `]`, `[1`, `[1,`, `[1,]`, `[,1]`, `[1 2]`, `{`, `{"a"`, `{"a":`, `{"a":1,}`, `{1:1}`, `{"a":1]`, `[1}`,
	`{"a" 1}`, `{"a"::1}`, `{"a":1 "b":2}`, `'a'`, ``, ` `, `/**/1`, "\x00", "\xef\xbb\xbf{}", `1 2`, `{}{}`, `{} x`,
	"\u00a0{}", `{"a":"b"`, `["a"`, `{"a":[}`, `{"a":{]}`,
}

func TestScannerAgreesWithEncodingJSONOnValues(t *testing.T) {
	for _, v := range append(append([]string{}, values...), invalid...) {
		for _, doc := range []string{
			v, " " + v + " ", "[" + v + "]", "[1," + v + "]", `{"k":` + v + `}`, `{"a":1,"k":` + v + `,"b":[2]}`,
			`{"k":[{"j":` + v + `}]}`, `[[[[[[[[[[` + v + `]]]]]]]]]]`,
		} {
			checkValue(t, []byte(doc))
		}
	}
}

func TestScannerAgreesWithEncodingJSONOnEveryPrefix(t *testing.T) {
	doc := []byte(`{"t":"GUILD_MEMBER_ADD","s":42,"op":0,"d":{"user":{"id":"80351110224678912","name":"caf\u00e9 \"x\" \ud83d\ude00 é","bot":false},` +
		`"roles":["41771983423143936"],"n":-1.5e+3,"ok":true,"x":null,"deep":[[{"a":[]}]],"long":"0123456789abcdefghijklmnopqrstuvwxyz"}}`)
	for i := range len(doc) + 1 {
		checkValue(t, doc[:i])
	}
}

func TestScannerAgreesWithEncodingJSONOnGeneratedDocuments(t *testing.T) {
	n := 5000
	if testing.Short() {
		n = 500
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range n {
		var b bytes.Buffer
		genValue(rng, &b, 0)
		checkValue(t, b.Bytes())
		for range 5 {
			checkValue(t, mutate(rng, b.Bytes()))
		}
	}
}

// TestNestingLimitIsEncodingJSONs holds the limit where encoding/json has
// it, whatever the mix of arrays and objects, and across the 64 levels the
// scanner keeps in one word.
func TestNestingLimitIsEncodingJSONs(t *testing.T) {
	for _, depth := range []int{63, 64, 65, 66, 129, MaxDepth - 1, MaxDepth, MaxDepth + 1} {
		checkValue(t, []byte(strings.Repeat("[", depth)+strings.Repeat("]", depth)))
		checkValue(t, []byte(strings.Repeat(`{"a":`, depth)+"1"+strings.Repeat("}", depth)))
		checkValue(t, []byte(strings.Repeat(`[{"a":`, depth/2)+"1"+strings.Repeat("}]", depth/2)))
	}
}

// TestClosersMustMatchAtEveryLevel catches a stack that forgets what kind
// of container is open, in the word or past it.
func TestClosersMustMatchAtEveryLevel(t *testing.T) {
	const depth = 130
	var open, closeAll []byte
	for i := range depth {
		if i%3 == 0 {
			open = append(open, `{"k":`...)
			closeAll = append([]byte{'}'}, closeAll...)
		} else {
			open = append(open, '[')
			closeAll = append([]byte{']'}, closeAll...)
		}
	}
	checkValue(t, append(append(bytes.Clone(open), '1'), closeAll...))
	for i := range closeAll {
		wrong := bytes.Clone(closeAll)
		if wrong[i] == ']' {
			wrong[i] = '}'
		} else {
			wrong[i] = ']'
		}
		checkValue(t, append(append(bytes.Clone(open), '1'), wrong...))
	}
}

func TestObjectCountsTowardsTheNestingLimit(t *testing.T) {
	doc := []byte(`{"a":{"b":[1]}}`)
	for _, tc := range []struct {
		maxDepth int
		ok       bool
	}{{3, true}, {2, false}, {1, false}} {
		s := New(doc, tc.maxDepth)
		_, err := s.Object()
		if err == nil {
			_, err = s.Key()
		}
		if err == nil {
			_, err = s.Object()
		}
		if err == nil {
			_, err = s.Key()
		}
		if err == nil {
			_, err = s.Skip()
		}
		if got := err == nil; got != tc.ok {
			t.Errorf("maxDepth %d: err = %v; want ok = %v", tc.maxDepth, err, tc.ok)
		}
	}
}

func TestKeyIsUnescaped(t *testing.T) {
	for doc, want := range map[string]string{
		`{"op":0}`:                            "op",
		`{"\u006fp":0}`:                       "op",
		`{"a\"b" :0}`:                         `a"b`,
		`{"\ud83d\ude00":0}`:                  "😀",
		"{\"\xff\":0}":                        "\ufffd",
		`{"exactly8":0}`:                      "exactly8",
		`{"a_much_longer_key_":0}`:            "a_much_longer_key_",
		`{"communication_disabled":` + "\n0}": "communication_disabled",
	} {
		s := New([]byte(doc), MaxDepth)
		if _, err := s.Object(); err != nil {
			t.Fatal(err)
		}
		if k, err := s.Key(); err != nil || string(k) != want {
			t.Errorf("%s: key %q, %v; want %q", doc, k, err, want)
		}
	}
}

func TestIntAgreesWithEncodingJSON(t *testing.T) {
	for _, n := range []string{"0", "-0", "7", "-12", "1.0", "1e2", "1E0", "-1.5", "9223372036854775807",
		"9223372036854775808", "-9223372036854775808", "-9223372036854775809", "2147483648"} {
		for _, bitSize := range []int{32, 64} {
			var want64 int64
			var want32 int32
			var wantErr error
			if bitSize == 64 {
				wantErr = json.Unmarshal([]byte(n), &want64)
			} else {
				wantErr = json.Unmarshal([]byte(n), &want32)
				want64 = int64(want32)
			}
			got, ok := Value{Start: 0, End: len(n), Kind: Number}.Int([]byte(n), bitSize)
			if ok != (wantErr == nil) || ok && got != want64 {
				t.Errorf("Int(%s, %d) = %d, %v; encoding/json %d, %v", n, bitSize, got, ok, want64, wantErr)
			}
		}
	}
	if _, ok := (Value{Start: 0, End: 3, Kind: String}).Int([]byte(`"1"`), 64); ok {
		t.Error(`Int of the string "1" is ok`)
	}
}

// TestSpecialFindsTheFirstByteThatEndsARun checks the eight-bytes-at-a-time
// test against a byte-at-a-time one: every byte value at every position,
// after plain bytes and after other special ones, and random words.
func TestSpecialFindsTheFirstByteThatEndsARun(t *testing.T) {
	check := func(word []byte) {
		t.Helper()
		want := 8
		for i, c := range word {
			if !plain[c] {
				want = i
				break
			}
		}
		s := []byte(`"` + string(word) + `"` + "tail")
		got := 8
		if m := special(leUint64(word)); m != 0 {
			got = trailingZeroBytes(m)
		}
		if got != want {
			t.Fatalf("word %q: first special byte at %d; want %d", word, got, want)
		}
		// And str, which uses it, ends the string where a byte loop does.
		end, _, p := str(s, 0)
		if want == 8 && (p != ok || end != 10) {
			t.Fatalf("str(%q) = %d, %v; want 10", s, end, p)
		}
	}
	for pos := range 8 {
		for c := range 256 {
			for _, fill := range []byte{'a', 0xff, 0x80, ' ', '!', '#', '[', ']', 0x7f} {
				word := bytes.Repeat([]byte{fill}, 8)
				word[pos] = byte(c)
				check(word)
				if pos < 7 {
					word[pos+1] = '"'
					check(word)
					word[7] = 0x00
					check(word)
				}
			}
		}
	}
	rng := rand.New(rand.NewPCG(5, 6))
	alphabet := []byte{0, 1, 0x1f, 0x20, 0x21, '"', '#', '\\', ']', '[', 0x7f, 0x80, 0x9f, 0xa0, 0xa2, 0xdc, 0xff, 'a'}
	for range 200000 {
		word := make([]byte, 8)
		for i := range word {
			word[i] = alphabet[rng.IntN(len(alphabet))]
		}
		check(word)
	}
}

func leUint64(b []byte) uint64 {
	var w uint64
	for i := 7; i >= 0; i-- {
		w = w<<8 | uint64(b[i])
	}
	return w
}

func trailingZeroBytes(m uint64) int {
	n := 0
	for m&0xff == 0 {
		m >>= 8
		n++
	}
	return n
}

func TestShortStringEndsWhereStrDoes(t *testing.T) {
	for _, v := range append(append([]string{}, values...), invalid...) {
		for _, doc := range []string{v + `,"padding"`, v + `:`, v} {
			d := []byte(doc)
			if len(d) == 0 || d[0] != '"' {
				continue
			}
			end, f, p := str(d, 0)
			if short := shortString(d, 0); short != 0 && (p != ok || f&escapes != 0 || short != end) {
				t.Errorf("%q: shortString %d; str %d, %v, %v", doc, short, end, f, p)
			}
		}
	}
}

// TestStrFlagsSayWhatTheStringHolds checks the escape and non-ASCII flags
// against the string's bytes, for every length around the eight-byte words
// and every position of the telling byte.
func TestStrFlagsSayWhatTheStringHolds(t *testing.T) {
	for n := range 20 {
		for pos := range n {
			for _, c := range []string{"a", "\\", "\\n", "\\u00e9", "é", "\x80", "\xff", "\x7f"} {
				content := strings.Repeat("a", pos) + c + strings.Repeat("b", n-pos)
				doc := []byte(`"` + content + `"` + "tail")
				end, f, p := str(doc, 0)
				if p != ok || end != len(content)+2 {
					t.Fatalf("%q: str = %d, %v; want %d", doc, end, p, len(content)+2)
				}
				wantEscapes := strings.Contains(content, "\\")
				wantNonASCII := strings.IndexFunc(content, func(r rune) bool { return r >= 0x80 }) >= 0
				if f&escapes != 0 != wantEscapes || f&nonASCII != 0 != wantNonASCII {
					t.Fatalf("%q: flags %b; want escapes %v, non-ASCII %v", doc, f, wantEscapes, wantNonASCII)
				}
			}
		}
	}
}

func genValue(rng *rand.Rand, b *bytes.Buffer, depth int) {
	max := 9
	if depth > 5 {
		max = 7 // scalars only
	}
	switch rng.IntN(max) {
	case 0, 1:
		genString(rng, b)
	case 2:
		b.WriteString(values[rng.IntN(len(values))])
	case 3:
		b.WriteString([]string{"0", "-12", "3.25", "1e9", "-0.0E-2", "80351110224678912"}[rng.IntN(6)])
	case 4:
		b.WriteString([]string{"true", "false"}[rng.IntN(2)])
	case 5:
		b.WriteString("null")
	case 6:
		genString(rng, b)
	case 7:
		b.WriteByte('{')
		for i := range rng.IntN(5) {
			if i > 0 {
				b.WriteByte(',')
			}
			genWS(rng, b)
			genString(rng, b)
			genWS(rng, b)
			b.WriteByte(':')
			genWS(rng, b)
			genValue(rng, b, depth+1)
		}
		b.WriteByte('}')
	case 8:
		b.WriteByte('[')
		for i := range rng.IntN(5) {
			if i > 0 {
				b.WriteByte(',')
			}
			genWS(rng, b)
			genValue(rng, b, depth+1)
			genWS(rng, b)
		}
		b.WriteByte(']')
	}
}

var stringParts = []string{"1", "id", "80351110224678912", `\"`, `\\`, `\/`, `\n`, `\u0041`, `\u00e9`, `\ud83d\ude00`,
	`\ud800`, "é", "😀", "\xff", "}", "{", "]", ",", ":", " ", "guild_id", "exactly8", "a longer run of plain text"}

func genString(rng *rand.Rand, b *bytes.Buffer) {
	b.WriteByte('"')
	for range rng.IntN(5) {
		b.WriteString(stringParts[rng.IntN(len(stringParts))])
	}
	b.WriteByte('"')
}

func genWS(rng *rand.Rand, b *bytes.Buffer) {
	if rng.IntN(4) == 0 {
		b.WriteString([]string{" ", "\n", "\t", "\r\n  "}[rng.IntN(4)])
	}
}

var mutationBytes = []byte("\"\\{}[],:0-.eE tfnu\x00\x1f\x7f\xff/")

// mutate damages a copy of d: truncated, or a byte replaced, inserted or
// removed.
func mutate(rng *rand.Rand, d []byte) []byte {
	if len(d) == 0 {
		return d
	}
	i := rng.IntN(len(d))
	c := mutationBytes[rng.IntN(len(mutationBytes))]
	switch rng.IntN(4) {
	case 0:
		return bytes.Clone(d[:i])
	case 1:
		m := bytes.Clone(d)
		m[i] = c
		return m
	case 2:
		return append(append(bytes.Clone(d[:i]), c), d[i:]...)
	default:
		return append(bytes.Clone(d[:i]), d[i+1:]...)
	}
}

package event

import (
	"strings"
	"testing"
)

// FuzzBuild checks that Build never panics, agrees with encoding/json on
// which data it accepts and what the routing fields are, and that an
// accepted dispatch's body is valid JSON carrying d verbatim as data.
func FuzzBuild(f *testing.F) {
	seeds := []struct{ t, d string }{
		{"GUILD_MEMBER_ADD", memberAdd},
		{"GUILD_CREATE", `{"id":"1","unavailable":false,"channels":[{"id":"2"}]}`},
		{"GUILD_DELETE", `{"id":"1","unavailable":true}`},
		{"GUILD_MEMBER_REMOVE", `{"user":{"id":"2"},"guild_id":"1"}`},
		{"GUILD_MEMBER_UPDATE", `{"guild_id":"1","user":{"id":"\u0032"},"nick":"\"}"}`},
		{"INTERACTION_CREATE", `{"id":"3","channel_id":"4","member":{"user":{"id":"2"}},"data":{"options":[[{}]]}}`},
		{"INTERACTION_CREATE", `{"guild\u005fid":"1","user":null}`},
		{"GUILD_MEMBER_ADD", `{"a":"\ud83d\ude00","b":-1.5e+3,"c":[true,false,null]}`},
		{"GUILD_MEMBER_ADD", `{"a":01}`},
		{"GUILD_MEMBER_ADD", `{"guild_id":1}`},
		{"GUILD_MEMBER_ADD", "{\"a\":\"\xff\"}"},
		{"MESSAGE_CREATE", `{}`},
		{"GUILD_MEMBER_ADD", `{"guild_id":"\u0031\ud83d\ude00","user":{"id":"\"\\\/"},"x":"\ud800\udc00\udc00"}`},
		{"GUILD_MEMBER_ADD", "{\"guild_id\xff\":\"1\",\"guild_id\":\"\xed\xa0\x80\"}"},
		{"GUILD_CREATE", `{"id":"caf\u00e9 é 😀","n":[0,-0,1.5,-1e-7,2E+10,0.0e0,123456789012345678901234567890]}`},
		{"GUILD_CREATE", `{"id":"1","x":` + strings.Repeat(`{"a":[`, 40) + "1" + strings.Repeat("]}", 40) + `}`},
	}
	for _, s := range seeds {
		f.Add(s.t, []byte(s.d))
	}
	f.Fuzz(func(t *testing.T, typ string, d []byte) {
		// crossCheck calls Build and ParseFields and fails on any
		// disagreement with encoding/json; a panic fails the target too.
		crossCheck(t, typ, d)
	})
}

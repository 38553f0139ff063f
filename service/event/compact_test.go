package event

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestCompactKeepsScalarsDropsArraysAndFlagsTheBody(t *testing.T) {
	members := strings.Repeat(`{"user":{"id":"1"},"roles":[]},`, 1000)
	d := []byte(`{"id":"81384788765712384","name":"Big \"Guild\"","owner_id":"2","member_count":250000,"large":true,` +
		`"members":[` + strings.TrimSuffix(members, ",") + `],"channels":[{"id":"3"}],"roles":[],"icon":null,"features":["COMMUNITY"],"welcome_screen":{"x":1}}`)
	ev, ok, err := Build(3, "sess", 7, "GUILD_CREATE", d, time.UnixMilli(1000))
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	c, err := Compact(ev)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Body) > 1024 || len(c.Body) >= len(ev.Body) {
		t.Fatalf("compact body is %d bytes (original %d)", len(c.Body), len(ev.Body))
	}
	var body struct {
		EventID       string                     `json:"event_id"`
		GuildID       string                     `json:"guild_id"`
		Data          map[string]json.RawMessage `json:"data"`
		DataTruncated bool                       `json:"data_truncated"`
	}
	if err := json.Unmarshal(c.Body, &body); err != nil {
		t.Fatalf("compact body is not JSON: %v\n%s", err, c.Body)
	}
	if !body.DataTruncated || body.EventID != ev.ID || body.GuildID != "81384788765712384" {
		t.Fatalf("envelope changed: %+v", body)
	}
	for _, k := range []string{"id", "name", "owner_id", "member_count", "large", "icon"} {
		if _, ok := body.Data[k]; !ok {
			t.Errorf("data lost %s", k)
		}
	}
	for _, k := range []string{"members", "channels", "roles", "features", "welcome_screen"} {
		if _, ok := body.Data[k]; ok {
			t.Errorf("data kept %s", k)
		}
	}
	if !bytes.Equal(body.Data["name"], []byte(`"Big \"Guild\""`)) {
		t.Errorf("name re-encoded: %s", body.Data["name"])
	}
	if c.ID != ev.ID || c.Subject != ev.Subject {
		t.Fatal("compact changed the id or subject")
	}
}

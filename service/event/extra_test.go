package event

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestParseExtraEventsAcceptsDispatchNamesOnce(t *testing.T) {
	got, err := ParseExtraEvents(" VOICE_STATE_UPDATE,VOICE_SERVER_UPDATE,, VOICE_STATE_UPDATE ")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "VOICE_STATE_UPDATE,VOICE_SERVER_UPDATE" {
		t.Fatalf("got %q", got)
	}
	if got, err := ParseExtraEvents(""); err != nil || len(got) != 0 {
		t.Fatalf("empty list: %q %v", got, err)
	}
}

func TestParseExtraEventsRefusesWhatCannotBeAnExtraEvent(t *testing.T) {
	for _, list := range []string{"voice_state_update", "VOICE STATE", "GUILD_CREATE", "INTERACTION_CREATE", "READY", "RESUMED", "A.B"} {
		if _, err := ParseExtraEvents(list); err == nil {
			t.Errorf("%q accepted", list)
		}
	}
}

func TestRouterPublishesExtraEventsUnderTheirNameWithTheSameEnvelope(t *testing.T) {
	r, err := NewRouter([]string{"VOICE_STATE_UPDATE"})
	if err != nil {
		t.Fatal(err)
	}
	d := []byte(`{"guild_id":"41771983423143937","channel_id":"127121515262115840","user_id":"80351110224678912","member":{"user":{"id":"80351110224678912"}},"session_id":"x"}`)
	at := time.UnixMilli(1700000000000)
	ev, ok, err := r.Build(3, "sess", 42, "VOICE_STATE_UPDATE", d, at)
	if err != nil || !ok {
		t.Fatalf("not built: %v %v", ok, err)
	}
	if ev.Subject != "events.dispatch.VOICE_STATE_UPDATE" || ev.Type != "VOICE_STATE_UPDATE" || ev.ID != ID(3, "sess", 42) {
		t.Fatalf("event %s %s %s", ev.Subject, ev.Type, ev.ID)
	}
	var body struct {
		EventType string          `json:"event_type"`
		ShardID   int             `json:"shard_id"`
		GuildID   *string         `json:"guild_id"`
		ChannelID *string         `json:"channel_id"`
		UserID    *string         `json:"user_id"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(ev.Body, &body); err != nil {
		t.Fatal(err)
	}
	if body.EventType != "VOICE_STATE_UPDATE" || body.ShardID != 3 || *body.GuildID != "41771983423143937" ||
		*body.ChannelID != "127121515262115840" || *body.UserID != "80351110224678912" || string(body.Data) != string(d) {
		t.Fatalf("body %s", ev.Body)
	}
}

func TestRouterLeavesTheEventsTableAsItIs(t *testing.T) {
	r, _ := NewRouter([]string{"VOICE_SERVER_UPDATE"})
	for _, typ := range []string{"GUILD_CREATE", "GUILD_DELETE", "GUILD_MEMBER_ADD", "GUILD_MEMBER_REMOVE", "GUILD_MEMBER_UPDATE", "INTERACTION_CREATE", "MESSAGE_CREATE"} {
		et, sub, ok := Route(typ)
		ret, rsub, rok := r.Route(typ)
		if et != ret || sub != rsub || ok != rok {
			t.Errorf("%s: router %q %q %v, table %q %q %v", typ, ret, rsub, rok, et, sub, ok)
		}
	}
	var none *Router
	if _, _, ok := none.Route("VOICE_SERVER_UPDATE"); ok {
		t.Error("a nil router routes an extra event")
	}
	if _, ok, _ := none.Build(0, "s", 1, "VOICE_SERVER_UPDATE", []byte(`{}`), time.Now()); ok {
		t.Error("a nil router builds an extra event")
	}
}

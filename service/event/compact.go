package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"sort"
	"strings"
)

// Compact returns a copy of ev whose data keeps only the top-level scalar
// fields of d (for a GUILD_CREATE: id, name, owner_id, member_count, large,
// joined_at, ...) and drops every array and object (members, channels,
// roles, presences, ...), with "data_truncated": true after it. It is the
// form in which an event larger than the broker's max_payload is published,
// so that it is neither retried forever nor lost without a trace.
func Compact(ev *Event) (*Event, error) {
	i := bytes.Index(ev.Body, []byte(`,"data":`))
	if i < 0 || len(ev.Body) == 0 || ev.Body[len(ev.Body)-1] != '}' {
		return nil, errors.New("event: body has no data field")
	}
	prefix := ev.Body[:i+len(`,"data":`)]
	d := ev.Body[len(prefix) : len(ev.Body)-1]
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(d, &fields); err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(fields))
	for k, v := range fields {
		if len(v) > 0 && (v[0] == '{' || v[0] == '[') {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys) // a stable body for a given d
	b := make([]byte, 0, len(prefix)+256)
	b = append(b, prefix...)
	b = append(b, '{')
	for n, k := range keys {
		if n > 0 {
			b = append(b, ',')
		}
		kb, _ := json.Marshal(k)
		b = append(b, kb...)
		b = append(b, ':')
		b = append(b, fields[k]...)
	}
	b = append(b, `},"data_truncated":true}`...)
	out := *ev
	// Its own copies: ev's ID and GuildID share ev's body (see Release).
	out.ID, out.GuildID, out.Body = strings.Clone(ev.ID), strings.Clone(ev.GuildID), b
	return &out, nil
}

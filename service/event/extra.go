package event

import (
	"fmt"
	"strings"
	"time"
)

// ExtraSubjectPrefix is where EXTRA_EVENTS go: dispatch NAME is published to
// events.dispatch.NAME, inside the EVENTS stream (events.>).
const ExtraSubjectPrefix = "events.dispatch."

// Router is the routing table: the six routes of the events table, then the
// extra dispatch names an operator asked for (EXTRA_EVENTS). The zero
// Router, and a nil one, route the six only.
type Router struct {
	extra map[string]string // dispatch name → subject
}

// NewRouter returns a router that also publishes each name in extra, as
// event_type NAME on events.dispatch.NAME. The names must be Discord
// dispatch names (upper case, digits and underscores) that the table does
// not route already; READY and RESUMED are the session's own.
func NewRouter(extra []string) (*Router, error) {
	r := &Router{extra: map[string]string{}}
	for _, name := range extra {
		if err := checkExtra(name); err != nil {
			return nil, err
		}
		r.extra[name] = ExtraSubjectPrefix + name
	}
	return r, nil
}

// ParseExtraEvents splits a comma list of dispatch names (EXTRA_EVENTS),
// checking each; spaces around names are ignored, duplicates dropped.
func ParseExtraEvents(list string) ([]string, error) {
	var names []string
	seen := map[string]bool{}
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		if n == "" || seen[n] {
			continue
		}
		if err := checkExtra(n); err != nil {
			return nil, err
		}
		seen[n] = true
		names = append(names, n)
	}
	return names, nil
}

func checkExtra(name string) error {
	if name == "" {
		return fmt.Errorf("empty dispatch name")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '_' {
			return fmt.Errorf("%q is not a Discord dispatch name (upper case letters, digits and _)", name)
		}
	}
	if _, _, routed := Route(name); routed {
		return fmt.Errorf("%s is published already (the events table)", name)
	}
	if name == "READY" || name == "RESUMED" {
		return fmt.Errorf("%s belongs to the session and is never published", name)
	}
	return nil
}

// Extra returns the extra names, in no order.
func (r *Router) Extra() []string {
	if r == nil {
		return nil
	}
	names := make([]string, 0, len(r.extra))
	for n := range r.extra {
		names = append(names, n)
	}
	return names
}

// Route is Route with the extra names: event_type is the dispatch name
// itself, the subject events.dispatch.NAME.
func (r *Router) Route(t string) (eventType, subject string, ok bool) {
	if eventType, subject, ok = Route(t); ok || r == nil || len(r.extra) == 0 {
		return eventType, subject, ok
	}
	if subject, ok = r.extra[t]; ok {
		return t, subject, true
	}
	return "", "", false
}

// Publishes reports whether the router publishes dispatch type t.
func (r *Router) Publishes(t string) bool {
	_, _, ok := r.Route(t)
	return ok
}

// Build is the package's Build with the router's extra names: their ids are
// found the generic way (top-level guild_id and channel_id, user.id or
// member.user.id), with the same envelope and event id.
func (r *Router) Build(shardID int, sessionID string, seq int64, t string, d []byte, receivedAt time.Time) (*Event, bool, error) {
	eventType, subject, ok := r.Route(t)
	if !ok {
		return nil, false, nil
	}
	return build(eventType, subject, shardID, sessionID, seq, t, d, nil, receivedAt)
}

// BuildScanned is Build for a d whose routing fields ScanData located
// while the whole payload was validated: d is not read again, except to
// copy it into the body. A sc that does not describe d (or is nil) makes
// it Build.
func (r *Router) BuildScanned(shardID int, sessionID string, seq int64, t string, d []byte, sc *Scanned, receivedAt time.Time) (*Event, bool, error) {
	eventType, subject, ok := r.Route(t)
	if !ok {
		return nil, false, nil
	}
	return build(eventType, subject, shardID, sessionID, seq, t, d, sc, receivedAt)
}

package event

import "github.com/shardpool/gateway/service/event/jsonscan"

// Scanned is what ScanData learned about a dispatch's d while the scanner
// of the whole gateway payload validated it: where its routing fields are.
// It spares Build a second pass over d, which on a large GUILD_CREATE was
// a third of the read goroutine's time per event. The zero Scanned
// describes nothing; Build then reads d itself.
type Scanned struct {
	r          raw
	start, end int  // d's place in the payload the offsets in r refer to
	guildIsID  bool // scanned for a type whose guild ID is "id"
	ok         bool
}

// ScanData consumes the value at the cursor of s, which must be an object
// (Peek returns '{'): the d of a dispatch of type t inside the payload s
// walks. It validates d as Skip would, and locates the routing fields on
// the way. The error is the scanner's, for a d that is not JSON.
//
// A routing field of the wrong type is not an error here (Build reports
// it, reading d itself then, so that its message is the same either way).
func ScanData(s *jsonscan.Scanner, t string) (Scanned, error) {
	s.Peek()
	start := s.Offset()
	guildIsID := guildIsSelf(t)
	r, err := scanObject(s, guildIsID)
	if err != nil {
		return Scanned{}, err
	}
	return Scanned{r: r, start: start, end: s.Offset(), guildIsID: guildIsID, ok: r.typeErr() == nil}, nil
}

// Value is d's place in the scanned payload.
func (sc *Scanned) Value() jsonscan.Value {
	return jsonscan.Value{Start: sc.start, End: sc.end, Kind: jsonscan.Object}
}

// fields returns the routing fields of d as scan(t, d) would, with offsets
// in d, if sc describes d scanned for t; ok is false if not.
func (sc *Scanned) fields(t string, d []byte) (r raw, ok bool) {
	if sc == nil || !sc.ok || sc.guildIsID != guildIsSelf(t) || sc.end-sc.start != len(d) {
		return raw{}, false
	}
	r = sc.r
	for _, f := range [...]*field{&r.id, &r.guildID, &r.channelID, &r.userID, &r.memberUserID} {
		if f.Kind != jsonscan.None {
			f.Start -= sc.start
			f.End -= sc.start
		}
	}
	return r, true
}

package event

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// messageAt is a MESSAGE_CREATE body whose id is a snowflake created at at.
func messageAt(at time.Time, n int) []byte {
	id := uint64(at.UnixMilli()-discordEpochMs)<<22 | uint64(n&4095)
	return fmt.Appendf(nil, `{"id":"%d","channel_id":"2","content":""}`, id)
}

func TestCreatedAtReadsTheSnowflakeOfWhatADispatchCreates(t *testing.T) {
	at := time.UnixMilli(1704823652123)
	if got, ok := CreatedAt("MESSAGE_CREATE", messageAt(at, 1)); !ok || !got.Equal(at) {
		t.Errorf("CreatedAt(MESSAGE_CREATE) = %v, %v; want %v", got, ok, at)
	}
	id := uint64(at.UnixMilli()-discordEpochMs) << 22
	if got, ok := CreatedAt("GUILD_ROLE_CREATE", fmt.Appendf(nil, `{"guild_id":"1","role":{"id":"%d"}}`, id)); !ok || !got.Equal(at) {
		t.Errorf("CreatedAt(GUILD_ROLE_CREATE) = %v, %v; want %v", got, ok, at)
	}
	for _, c := range []struct{ t, d string }{
		{"MESSAGE_DELETE", fmt.Sprintf(`{"id":"%d"}`, id)}, // names an old message
		{"GUILD_MEMBER_ADD", memberAdd},
		{"GUILD_MEMBER_UPDATE", memberAdd},
		{"MESSAGE_CREATE", `{"id":"not-a-snowflake"}`},
		{"MESSAGE_CREATE", `{"id":"99999999999999999999999"}`},
		{"THREAD_CREATE", fmt.Sprintf(`{"id":"%d"}`, id)}, // joined, not created
	} {
		if got, ok := CreatedAt(c.t, []byte(c.d)); ok {
			t.Errorf("CreatedAt(%s, %s) = %v, want none", c.t, c.d, got)
		}
	}
}

// guildEvent is one dispatch of a guild's stream, as Discord sends it to
// every session holding the guild.
type guildEvent struct {
	guild string
	t     string
	d     []byte
	keyed bool
}

// guildStreams makes each guild's stream: keyless member updates (all
// with the same payload, the hard case) and messages created over time,
// some before at and some after.
func guildStreams(rng *rand.Rand, guilds, perGuild int, start, at time.Time) [][]guildEvent {
	out := make([][]guildEvent, guilds)
	for g := range out {
		guild := fmt.Sprint(100 + g)
		for i := range perGuild {
			created := start.Add(time.Duration(i) * time.Second)
			if rng.IntN(3) == 0 {
				out[g] = append(out[g], guildEvent{guild, "MESSAGE_CREATE", messageAt(created, g*perGuild+i), true})
			} else {
				out[g] = append(out[g], guildEvent{guild, "GUILD_MEMBER_UPDATE", []byte(`{"guild_id":"` + guild + `","user":{"id":"2"},"roles":[]}`), false})
			}
		}
	}
	return out
}

// interleave merges the guilds' streams from each guild's first index on,
// in a random order that keeps each guild's own order: what one session
// receives.
func interleave(rng *rand.Rand, streams [][]guildEvent, first []int) []guildEvent {
	next := append([]int(nil), first...)
	var out []guildEvent
	for {
		var open []int
		for g := range streams {
			if next[g] < len(streams[g]) {
				open = append(open, g)
			}
		}
		if len(open) == 0 {
			return out
		}
		g := open[rng.IntN(len(open))]
		out = append(out, streams[g][next[g]])
		next[g]++
	}
}

func TestHandoverPublishesEachKeylessDispatchFromExactlyOneGeneration(t *testing.T) {
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 1))
		start := time.UnixMilli(1704823652000)
		at := start.Add(30 * time.Second)
		streams := guildStreams(rng, 4, 60, start, at)
		// The old session receives every guild's stream whole; the new one
		// from its READY on, which cuts each guild's stream somewhere
		// before the cut-over instant.
		first := make([]int, len(streams))
		oldFirst := make([]int, len(streams))
		for g := range first {
			first[g] = rng.IntN(25)
		}
		oldRecv, newRecv := interleave(rng, streams, oldFirst), interleave(rng, streams, first)

		published := map[string]int{} // a keyless dispatch (guild/index in its stream) → times published
		publish := func(recv []guildEvent, first []int, seq0 int64, isNew bool) {
			h := NewHandover(at)
			index := map[string]int{}
			for i, ev := range recv {
				seq := seq0 + int64(i)
				h.Observe(seq, ev.guild, ev.t, ev.d)
				n := index[ev.guild]
				index[ev.guild]++
				if !ev.keyed && h.After(ev.guild, seq) == isNew {
					// ev.guild is "100" + g: its stream's index is first[g] + n.
					published[fmt.Sprintf("%s/%d", ev.guild, first[ev.guild[2]-'0']+n)]++
				}
			}
		}
		publish(oldRecv, oldFirst, 1000, false)
		publish(newRecv, first, 1, true)
		for g, s := range streams {
			for n, ev := range s {
				if ev.keyed {
					continue
				}
				if got := published[fmt.Sprintf("%s/%d", ev.guild, n)]; got != 1 {
					t.Fatalf("seed %d: keyless dispatch %d of guild %d published %d times, want once", seed, n, g, got)
				}
			}
		}
	}
}

func TestHandoverJudgesAReplayedDispatchAsBefore(t *testing.T) {
	at := time.UnixMilli(1704823652000)
	h := NewHandover(at)
	update := []byte(`{"guild_id":"1","user":{"id":"2"}}`)
	h.Observe(1, "1", "GUILD_MEMBER_UPDATE", update)
	h.Observe(2, "1", "MESSAGE_CREATE", messageAt(at.Add(-time.Second), 1)) // before the instant: not the point
	h.Observe(3, "1", "MESSAGE_CREATE", messageAt(at, 2))                   // the point
	h.Observe(4, "1", "GUILD_MEMBER_UPDATE", update)
	for seq, want := range map[int64]bool{1: false, 3: false, 4: true} {
		if got := h.After("1", seq); got != want {
			t.Errorf("After(seq %d) = %v, want %v", seq, got, want)
		}
	}
	// A resume replays seq 1 to 4: nothing changes.
	for seq := int64(1); seq <= 4; seq++ {
		h.Observe(seq, "1", "MESSAGE_CREATE", messageAt(at.Add(time.Hour), int(seq)))
	}
	if h.After("1", 1) || !h.After("1", 4) || h.After("1", 3) {
		t.Error("a replay moved the handover point")
	}
	if h.After("other", 4) || h.Passed("other") || h.PassedGuilds() != 1 {
		t.Error("a guild without a point is handed over")
	}
	// Direct messages (no guild) are a stream of their own.
	h.Observe(5, "", "GUILD_MEMBER_UPDATE", update)
	h.Observe(6, "", "MESSAGE_CREATE", messageAt(at, 3))
	h.Observe(7, "", "TYPING_START", update)
	if h.After("", 5) || !h.After("", 7) {
		t.Error("the dispatches without a guild are not handed over at their own point")
	}
	if h.After("other", 8) {
		t.Error("a guild without a point is handed over")
	}
	h.Settle()
	if h.After("other", 7) || !h.After("other", 8) {
		t.Error("Settle does not hand quiet guilds over after the last seq seen")
	}
}

func BenchmarkHandoverObserve(b *testing.B) {
	h := NewHandover(time.UnixMilli(1704823652000).AddDate(10, 0, 0)) // no point: every dispatch is read
	d := []byte(messageCreate)
	b.ReportAllocs()
	seq := int64(0)
	for b.Loop() {
		seq++
		h.Observe(seq, "41771983423143937", "MESSAGE_CREATE", d)
	}
}

package discordsim

import (
	"sort"
	"testing"
	"time"
)

func TestPaceScheduleSpacesEventsEvenly(t *testing.T) {
	start := time.Unix(1000, 0)
	p := newPaceSchedule(start, 4000) // one event every 250 µs
	if _, ok := p.next(start.Add(-time.Nanosecond)); ok {
		t.Fatal("an event was due before the schedule began")
	}
	for k := 0; k < 8; k++ {
		want := start.Add(time.Duration(k) * 250 * time.Microsecond)
		if _, ok := p.next(want.Add(-time.Nanosecond)); ok {
			t.Fatalf("event %d was due before %v", k, want)
		}
		due, ok := p.next(want)
		if !ok || !due.Equal(want) {
			t.Fatalf("event %d: due %v, %v; want %v", k, due, ok, want)
		}
	}
}

// A late generator sends what is due at once, each event keeping its own
// due time, so the lateness is visible as jitter.
func TestPaceScheduleKeepsDueTimesOfLateEvents(t *testing.T) {
	start := time.Unix(1000, 0)
	p := newPaceSchedule(start, 1000)
	now := start.Add(3500 * time.Microsecond)
	var got []time.Duration
	for {
		due, ok := p.next(now)
		if !ok {
			break
		}
		got = append(got, now.Sub(due))
	}
	want := []time.Duration{3500 * time.Microsecond, 2500 * time.Microsecond, 1500 * time.Microsecond, 500 * time.Microsecond}
	if len(got) != len(want) {
		t.Fatalf("lateness %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("lateness %v, want %v", got, want)
		}
	}
}

func TestPaceScheduleSkipsAheadAfterALongStall(t *testing.T) {
	start := time.Unix(1000, 0)
	p := newPaceSchedule(start, 100)
	now := start.Add(10 * time.Second)
	n := 0
	for {
		if _, ok := p.next(now); !ok {
			break
		}
		n++
	}
	// One second of backlog (100 events) plus the one due exactly now.
	if n != 101 {
		t.Fatalf("%d events after a 10 s stall, want 101 (one second's worth)", n)
	}
}

func TestJitterQuantiles(t *testing.T) {
	var h jitterHist
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond) // 1 µs .. 1 ms
	}
	h.record(250 * time.Millisecond) // beyond the last bucket
	st := h.stats()
	if st.Events != 1001 || st.Max != 250*time.Millisecond {
		t.Fatalf("events %d max %v", st.Events, st.Max)
	}
	near := func(name string, got, want, tol time.Duration) {
		if got < want-tol || got > want+tol {
			t.Errorf("%s %v, want %v ± %v", name, got, want, tol)
		}
	}
	near("p50", st.P50, 501*time.Microsecond, 2*time.Microsecond)
	near("p99", st.P99, 991*time.Microsecond, 2*time.Microsecond)
	near("p99.9", st.P999, time.Millisecond, 10*time.Microsecond)
	h.reset()
	if st := h.stats(); st.Events != 0 || st.Max != 0 || st.P99 != 0 {
		t.Fatalf("after reset: %+v", st)
	}
}

func TestJitterBucketsCoverTheirRanges(t *testing.T) {
	for _, d := range []time.Duration{0, 999 * time.Microsecond, time.Millisecond, 9999 * time.Microsecond,
		10 * time.Millisecond, 99999 * time.Microsecond} {
		i := jitterBucket(d)
		lo := time.Duration(0)
		if i > 0 {
			lo = jitterBucketTop(i - 1)
		}
		if d < lo || d >= jitterBucketTop(i) {
			t.Errorf("%v in bucket %d = [%v, %v)", d, i, lo, jitterBucketTop(i))
		}
	}
}

// The generator sends each event at its own time rather than in bursts of
// a timer tick: consecutive events are mostly about 1/rate apart. The
// median gap is robust to the odd stall of a loaded machine.
func TestGeneratorPacesEachEvent(t *testing.T) {
	srv := startServer(t, Config{GuildsPerShard: 2, MembersPerGuild: 10})
	c, _ := connectReady(t, srv, CompressNone, 0, 1, allIntents)
	defer c.close()
	srv.ResetGeneratorJitter()
	srv.SetEventRate(1000) // 1 ms apart
	time.Sleep(400 * time.Millisecond)
	srv.SetEventRate(0)
	var at []time.Time
	for _, d := range srv.Dispatches() {
		if d.Type != "READY" && d.Type != "GUILD_CREATE" {
			at = append(at, d.At)
		}
	}
	if len(at) < 100 {
		t.Fatalf("%d events in 400 ms at 1000/s", len(at))
	}
	gaps := make([]time.Duration, 0, len(at)-1)
	for i := 1; i < len(at); i++ {
		gaps = append(gaps, at[i].Sub(at[i-1]))
	}
	sort.Slice(gaps, func(i, j int) bool { return gaps[i] < gaps[j] })
	if med := gaps[len(gaps)/2]; med < 500*time.Microsecond {
		t.Errorf("median gap %v between events at 1000/s: sent in bursts", med)
	}
	st := srv.GeneratorJitter()
	if st.Events < int64(len(at))-1 || st.Max <= 0 {
		t.Errorf("jitter record %+v for %d events", st, len(at))
	}
	t.Logf("median gap %v, jitter %+v", gaps[len(gaps)/2], st)
}

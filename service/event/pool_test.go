package event

import (
	"bytes"
	"testing"
	"time"
)

func TestSizeClassesCoverEverySizeWithLittleWaste(t *testing.T) {
	prev := 0
	for n := 1; n <= 1<<20; n++ {
		class, size, ok := sizeClass(n)
		if !ok || size < n || class < 0 || class >= numClasses {
			t.Fatalf("sizeClass(%d) = %d, %d, %v", n, class, size, ok)
		}
		if n > 1024 && size > n+n/4 {
			t.Fatalf("sizeClass(%d): capacity %d wastes more than a quarter", n, size)
		}
		if c, s, _ := sizeClass(size); c != class || s != size {
			t.Fatalf("a body of capacity %d is in class %d/%d, but was made for class %d", size, c, s, class)
		}
		if class < prev {
			t.Fatalf("classes not increasing at %d", n)
		}
		prev = class
	}
	if _, _, ok := sizeClass(1<<20 + 1); ok {
		t.Error("a body over 1 MiB is pooled")
	}
}

func TestReleasedEventsAreBuiltAgainWithoutAllocating(t *testing.T) {
	d := []byte(`{"guild_id":"1197345237498982400","user":{"id":"80351110224678912","username":"x"},"joined_at":"2024-01-01T00:00:00Z"}`)
	at := time.UnixMilli(1700000000000)
	ev, _, err := Build(3, "session", 42, "GUILD_MEMBER_ADD", d, at)
	if err != nil {
		t.Fatal(err)
	}
	want, wantID := bytes.Clone(ev.Body), ID(3, "session", 42)
	Release(ev)
	if n := testing.AllocsPerRun(1000, func() {
		ev, _, err := Build(3, "session", 42, "GUILD_MEMBER_ADD", d, at)
		if err != nil || !bytes.Equal(ev.Body, want) || ev.GuildID != "1197345237498982400" || ev.ID != wantID {
			t.Fatalf("rebuilt %+v, %v", ev, err)
		}
		Release(ev)
	}); n != 0 {
		t.Errorf("%.1f allocations per Build of a released event; want 0", n)
	}
}

func TestReleaseLeavesOddEventsToTheGC(t *testing.T) {
	Release(nil)
	Release(&Event{Body: make([]byte, 10, 1000)}) // not a class size: not pooled
	ev := newEvent(1000)
	if cap(ev.Body) != 1024 || len(ev.Body) != 0 {
		t.Errorf("new event body len %d cap %d, want an empty 1 KiB", len(ev.Body), cap(ev.Body))
	}
}

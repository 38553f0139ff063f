package main

import (
	"strings"
	"testing"
)

func TestSummaryTakesTheMedianAndRangeOfEachFigureOverRuns(t *testing.T) {
	var runs []*benchRun
	for _, v := range []float64{3, 1, 2} {
		r := &benchRun{}
		r.add("a", "figure a", "ms", v, "< 5 ms")
		r.add("b", "figure b", "", v*10, "")
		runs = append(runs, r)
	}
	extra := &benchRun{}
	extra.add("b", "figure b", "", 100, "")
	runs = append(runs, extra)
	s := summarise(runs)
	if len(s.rows) != 2 || s.rows[0].key != "a" || s.rows[1].key != "b" {
		t.Fatalf("rows %+v, want a then b, in the order measured", s.rows)
	}
	if a := s.byKey["a"]; a.v != 2 || a.lo != 1 || a.hi != 3 || a.runs != 3 {
		t.Errorf("a: %+v, want median 2 of 1..3 over 3 runs", a)
	}
	if b := s.byKey["b"]; b.v != 25 || b.lo != 10 || b.hi != 100 || b.runs != 4 {
		t.Errorf("b: %+v, want median 25 (mean of the middle two) of 10..100 over 4 runs", b)
	}
	md := s.markdown(3)
	if !strings.Contains(md, "| figure a | 2.00 ms | 1.00–3.00 | < 5 ms |") {
		t.Errorf("markdown:\n%s", md)
	}
}

func TestNumbersAreWrittenWithAPrecisionThatSuitsTheirSize(t *testing.T) {
	for _, c := range []struct {
		in   float64
		want string
	}{{0.123, "0.12"}, {7.456, "7.46"}, {12.34, "12.3"}, {345.6, "346"}, {35600, "35,600"}, {1234567, "1,234,567"}, {-4200, "-4,200"}} {
		if got := num(c.in); got != c.want {
			t.Errorf("num(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestChartsAreDrawnOnlyForPhasesThatRan(t *testing.T) {
	r := &benchRun{}
	for _, rate := range latencyRates {
		r.add("latency/"+thousands(rate)+"/p99", "", "ms", 1, "") // wrong key form: not charted
	}
	if c := summarise([]*benchRun{r}).charts(1); len(c) != 0 {
		t.Fatalf("charts %v from no chartable figure", c)
	}
	r = &benchRun{}
	r.add("latency/5000/p99", "", "ms", 1.5, "")
	r.add("scale/25/cpu", "", "µs", 5, "")
	c := summarise([]*benchRun{r}).charts(1)
	if c["latency.png"] == nil || c["scale-cpu.png"] == nil || c["scale-rss.png"] != nil {
		t.Fatalf("charts %v, want latency.png and scale-cpu.png only", c)
	}
	if got := c["latency.png"].Series[0].Points[0]; got.X != 5000 || got.Y != 1.5 {
		t.Fatalf("latency point %+v", got)
	}
}

package main

// The pipeline benchmark's report: each run's figures by key, their median
// and spread over runs, the table (printed and written to results.md) and
// the charts (PNG, internal/benchchart).

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/shardpool/gateway/internal/benchchart"
)

type benchMetric struct {
	key, label, unit string
	v                float64
	target           string
}

// benchRun is one run's figures, in the order they were measured.
type benchRun struct{ metrics []benchMetric }

func (r *benchRun) add(key, label, unit string, v float64, target string) {
	r.metrics = append(r.metrics, benchMetric{key: key, label: label, unit: unit, v: v, target: target})
}

// spread is one figure over the runs.
type spread struct {
	benchMetric         // v is the median
	lo, hi      float64 // lowest and highest run
	runs        int
}

type benchSummary struct {
	rows  []spread
	byKey map[string]spread
}

// summarise sets the runs side by side: for each key, in the order of its
// first appearance, the median over the runs that have it and their range.
func summarise(runs []*benchRun) benchSummary {
	s := benchSummary{byKey: map[string]spread{}}
	var order []string
	values := map[string][]float64{}
	first := map[string]benchMetric{}
	for _, r := range runs {
		for _, m := range r.metrics {
			if _, ok := first[m.key]; !ok {
				first[m.key] = m
				order = append(order, m.key)
			}
			values[m.key] = append(values[m.key], m.v)
		}
	}
	for _, k := range order {
		vs := append([]float64(nil), values[k]...)
		sort.Float64s(vs)
		med := vs[len(vs)/2]
		if len(vs)%2 == 0 {
			med = (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
		}
		row := spread{benchMetric: first[k], lo: vs[0], hi: vs[len(vs)-1], runs: len(vs)}
		row.v = med
		s.rows = append(s.rows, row)
		s.byKey[k] = row
	}
	return s
}

// num writes a figure with a precision that suits its size.
func num(v float64) string {
	a := v
	if a < 0 {
		a = -a
	}
	switch {
	case a >= 1000:
		return addCommas(strconv.FormatFloat(v, 'f', 0, 64))
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func addCommas(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func (r spread) value() string {
	v := num(r.v)
	if r.unit != "" {
		v += " " + r.unit
	}
	return v
}

func (r spread) rangeText() string {
	if r.runs < 2 {
		return ""
	}
	return num(r.lo) + "–" + num(r.hi)
}

// markdown is the table as the README shows it.
func (s benchSummary) markdown(runs int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| | median of %d run(s) | lowest–highest | target |\n|---|---|---|---|\n", runs)
	for _, r := range s.rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", r.label, r.value(), r.rangeText(), r.target)
	}
	return b.String()
}

func (s benchSummary) print(out io.Writer, runs int) {
	fmt.Fprintf(out, "\n== summary: median of %d run(s), lowest–highest ==\n", runs)
	for _, r := range s.rows {
		line := fmt.Sprintf("   %-66s %14s", r.label, r.value())
		if rt := r.rangeText(); rt != "" {
			line += "  (" + rt + ")"
		}
		if r.target != "" {
			line += "  target " + r.target
		}
		fmt.Fprintln(out, line)
	}
}

// save writes results.md and the charts whose figures were measured.
func (s benchSummary) save(dir, machine string, runs int) error {
	if len(s.rows) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	md := "Measured by `make bench` on " + machine + ".\n\n" + s.markdown(runs)
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(md), 0o644); err != nil {
		return err
	}
	for name, c := range s.charts(runs) {
		if err := c.Save(filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

// point is the chart point of key at x: the median, whiskers at the range.
func (s benchSummary) point(key string, x float64) (benchchart.Point, bool) {
	r, ok := s.byKey[key]
	return benchchart.Point{X: x, Y: r.v, Lo: r.lo, Hi: r.hi}, ok
}

// charts returns the charts by file name, for the phases that ran.
func (s benchSummary) charts(runs int) map[string]*benchchart.Chart {
	out := map[string]*benchchart.Chart{}
	note := fmt.Sprintf("; median, whiskers lowest to highest of %d runs", runs)
	if runs < 2 {
		note = ""
	}
	lat := &benchchart.Chart{Title: "route latency, frame read to JetStream ack", XLabel: "events/s, paced" + note, YLabel: "ms (log scale)", LogY: true}
	for _, q := range []struct{ key, name string }{{"p50", "p50"}, {"p99", "p99"}, {"p999", "p99.9"}} {
		ser := benchchart.Series{Name: q.name}
		for _, rate := range latencyRates {
			if p, ok := s.point(fmt.Sprintf("latency/%d/%s", rate, q.key), float64(rate)); ok {
				ser.Points = append(ser.Points, p)
			}
		}
		if len(ser.Points) > 0 {
			lat.Series = append(lat.Series, ser)
		}
	}
	if len(lat.Series) > 0 {
		for rate, v := range latencyTargets {
			lat.Marks = append(lat.Marks, benchchart.Mark{X: float64(rate), Y: v, Label: "p99 target"})
		}
		sort.Slice(lat.Marks, func(i, j int) bool { return lat.Marks[i].X < lat.Marks[j].X })
		out["latency.png"] = lat
	}
	for _, c := range []struct{ file, key, title, unit string }{
		{"scale-cpu.png", "cpu", "gateway CPU per event against shards", "microseconds per event"},
		{"scale-rss.png", "rss", "gateway RSS against shards", "MB"},
		{"scale-goroutines.png", "goroutines", "gateway goroutines against shards", "goroutines"},
	} {
		ser := benchchart.Series{Name: fmt.Sprintf("%s events/s in total", thousands(scaleRate))}
		for _, n := range scaleShards {
			if p, ok := s.point(fmt.Sprintf("scale/%d/%s", n, c.key), float64(n)); ok {
				ser.Points = append(ser.Points, p)
			}
		}
		if len(ser.Points) > 0 {
			out[c.file] = &benchchart.Chart{Title: c.title, XLabel: "shards in one process" + note, YLabel: c.unit, Series: []benchchart.Series{ser}}
		}
	}
	return out
}

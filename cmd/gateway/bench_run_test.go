package main

// TestPipelineBenchmark (make bench) runs the pipeline benchmark's phases
// PIPELINE_BENCH_RUNS times in one process, prints each run, then a table
// of the medians with the spread (lowest–highest) over the runs, and draws
// the charts into docs/perf. Each figure that has a ceiling or a baseline
// is a ratio to one measured in the same run.
//
//	PIPELINE_BENCH=1          run it (else skipped)
//	PIPELINE_BENCH_PHASES=3,7 only these phases (default all):
//	                          1 throughput, 2 naive baseline, 3 paced latency, 4 memory,
//	                          5 startup, 6 compression, 7 startup storm, 8 cost against scale
//	PIPELINE_BENCH_RUNS=3     runs for the spread (default 1)
//	PIPELINE_BENCH_EVENTS=n   dispatches of the throughput phase (default 100000)
//	PIPELINE_BENCH_CHARTS=dir where the PNG charts and results.md go (default ../../docs/perf; "-" for none)

import (
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

type benchSettings struct {
	perShard int
	phases   string
	runs     int
	charts   string
}

func (s benchSettings) on(p string) bool {
	return s.phases == "" || strings.Contains(","+s.phases+",", ","+p+",")
}

func benchSettingsFromEnv() benchSettings {
	s := benchSettings{perShard: 100000 / benchShards, phases: os.Getenv("PIPELINE_BENCH_PHASES"), runs: 1, charts: "../../docs/perf"}
	if v, err := strconv.Atoi(os.Getenv("PIPELINE_BENCH_EVENTS")); err == nil && v > 0 {
		s.perShard = v / benchShards
	}
	if v, err := strconv.Atoi(os.Getenv("PIPELINE_BENCH_RUNS")); err == nil && v > 0 {
		s.runs = v
	}
	if v := os.Getenv("PIPELINE_BENCH_CHARTS"); v != "" {
		s.charts = v
	}
	return s
}

func TestPipelineBenchmark(t *testing.T) {
	if os.Getenv("PIPELINE_BENCH") == "" {
		t.Skip("set PIPELINE_BENCH=1 (make bench) to run the pipeline benchmark")
	}
	s := benchSettingsFromEnv()
	out := os.Stdout
	fmt.Fprintf(out, "\n== pipeline benchmark: %d run(s), phases %s ==\n%s\n", s.runs, orAll(s.phases), machine())
	var bin string
	if s.on("7") || s.on("8") {
		bin = buildBenchGateway(t) // the gateway as a process of its own
	}
	var runs []*benchRun
	for i := 1; i <= s.runs; i++ {
		fmt.Fprintf(out, "\n== run %d of %d (load average %s) ==\n", i, s.runs, loadAverage())
		runs = append(runs, benchOnce(t, out, s, bin))
		runtime.GC()
	}
	sum := summarise(runs)
	sum.print(out, len(runs))
	if s.charts != "-" {
		if err := sum.save(s.charts, machine(), len(runs)); err != nil {
			t.Errorf("charts: %v", err)
		}
	}
	fmt.Fprintln(out)
}

func orAll(phases string) string {
	if phases == "" {
		return "all"
	}
	return phases
}

// machine describes where the benchmark ran.
func machine() string {
	model := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%s, %d CPUs, GOMAXPROCS %d, %s, Linux %s", model, runtime.NumCPU(), runtime.GOMAXPROCS(0),
		runtime.Version(), strings.TrimSpace(string(kernel)))
}

// benchOnce runs the selected phases once, printing as it goes.
func benchOnce(t *testing.T, out io.Writer, s benchSettings, bin string) *benchRun {
	r := &benchRun{}
	// Memory first: the other phases leave garbage and torn-down worlds
	// behind that would blur a heap difference.
	if s.on("4") {
		memoryPhase(t, out, r)
	}
	if s.on("1") || s.on("2") {
		throughputPhases(t, out, r, s.perShard, s.on("2"))
	}
	if s.on("3") {
		latencyPhase(t, out, r)
	}
	if s.on("5") {
		el, bound := runStartup(t)
		fmt.Fprintf(out, "\n5. startup: 25 shards READY, max_concurrency 1, 100 ms window\n")
		fmt.Fprintf(out, "   %v against the bound %v → ratio %.3f (target <= 1.05 + a few ms)\n", el.Round(time.Millisecond), bound, float64(el)/float64(bound))
		r.add("startup/ratio", "startup, 25 shards READY (max_concurrency 1, 100 ms window) / bound", "", float64(el)/float64(bound), "≤ 1.05")
	}
	if s.on("6") {
		compressionPhase(t, out, r)
	}
	if s.on("7") {
		stormPhase(t, out, r, bin)
	}
	if s.on("8") {
		scalePhase(t, out, r, bin)
	}
	return r
}

func memoryPhase(t *testing.T, out io.Writer, r *benchRun) {
	heap, rssMB, guilds := runMemory(t)
	fmt.Fprintf(out, "\n4. memory after %d guilds (25 shards × 1000 GUILD_CREATEs)\n", guilds)
	fmt.Fprintf(out, "   Go heap retained             %9.2f MB per 1k guilds (target <= 2)\n", heap)
	fmt.Fprintf(out, "   RSS added (whole process)    %9.2f MB per 1k guilds (simulator included)\n", rssMB)
	r.add("memory/heap", "live heap per 1k guilds (25 × 1000 GUILD_CREATEs)", "MB", heap, "≤ 2")
}

func throughputPhases(t *testing.T, out io.Writer, r *benchRun, perShard int, naiveToo bool) {
	ours := runGateway(t, perShard, "zlib-stream", "pipeline.cpu.prof")
	raw := runRawPublish(t, perShard)
	sim := runSimEmission(t, perShard, "zlib-stream")
	ceiling := math.Min(raw.rate(), sim.rate())
	cpu := float64(ours.cpu.Nanoseconds()) / 1e3 / float64(ours.events)
	fmt.Fprintf(out, "\n1. throughput (first frame sent → last message acked)\n")
	fmt.Fprintf(out, "   gateway (zlib-stream)        %9.0f events/s\n", ours.rate())
	fmt.Fprintf(out, "   ceiling: raw JetStream async %9.0f events/s\n", raw.rate())
	fmt.Fprintf(out, "   ceiling: simulator emission  %9.0f events/s (zlib-stream, to readers that discard)\n", sim.rate())
	fmt.Fprintf(out, "   ratio to the lower ceiling   %9.2f   (target >= 0.60)\n", ours.rate()/ceiling)
	fmt.Fprintf(out, "   gateway CPU per event        %9.2f µs (process %.2f µs; target <= 7)\n",
		cpu, float64(ours.total.Nanoseconds())/1e3/float64(ours.events))
	n := fmt.Sprintf("%dk", ours.events/1000)
	r.add("throughput/rate", "throughput, "+n+" mixed dispatches, 4 shards, zlib-stream", "events/s", ours.rate(), "")
	r.add("throughput/raw", "ceiling: raw JetStream async publish", "events/s", raw.rate(), "")
	r.add("throughput/sim", "ceiling: simulator emission (zlib-stream)", "events/s", sim.rate(), "")
	r.add("throughput/ratio", "ratio to the lower ceiling", "", ours.rate()/ceiling, "≥ 0.6")
	r.add("throughput/cpu", "gateway CPU per event ("+n+" run, zlib-stream)", "µs", cpu, "≤ 7")
	if !naiveToo {
		return
	}
	naive := runNaive(t, perShard)
	fmt.Fprintf(out, "\n2. naive baseline (arikawa typed decode + re-marshal + synchronous publish)\n")
	fmt.Fprintf(out, "   naive                        %9.0f events/s, %.2f µs CPU per event\n", naive.rate(), float64(naive.cpu.Nanoseconds())/1e3/float64(naive.events))
	fmt.Fprintf(out, "   speedup                      %9.2fx  (target >= 3)\n", ours.rate()/naive.rate())
	r.add("naive/speedup", "speedup over the naive baseline (arikawa)", "×", ours.rate()/naive.rate(), "≥ 3")
}

var latencyRates = []int{1000, 5000, 10000}

// latencyTargets are the p99 targets per rate.
var latencyTargets = map[int]float64{5000: 2, 10000: 5}

func latencyPhase(t *testing.T, out io.Writer, r *benchRun) {
	fmt.Fprintf(out, "\n3. route latency, frame read → JetStream ack (paced generator, %v per rate)\n", latencyWindow)
	fmt.Fprintf(out, "   %-7s %8s %8s %8s %8s %7s | %-29s | %s\n", "rate", "p50", "p99", "p99.9", "max", "events", "generator jitter p50/p99/max", "load avg, process CPU, run-queue wait")
	for _, rate := range latencyRates {
		l := runPacedLatency(t, rate)
		fmt.Fprintf(out, "   %5d/s %8s %8s %8s %8s %7d | %8s %8s %9s | %s, %.2f cores, %.0f ms/s\n", rate,
			ms(l.route.p50), ms(l.route.p99), ms(l.route.p999), ms(l.route.max), l.route.n,
			ms(l.jitter.P50), ms(l.jitter.P99), ms(l.jitter.Max), l.load, l.procCPU, msf(l.runWait))
		k := "latency/" + strconv.Itoa(rate)
		label := fmt.Sprintf("latency at %s/s, ", thousands(rate))
		target := ""
		if v, ok := latencyTargets[rate]; ok {
			target = fmt.Sprintf("< %g ms", v)
		}
		r.add(k+"/p50", label+"p50", "ms", msf(l.route.p50), "")
		r.add(k+"/p99", label+"p99", "ms", msf(l.route.p99), target)
		r.add(k+"/p999", label+"p99.9", "ms", msf(l.route.p999), "")
		r.add(k+"/max", label+"max", "ms", msf(l.route.max), "")
		r.add(k+"/jitter99", label+"generator send jitter p99", "ms", msf(l.jitter.P99), "")
		r.add(k+"/cpu", label+"process CPU (gateway + simulator + NATS)", "cores", l.procCPU, "")
		r.add(k+"/runwait", label+"threads runnable but waiting for a CPU", "ms/s", msf(l.runWait), "")
		r.add(k+"/load", label+"load average (1 min) at the end", "", load1(l.load), "")
	}
}

func compressionPhase(t *testing.T, out io.Writer, r *benchRun) {
	fmt.Fprintf(out, "\n6. transport compression (%d events each)\n", 40000)
	targets := map[string]string{"none": "≤ 4", "zlib-stream": "≤ 7", "zstd-stream": "≤ 6"}
	for _, mode := range []string{"none", "zlib-stream", "zstd-stream"} {
		res := runGateway(t, 10000, mode, "")
		cpu := float64(res.cpu.Nanoseconds()) / 1e3 / float64(res.events)
		fmt.Fprintf(out, "   %-12s %7.0f bytes/event on the wire, %6.2f µs gateway CPU/event, %8.0f events/s\n",
			mode, res.wire/float64(res.events), cpu, res.rate())
		r.add("compression/"+mode+"/cpu", "gateway CPU per event, 40k run, "+mode, "µs", cpu, targets[mode])
		r.add("compression/"+mode+"/bytes", "bytes per event on the wire, "+mode, "B", res.wire/float64(res.events), "")
	}
}

func stormPhase(t *testing.T, out io.Writer, r *benchRun, bin string) {
	s := runStorm(t, bin)
	ceiling := math.Min(s.raw, s.sim)
	fmt.Fprintf(out, "\n7. startup storm: %d shards × %d GUILD_CREATEs (%d members each), gateway in its own process\n", stormShards, stormGuilds, stormMembers)
	fmt.Fprintf(out, "   first READY → last guild.join acked %8.2f s (%d guilds, %.0f guilds/s)\n", s.elapsed.Seconds(), s.guilds, s.rate())
	fmt.Fprintf(out, "   ceilings: raw JetStream %.0f/s, simulator emission %.0f/s → ratio %.2f\n", s.raw, s.sim, s.rate()/ceiling)
	fmt.Fprintf(out, "   peak RSS %.0f MB (VmHWM), peak heap %.0f MB (sampled every %v), gateway CPU %.1f s (%.1f µs per guild)\n",
		s.peakRSS/(1<<20), s.peakHeap/(1<<20), stormSampling, s.cpu.Seconds(), s.cpu.Seconds()*1e6/float64(s.guilds))
	fmt.Fprintf(out, "   publish buffer peak %.0f MB (BUFFER_MAX_BYTES 256 MiB), shards paused by it %.1f s in total\n",
		s.peakBuffered/(1<<20), s.backpressure)
	r.add("storm/elapsed", "storm: first READY → last guild.join acked (62,500 guilds)", "s", s.elapsed.Seconds(), "")
	r.add("storm/rate", "storm: guild.join rate", "guilds/s", s.rate(), "")
	r.add("storm/ratio", "storm: ratio to the lower same-run ceiling", "", s.rate()/ceiling, "")
	r.add("storm/rss", "storm: peak RSS of the gateway process", "MB", s.peakRSS/(1<<20), "")
	r.add("storm/heap", "storm: peak Go heap (sampled)", "MB", s.peakHeap/(1<<20), "")
	r.add("storm/cpu", "storm: gateway CPU per guild", "µs", s.cpu.Seconds()*1e6/float64(s.guilds), "")
	r.add("storm/buffer", "storm: publish buffer peak (accepted, not yet acked)", "MB", s.peakBuffered/(1<<20), "")
	r.add("storm/paused", "storm: time a shard paused reading for a full buffer (mean)", "s", s.backpressure/stormShards, "")
}

func scalePhase(t *testing.T, out io.Writer, r *benchRun, bin string) {
	fmt.Fprintf(out, "\n8. cost against scale: %d events/s in total, gateway in its own process\n", scaleRate)
	for _, n := range scaleShards {
		s := runScale(t, bin, n)
		fmt.Fprintf(out, "   %3d shards: %6.2f µs CPU per event (%.2f of it system; %d events), RSS %6.1f MB, heap %5.1f MB, %4d goroutines\n",
			n, us(s.cpuPerEvent), us(s.sysPerEvent), s.events, s.rss/(1<<20), s.heap/(1<<20), s.goroutines)
		k := "scale/" + strconv.Itoa(n)
		label := fmt.Sprintf("%d shard(s) at %s events/s: ", n, thousands(scaleRate))
		r.add(k+"/cpu", label+"CPU per event", "µs", us(s.cpuPerEvent), "flat")
		r.add(k+"/sys", label+"of which system (kernel) time", "µs", us(s.sysPerEvent), "")
		r.add(k+"/rss", label+"RSS", "MB", s.rss/(1<<20), "")
		r.add(k+"/goroutines", label+"goroutines", "", float64(s.goroutines), "")
	}
}

// load1 is the 1-minute figure of a /proc/loadavg line.
func load1(load string) float64 {
	v, _ := strconv.ParseFloat(strings.Fields(load + " 0")[0], 64)
	return v
}

func ms(d time.Duration) string { return strconv.FormatFloat(msf(d), 'f', 2, 64) + "ms" }

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

func msf(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func thousands(n int) string {
	if n >= 1000 && n%1000 == 0 {
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}

package tui

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/sctrace/sctrace/internal/tracetest"
	"github.com/sctrace/sctrace/trace"
)

// viewBenchEnv names the trace file TestViewMillionProcess opens, when set
// by BenchmarkViewMillion.
const viewBenchEnv = "SCTRACE_VIEW_BENCH_FILE"

// viewBenchKeys are the keys pressed in the benchmark: walking, jumping
// to events both ways, to the end and back, to a step in the middle,
// searches, stepping over a call, to user mode, and the panes.
var viewBenchKeys = keys("f f f f f f f f f f b b b b b e e e e e e e e e e E E E E E G E E b b g 5 0 0 0 0 0 enter " +
	"f f e e / s w a p g s enter / s w a p g s enter / i r e t q enter o o o r r tab tab tab t O O t " +
	"g 9 9 9 9 9 9 enter b b b g 0 enter f f f")

// BenchmarkViewMillion saves a trace of a million steps (tracetest.Repeat
// of the replay trace the model tests use) and opens it as `sctrace view`
// does, in a fresh process so that its memory is the viewer's alone:
// the time to open the file, to the first screen, each key press's
// Update and Render (the worst and the mean), and the process's peak RSS.
//
//	go test -run '^$' -bench ViewMillion -benchtime 1x ./tui/
func BenchmarkViewMillion(b *testing.B) {
	src, err := trace.ReadFile(filepath.Join("testdata", "syscall.json"))
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "million.sctrace")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	if err := tracetest.Repeat(src, 1_000_000).Write(w); err != nil {
		b.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		cmd := exec.Command(os.Args[0], "-test.run=^TestViewMillionProcess$", "-test.v")
		cmd.Env = append(os.Environ(), viewBenchEnv+"="+path)
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("%v\n%s", err, out)
		}
		if _, slow, ok := strings.Cut(string(out), "slowest key"); ok {
			slow, _, _ = strings.Cut(slow, "\n")
			b.Log("slowest key" + slow)
		}
		_, line, ok := strings.Cut(string(out), "VIEWBENCH ")
		if !ok {
			b.Fatalf("no figures in\n%s", out)
		}
		line, _, _ = strings.Cut(line, "\n")
		for _, kv := range strings.Fields(line) {
			k, v, _ := strings.Cut(kv, "=")
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("%q: %v", kv, err)
			}
			b.ReportMetric(x, k)
		}
	}
}

// TestViewMillionProcess is the viewer process of BenchmarkViewMillion;
// run on its own it has nothing to open and skips.
func TestViewMillionProcess(t *testing.T) {
	path := os.Getenv(viewBenchEnv)
	if path == "" {
		t.Skip("run by BenchmarkViewMillion")
	}
	t0, c0 := time.Now(), cpuTime()
	tr, err := trace.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	open := time.Since(t0)
	m := New(Config{Driver: NewReplay(tr)})
	m.Update(tea.WindowSizeMsg{Width: 160, Height: 48})
	if m.Render() == "" {
		t.Fatal("nothing rendered")
	}
	first, firstCPU := time.Since(t0), cpuTime()-c0
	// Wall-clock time, and the CPU time of the thread doing the work,
	// which other load on the machine does not inflate.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var worst, total, cpuWorst, cpuTotal time.Duration
	var walls []time.Duration
	worstKey := ""
	for _, k := range viewBenchKeys {
		t1, c1 := time.Now(), threadCPU()
		m.Update(k)
		m.Render()
		d, c := time.Since(t1), threadCPU()-c1
		total, cpuTotal = total+d, cpuTotal+c
		walls = append(walls, d)
		cpuWorst = max(cpuWorst, c)
		if d > worst {
			worst, worstKey = d, k.String()
		}
	}
	slices.Sort(walls)
	p95 := walls[len(walls)*95/100]
	if m.Steps() != 1_000_000 {
		t.Fatalf("%d steps", m.Steps())
	}
	t.Logf("slowest key %q; status %q", worstKey, m.status)
	// The same keys on the short trace the million steps were made from:
	// what a key costs when the trace's length is no factor.
	small, err := trace.ReadFile(filepath.Join("testdata", "syscall.json"))
	if err != nil {
		t.Fatal(err)
	}
	sm := New(Config{Driver: NewReplay(small)})
	sm.Update(tea.WindowSizeMsg{Width: 160, Height: 48})
	sm.Render()
	var smallWorst time.Duration
	for _, k := range viewBenchKeys {
		t1 := time.Now()
		sm.Update(k)
		sm.Render()
		smallWorst = max(smallWorst, time.Since(t1))
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	n := time.Duration(len(viewBenchKeys))
	fmt.Printf("VIEWBENCH open-s=%.3f first-screen-s=%.3f first-screen-cpu-s=%.3f key-max-ms=%.2f key-p95-ms=%.2f key-mean-ms=%.2f "+
		"key-cpu-max-ms=%.2f key-cpu-mean-ms=%.2f short-trace-key-max-ms=%.2f peak-rss-MB=%.0f\n",
		open.Seconds(), first.Seconds(), firstCPU.Seconds(), ms(worst), ms(p95), ms(total/n),
		ms(cpuWorst), ms(cpuTotal/n), ms(smallWorst), peakRSS(t)/1e6)
}

// cpuTime returns the CPU time the process has used: the figure to read
// beside wall-clock time on a machine shared with other work.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// threadCPU returns the CPU time of the calling thread (RUSAGE_THREAD).
func threadCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(1, &ru) // RUSAGE_THREAD, which package syscall does not name
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// peakRSS returns the process's peak resident set size (VmHWM) in bytes.
func peakRSS(t *testing.T) float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb * 1024
		}
	}
	t.Fatal("no VmHWM in /proc/self/status")
	return 0
}

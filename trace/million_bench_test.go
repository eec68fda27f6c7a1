package trace_test

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/sctrace/sctrace/internal/tracetest"
	"github.com/sctrace/sctrace/trace"
)

// million is the length of the long traces the benchmarks below make.
const million = 1_000_000

func source(tb testing.TB) *trace.Trace {
	tb.Helper()
	// The TUI's replay trace: a syscall round trip with 24 stack words
	// a step, as `--format trace` records them.
	src, err := trace.ReadFile(filepath.Join("..", "tui", "testdata", "syscall.json"))
	if err != nil {
		tb.Fatal(err)
	}
	return src
}

func heapMB() float64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapAlloc) / 1e6
}

// BenchmarkMillionAppend appends a million steps, as a recorder does, and
// reports the time a step and the heap the trace holds afterwards.
//
//	go test -run '^$' -bench Million -benchtime 1x ./trace/
func BenchmarkMillionAppend(b *testing.B) {
	src := source(b)
	steps := make([]trace.Step, src.Len())
	for i, s := range src.All() {
		steps[i] = *s
	}
	for b.Loop() {
		before := heapMB()
		t0, c0 := time.Now(), cpuTime()
		tr := trace.New()
		for i := range million {
			tr.Append(steps[i%len(steps)])
		}
		b.ReportMetric(float64(time.Since(t0).Nanoseconds())/million, "ns/step")
		b.ReportMetric(float64((cpuTime()-c0).Nanoseconds())/million, "cpu-ns/step")
		b.ReportMetric(heapMB()-before, "heap-MB")
		runtime.KeepAlive(tr)
	}
}

// BenchmarkMillionWrite saves a million-step trace (tracetest.Repeat) and
// reports the time and the file's size.
func BenchmarkMillionWrite(b *testing.B) {
	tr := tracetest.Repeat(source(b), million)
	path := filepath.Join(b.TempDir(), "million.sctrace")
	for b.Loop() {
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		t0, c0 := time.Now(), cpuTime()
		w := bufio.NewWriter(f)
		if err := tr.Write(w); err != nil {
			b.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(time.Since(t0).Seconds(), "write-s")
		b.ReportMetric((cpuTime() - c0).Seconds(), "write-cpu-s")
		fi, err := os.Stat(path)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(fi.Size())/1e6, "file-MB")
		b.ReportMetric(float64(fi.Size())/million, "bytes/step")
	}
}

// BenchmarkMillionRead reads a saved million-step trace: opened for
// viewing (Open: head and index, chunks decoded when shown), and read in
// full (ReadFile: every chunk checked, the indexes built from the steps,
// as printing and converting do). It reports the time, the CPU time and
// the heap the trace holds.
func BenchmarkMillionRead(b *testing.B) {
	path := filepath.Join(b.TempDir(), "million.sctrace")
	if err := writeFile(path, tracetest.Repeat(source(b), million)); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		read func(string) (*trace.Trace, error)
	}{
		{"open", func(p string) (*trace.Trace, error) { return trace.Open(context.Background(), p) }},
		{"readfile", trace.ReadFile},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				before := heapMB()
				t0, c0 := time.Now(), cpuTime()
				tr, err := bc.read(path)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(time.Since(t0).Seconds(), "read-s")
				b.ReportMetric((cpuTime() - c0).Seconds(), "read-cpu-s")
				if tr.Len() != million {
					b.Fatalf("%d steps", tr.Len())
				}
				b.ReportMetric(heapMB()-before, "heap-MB")
				runtime.KeepAlive(tr)
			}
		})
	}
}

func writeFile(path string, tr *trace.Trace) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	if err := tr.Write(w); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// cpuTime returns the CPU time the process has used: the figure to read
// beside wall-clock time on a machine shared with other work.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

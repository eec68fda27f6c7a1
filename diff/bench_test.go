package diff

import (
	"io"
	"runtime"
	"testing"
	"time"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/trace"
)

// benchSteps is the size of each trace BenchmarkCompare diffs.
const benchSteps = 100_000

// longTraces builds two traces of about benchSteps steps from the real
// int $0x80 round trip in trace/testdata, repeated: A repeats it as
// recorded; B, on the same kernel banner (or another one, with
// otherBuild), leaves the CR3 switch out of every 7th repetition, patches
// the exit swapgs into a NOP in every 11th and makes the call to
// do_syscall_64 twice in every 13th. With unrelated, every function of B
// has another name, so that no step of A matches one of B.
func longTraces(b *testing.B, otherBuild, unrelated bool) (*trace.Trace, *trace.Trace) {
	b.Helper()
	src, err := trace.ReadFile("../trace/testdata/int80.json")
	if err != nil {
		b.Fatal(err)
	}
	var call, ret = -1, -1 // the call to do_syscall_64 and its return
	for i := range src.Len() {
		s := src.Step(i)
		if s.Op == x86asm.CALL && call < 0 {
			call = i
		}
		if s.Op == x86asm.RET && call >= 0 && ret < 0 {
			ret = i
		}
	}
	if call < 0 || ret < 0 {
		b.Fatal("no call and return in the round trip")
	}
	a := &trace.Trace{Header: src.Header}
	bt := &trace.Trace{Header: src.Header}
	if otherBuild {
		bt.Header.Kernel += " (rebuilt)"
	}
	for rep := 0; a.Len() < benchSteps; rep++ {
		for i := range src.Len() {
			s := *src.Step(i)
			a.Append(s)
			if rep%7 == 3 && (s.Symbol == "entry_INT80+0x5" || s.Symbol == "entry_INT80+0x8" || s.Symbol == "entry_INT80+0xf") {
				continue
			}
			if rep%11 == 5 && s.Op == x86asm.SWAPGS && s.CPL == 0 && i > src.Len()/2 {
				s.Bytes, s.Op, s.Mnemonic, s.ATT, s.Intel = trace.Bytes{0x0f, 0x1f, 0x00}, x86asm.NOP, "nop", "nopl (%rax)", "nop DWORD PTR [rax]"
			}
			if unrelated && s.Symbol != "" {
				s.Symbol = "other_" + s.Symbol
			}
			bt.Append(s)
			if rep%13 == 8 && i == ret {
				for j := call; j <= ret; j++ {
					bt.Append(*src.Step(j))
				}
			}
		}
	}
	return a, bt
}

// BenchmarkCompare diffs two traces of about 10^5 steps each and prints
// the result as text: the time per diff (target: at most 2 s) and the
// memory it allocates and keeps (target: at most 300 MB). The unrelated
// case, where nothing matches, is the one whose cost Myers' algorithm
// alone would square.
func BenchmarkCompare(b *testing.B) {
	for _, bc := range []struct {
		name             string
		other, unrelated bool
	}{{"same-build", false, false}, {"other-build", true, false}, {"unrelated", false, true}} {
		b.Run(bc.name, func(b *testing.B) {
			ta, tb := longTraces(b, bc.other, bc.unrelated)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			var r *Result
			for b.Loop() {
				r = Compare(ta, tb)
				if err := WriteText(io.Discard, r, Options{}); err != nil {
					b.Fatal(err)
				}
			}
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)
			allocMB := float64(after.TotalAlloc-before.TotalAlloc) / float64(b.N) / (1 << 20)
			runtime.GC()
			runtime.ReadMemStats(&after)
			liveMB := (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / (1 << 20)
			b.ReportMetric(elapsed.Seconds()/float64(b.N), "s/diff")
			b.ReportMetric(allocMB, "MB-alloc/diff")
			b.ReportMetric(liveMB, "MB-result")
			b.ReportMetric(float64(ta.Len()), "steps-A")
			b.ReportMetric(float64(tb.Len()), "steps-B")
			if r.Total.InA() != ta.Len() || r.Total.InB() != tb.Len() || r.Total.Same() {
				b.Fatalf("counts %+v for %d and %d steps", r.Total, ta.Len(), tb.Len())
			}
			runtime.KeepAlive(r)
		})
	}
}

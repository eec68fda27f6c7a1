package qemulog_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sctrace/sctrace/qemulog"
	"github.com/sctrace/sctrace/x86"
)

// capture is what the stub read at the two ends of a captured log: the
// state at the user instruction that entered the kernel, and at the user
// instruction after it, where the guest stopped.
type capture struct {
	Start *x86.State `json:"start"`
	End   *x86.State `json:"end"`
}

// dumpRegs are the State registers a QEMU dump carries.
var dumpRegs = func() []x86.Reg {
	var out []x86.Reg
	for r := x86.Reg(0); r < x86.NumRegs; r++ {
		if r != x86.KernelGSBase && r != x86.CR8 {
			out = append(out, r)
		}
	}
	return out
}()

func readAll(t testing.TB, log []byte) ([]qemulog.Record, *qemulog.Reader, error) {
	t.Helper()
	rd := qemulog.NewReader(bytes.NewReader(log))
	var recs []qemulog.Record
	for {
		r, err := rd.Next()
		if err != nil {
			return recs, rd, err
		}
		c := *r
		c.Before = append([]qemulog.Interrupt(nil), r.Before...)
		recs = append(recs, c)
	}
}

func loadCapture(t *testing.T, name string) ([]byte, capture) {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name+".log.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	log, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	js, err := os.ReadFile(filepath.Join("testdata", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var c capture
	if err := json.Unmarshal(js, &c); err != nil {
		t.Fatal(err)
	}
	return log, c
}

// checkLog reads a log of one teaching-kernel round trip by mech and checks
// it against the stub's reading at its start, against itself (the CPL
// field and CS's RPL), and the interrupt lines the mechanism must cause.
func checkLog(t *testing.T, log []byte, mech string, c capture) {
	t.Helper()
	recs, rd, err := readAll(t, log)
	if err != io.EOF {
		t.Fatalf("read: %v", err)
	}
	traces := bytes.Count(log, []byte("\nTrace "))
	if bytes.HasPrefix(log, []byte("Trace ")) {
		traces++
	}
	if len(recs) != traces-rd.Dropped || len(recs) < 10 {
		t.Fatalf("%d records, %d Trace lines, %d dropped", len(recs), traces, rd.Dropped)
	}
	if rd.Bytes != int64(len(log)) {
		t.Errorf("Bytes = %d, the log has %d", rd.Bytes, len(log))
	}
	first := recs[0].State
	for _, r := range dumpRegs {
		got, ok := first.Get(r)
		want, _ := c.Start.Get(r)
		if !ok || got != want {
			t.Errorf("first record %s = %#x (known %v), the stub read %#x", r, got, ok, want)
		}
	}
	for _, r := range []x86.Reg{x86.KernelGSBase, x86.CR8} {
		if first.Has(r) {
			t.Errorf("%s known in a record: the dump does not carry it", r)
		}
	}
	var ints []qemulog.Interrupt
	for i, rec := range recs {
		if rec.State.CPL() != rec.CPL {
			t.Errorf("record %d (line %d): CPL=%d but CS %#x", i, rec.Line, rec.CPL, rec.State.Val(x86.CS))
		}
		if rec.Segs[qemulog.CS].Selector != uint16(rec.State.Val(x86.CS)) || rec.Segs[qemulog.GS].Base != rec.State.Val(x86.GSBase) {
			t.Errorf("record %d: segment caches disagree with the State", i)
		}
		if i > 0 && rec.Line <= recs[i-1].Line {
			t.Errorf("record %d: line %d after %d", i, rec.Line, recs[i-1].Line)
		}
		if rec.IDT.Limit == 0 || rec.State.Val(x86.EFER)&(1<<10) == 0 {
			t.Errorf("record %d: IDT limit %#x, EFER %#x: not a long-mode dump", i, rec.IDT.Limit, rec.State.Val(x86.EFER))
		}
		for _, in := range rec.Before {
			if rec.CPL != 0 {
				t.Errorf("record %d after interrupt %#x is at CPL %d, not in its handler", i, in.Vector, rec.CPL)
			}
		}
		ints = append(ints, rec.Before...)
	}
	if last := recs[len(recs)-1]; last.CPL != 0 || c.End.CPL() != 3 {
		t.Errorf("the last record is at CPL %d and the stop at CPL %d: want the kernel's return, then user mode", last.CPL, c.End.CPL())
	}
	var want []string
	switch mech {
	case "int80":
		want = []string{"v=80 soft=true cpl=3"}
	case "ud2":
		want = []string{"v=06 soft=false cpl=3"}
	}
	var got []string
	for _, in := range ints {
		got = append(got, fmt.Sprintf("v=%02x soft=%v cpl=%d", in.Vector, in.Soft, in.CPL))
		// The dump after the line is the state the CPU was in: before the
		// entering instruction, as the first record and the stub have it.
		if !in.HasState || in.State != recs[0].State {
			t.Errorf("interrupt %#x: state %v (read %v), want the first record's", in.Vector, in.State.R, in.HasState)
		}
		if in.RIP != c.Start.Val(x86.RIP) || in.RSP != c.Start.Val(x86.RSP) || uint64(in.CS) != c.Start.Val(x86.CS) {
			t.Errorf("interrupt at %#x:%#x rsp %#x; the stub read the entering instruction at %#x rsp %#x",
				in.CS, in.RIP, in.RSP, c.Start.Val(x86.RIP), c.Start.Val(x86.RSP))
		}
	}
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("interrupts %q, want %q", got, want)
	}
}

// TestReadCaptured reads logs QEMU 7.2 and 10.0 wrote for the teaching
// kernel's syscall, int $0x80 and ud2 (TestCapture -update makes them).
func TestReadCaptured(t *testing.T) {
	for _, q := range []string{"7.2", "10.0"} {
		for _, m := range []string{"syscall", "int80", "ud2"} {
			t.Run(m+"-"+q, func(t *testing.T) {
				log, c := loadCapture(t, m+"-"+q)
				checkLog(t, log, m, c)
			})
		}
	}
}

// TestTruncated cuts a log at points inside and between records: every
// complete record before the cut comes back, then a TruncatedError that
// names the line, or io.EOF when the cut falls right after a record.
func TestTruncated(t *testing.T) {
	log, _ := loadCapture(t, "syscall-7.2")
	all, _, _ := readAll(t, log)
	lines := bytes.SplitAfter(log, []byte("\n"))
	offset := func(line int) int { // bytes before line (1-based)
		n := 0
		for _, l := range lines[:line-1] {
			n += len(l)
		}
		return n
	}
	rec3 := int(all[3].Line) // the Trace line of record 3
	for _, tt := range []struct {
		name  string
		cut   int
		kept  int
		trunc bool
	}{
		{"mid Trace line", offset(rec3) + 5, 3, true},
		{"after Trace line", offset(rec3 + 1), 3, true},
		{"mid register line", offset(rec3+2) + 30, 3, true},
		{"before EFER", offset(rec3 + 20), 3, true},
		{"mid EFER", offset(rec3+20) + 6, 3, true},
		{"after EFER", offset(rec3 + 21), 4, false},
		{"empty", 0, 0, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			recs, _, err := readAll(t, log[:tt.cut])
			var te *qemulog.TruncatedError
			if tt.trunc {
				if !errors.As(err, &te) || te.Kept != int64(tt.kept) {
					t.Fatalf("err %v, want a TruncatedError keeping %d", err, tt.kept)
				}
				if !strings.Contains(err.Error(), fmt.Sprintf("line %d", bytes.Count(log[:tt.cut], []byte("\n"))+1)) &&
					!strings.Contains(err.Error(), fmt.Sprintf("line %d", bytes.Count(log[:tt.cut], []byte("\n")))) {
					t.Errorf("error %q does not name the line", err)
				}
			} else if err != io.EOF {
				t.Fatalf("err %v, want io.EOF", err)
			}
			if len(recs) != tt.kept {
				t.Fatalf("%d records, want %d", len(recs), tt.kept)
			}
			for i := range recs {
				if recs[i].State != all[i].State {
					t.Errorf("record %d differs from the whole log's", i)
				}
			}
		})
	}
}

// TestUnknownLayout changes one line of a real dump at a time: each gives
// ErrUnknownLayout naming the line.
func TestUnknownLayout(t *testing.T) {
	log, _ := loadCapture(t, "syscall-10.0")
	lines := strings.SplitAfter(string(log), "\n")
	// lines[0] is record 0's Trace line; its dump is lines[1:21].
	for _, tt := range []struct {
		name string
		line int // index in lines
		edit func(string) string
	}{
		{"32-bit layout", 1, func(s string) string { return "EAX=00000027 EBX=00000001 ECX=00000000 EDX=00000000\n" }},
		{"register renamed", 3, func(s string) string { return strings.Replace(s, "R10=", "R10:", 1) }},
		{"bad hex", 2, func(s string) string { return strings.Replace(s, "RSP=0", "RSP=x", 1) }},
		{"RIP line reordered", 5, func(s string) string { return strings.Replace(s, "RIP=", "RFL=", 1) }},
		{"segment shifted", 7, func(s string) string { return strings.Replace(s, "CS =", "CS  =", 1) }},
		{"missing IDT", 15, func(s string) string { return "" }},
		{"CR line", 16, func(s string) string { return strings.Replace(s, "CR3=", "CR8=", 1) }},
		{"no EFER", 20, func(s string) string { return "XCR0=0000000000000003\n" }},
		{"dump without Trace line", 21, func(s string) string {
			return "RAX=0000000000000027 RBX=0000000000000001 RCX=0000000000000000 RDX=0000000000000000\n"
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mod := append([]string(nil), lines...)
			mod[tt.line] = tt.edit(mod[tt.line])
			recs, _, err := readAll(t, []byte(strings.Join(mod, "")))
			if !errors.Is(err, qemulog.ErrUnknownLayout) {
				t.Fatalf("err = %v, want ErrUnknownLayout", err)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("line %d:", tt.line+1)) {
				t.Errorf("error %q does not name line %d", err, tt.line+1)
			}
			if len(recs) != 0 {
				t.Errorf("%d records before the bad one, want 0", len(recs))
			}
		})
	}
}

// TestStoppedBeforeRun copies what QEMU logs when a block is left before
// its instruction ran (an interrupt pending): the block's record is
// dropped, and the interrupt belongs to the next record that ran.
func TestStoppedBeforeRun(t *testing.T) {
	log, _ := loadCapture(t, "syscall-7.2")
	all, _, _ := readAll(t, log)
	lines := strings.SplitAfter(string(log), "\n")
	at := int(all[2].Line) + 20 // after record 2's EFER line
	extra := []string{
		"Stopped execution of TB chain before 0x7f5ccc000380 [ffffffff80202003] entry_SYSCALL_64\n",
		"     1: v=20 e=0000 i=0 cpl=0 IP=0010:ffffffff80202003 pc=ffffffff80202003 SP=0018:00000000007fffa0 env->regs[R_EAX]=0000000000000027\n",
	}
	extra = append(extra, lines[all[2].Line:at]...) // its dump
	mod := append(append(append([]string(nil), lines[:at]...), extra...), lines[at:]...)
	recs, rd, err := readAll(t, []byte(strings.Join(mod, "")))
	if err != io.EOF {
		t.Fatal(err)
	}
	if rd.Dropped != 1 || len(recs) != len(all)-1 {
		t.Fatalf("%d records, %d dropped; the log has %d and one did not run", len(recs), rd.Dropped, len(all))
	}
	if recs[2].State.Val(x86.RIP) != all[3].State.Val(x86.RIP) {
		t.Errorf("record 2 at %#x, want the one after the dropped one", recs[2].State.Val(x86.RIP))
	}
	if b := recs[2].Before; len(b) != 1 || b[0].Vector != 0x20 || !b[0].External() {
		t.Errorf("record 2 Before = %+v, want the timer interrupt", b)
	}
}

// BenchmarkRead reads a large log made of a real one repeated, and reports
// the throughput (MB/s) and records per second.
func BenchmarkRead(b *testing.B) {
	f, err := os.Open(filepath.Join("testdata", "ud2-10.0.log.gz"))
	if err != nil {
		b.Fatal(err)
	}
	zr, _ := gzip.NewReader(f)
	one, _ := io.ReadAll(zr)
	f.Close()
	big := bytes.Repeat(one, (64<<20)/len(one))
	b.SetBytes(int64(len(big)))
	b.ResetTimer()
	n := 0
	for range b.N {
		rd := qemulog.NewReader(bytes.NewReader(big))
		for {
			if _, err := rd.Next(); err != nil {
				if err != io.EOF {
					b.Fatal(err)
				}
				break
			}
			n++
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
}

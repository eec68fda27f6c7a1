package session

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/accel"
	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/internal/kerneltest"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/target"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

func startFixture(t testing.TB, o Options) *Session {
	t.Helper()
	testenv.NeedQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if o.Accel == "" {
		o.Accel = "tcg"
	}
	s, err := StartFixture(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// entryEvents counts what a round trip on the teaching kernel must show.
type entryEvents struct {
	swapgs, cr3, findings int
	kernelStack, cplZero  bool
}

func countEvents(tr *trace.Trace) entryEvents {
	var ev entryEvents
	ctx := &annotate.Context{Regions: tr.Header.Regions}
	for _, s := range tr.All() {
		for _, e := range s.Events {
			switch e {
			case annotate.EventSwapgs:
				ev.swapgs++
			case annotate.EventCR3Write:
				ev.cr3++
			}
		}
		for _, e := range s.Effects {
			if e.Verdict == annotate.Finding {
				ev.findings++
			}
		}
		if s.CPL == 0 {
			ev.cplZero = true
		}
		if r, ok := ctx.RegionOf(s.Regs.Val(x86.RSP)); ok && r.Kind == annotate.RegionKernelStack {
			ev.kernelStack = true
		}
	}
	return ev
}

// fixtureMechanisms are the teaching kernel's five ways in: the user
// instruction, the kernel's entry point (an ELF symbol) and its return
// instruction.
var fixtureMechanisms = []struct {
	mech  mechanism.Mechanism
	first string // mnemonic of step 0 (AT&T)
	entry string // symbol of the first kernel instruction
	last  string // the kernel's return instruction
}{
	{mechanism.Syscall, "syscall", "entry_SYSCALL_64", "sysretq"},
	{mechanism.Int80, "int $0x80", "entry_INT80", "iretq"},
	{mechanism.Sysenter, "sysenter", "entry_SYSENTER", "sysexit"},
	{mechanism.CallGate, "lcall", "entry_CALLGATE", "lretq"},
	{mechanism.UD2, "ud2", "asm_exc_invalid_op", "iretq"},
}

// TestRoundTrips records each mechanism on the real teaching kernel under
// QEMU and checks the annotations of its path (see checkFixtureRoundTrip).
func TestRoundTrips(t *testing.T) {
	for _, tt := range fixtureMechanisms {
		t.Run(string(tt.mech), func(t *testing.T) {
			s := startFixture(t, Options{Mechanism: tt.mech})
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			tr, err := s.RoundTrip(ctx, tt.mech)
			if err != nil {
				t.Fatal(err)
			}
			checkFixtureRoundTrip(t, s, tr, tt.mech, tt.first, tt.entry, tt.last)
		})
	}
}

// checkFixtureRoundTrip checks a round trip by mech recorded on the
// teaching kernel: it starts at the user instruction first (at its ELF
// label), enters CPL 0 at the symbol entry, swaps GS twice, writes CR3
// twice (the KPTI switch in and out), runs on the kernel stack, returns
// with last to the next user instruction, and the annotator finds nothing
// wrong.
func checkFixtureRoundTrip(t *testing.T, s *Session, tr *trace.Trace, mech mechanism.Mechanism, first, entry, last string) {
	t.Helper()
	if tr.Len() < 10 {
		t.Fatalf("only %d steps", tr.Len())
	}
	addr := func(name string) uint64 {
		a, ok := s.Symbols.Addr(name)
		if !ok {
			t.Fatalf("the teaching kernel has no symbol %s", name)
		}
		return a
	}
	st0 := tr.Step(0)
	if st0.Symbol != mech.UserLabel() || uint64(st0.RIP) != addr(mech.UserLabel()) || st0.CPL != 3 || !strings.HasPrefix(st0.ATT, first) {
		t.Errorf("step 0 = %s at %s %#x (CPL %d), want %q at %s %#x, CPL 3", st0.ATT, st0.Symbol, uint64(st0.RIP), st0.CPL, first, mech.UserLabel(), addr(mech.UserLabel()))
	}
	if st1 := tr.Step(1); uint64(st1.RIP) != addr(entry) || st1.CPL != 0 {
		t.Errorf("step 1 at %#x (%s, CPL %d), want %s %#x at CPL 0", uint64(st1.RIP), st1.Symbol, st1.CPL, entry, addr(entry))
	}
	end := tr.Step(tr.Len() - 1)
	if !strings.HasPrefix(end.ATT, last) || end.CPL != 0 {
		t.Errorf("last step = %s at CPL %d, want %s at CPL 0", end.ATT, end.CPL, last)
	}
	if tr.Final.CPL() != 3 {
		t.Errorf("final CPL = %d, want 3", tr.Final.CPL())
	}
	wantRIP := uint64(st0.RIP) + uint64(len(st0.Bytes))
	if got := tr.Final.Val(x86.RIP); got != wantRIP {
		t.Errorf("returned to %#x, want %#x (the instruction after %s)", got, wantRIP, first)
	}
	ev := countEvents(tr)
	if ev.swapgs != 2 || ev.cr3 != 2 || !ev.kernelStack || !ev.cplZero {
		t.Errorf("events: %+v; want 2 swapgs, 2 CR3 writes, CPL 0 and the kernel stack", ev)
	}
	if ev.findings != 0 {
		for _, f := range trace.Summarize(tr).Findings {
			t.Log(f)
		}
		t.Errorf("%d findings on a correct kernel", ev.findings)
	}
	if tr.Header.Stop != string(trace.StopUser) {
		t.Errorf("stop reason %q", tr.Header.Stop)
	}
}

// TestSyscallAnnotations checks the specific annotations of the syscall
// path: what SYSCALL revealed about LSTAR and STAR, the per-CPU area after
// swapgs, and the saved user stack pointer.
func TestSyscallAnnotations(t *testing.T) {
	s := startFixture(t, Options{Mechanism: mechanism.Syscall})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tr, err := s.RoundTrip(ctx, mechanism.Syscall)
	if err != nil {
		t.Fatal(err)
	}
	entry, _ := s.Symbols.Addr("entry_SYSCALL_64")
	var lstar *annotate.MSR
	for i, m := range tr.Header.MSRs {
		if m.Name == "IA32_LSTAR" {
			lstar = &tr.Header.MSRs[i]
		}
	}
	if lstar == nil || lstar.Value != entry || lstar.Source != annotate.SourceInferred {
		t.Errorf("LSTAR learnt = %+v, want %#x inferred", lstar, entry)
	}
	var text strings.Builder
	for _, s := range tr.All() {
		text.WriteString(s.ATT + "\n")
		for _, e := range s.Effects {
			text.WriteString(e.Text + "\n")
		}
	}
	for _, want := range []string{
		"CPL 3 → 0",
		"swapgs: gs_base 0x0 ⇄ k_gs_base",
		"user RSP saved",
		"switch to the kernel page tables",
		"(pt_regs->ss)",
		"sysretq",
		"CPL 0 → 3",
	} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text trace lacks %q", want)
		}
	}
}

// TestInterruptKeepsWhatWasRecorded cancels a recording half-way and
// checks that the steps recorded so far are returned, and that the guest
// is left without breakpoints and still steppable.
func TestInterruptKeepsWhatWasRecorded(t *testing.T) {
	s := startFixture(t, Options{Mechanism: mechanism.Syscall})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Recorder.ToEntry(ctx, mechanism.Syscall); err != nil {
		t.Fatal(err)
	}
	n := 0
	_, err := s.Recorder.Run(ctx, func(*trace.Step, *x86.State) trace.StopReason {
		n++
		if n == 5 {
			cancel()
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	tr := s.Recorder.Trace()
	if tr.Len() != 5 || tr.Header.Stop != string(trace.StopCancel) {
		t.Fatalf("after cancel: %d steps, stop %q; want 5 and %q", tr.Len(), tr.Header.Stop, trace.StopCancel)
	}
	// The guest still answers and is still in the kernel where we stopped.
	st, err := s.Target.State(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.CPL() != 0 {
		t.Errorf("CPL after 5 steps = %d, want 0", st.CPL())
	}
}

// TestBudget stops a recording at the step budget.
func TestBudget(t *testing.T) {
	s := startFixture(t, Options{Mechanism: mechanism.Int80, Budget: 7})
	tr, err := s.RoundTrip(context.Background(), mechanism.Int80)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Len() != 7 || tr.Header.Stop != string(trace.StopBudget) {
		t.Errorf("%d steps, stop %q; want 7, %q", tr.Len(), tr.Header.Stop, trace.StopBudget)
	}
}

// TestStepOver skips every call the entry code makes: the C dispatcher is
// not traced, but the assembly around it is.
func TestStepOver(t *testing.T) {
	full := startFixture(t, Options{Mechanism: mechanism.Syscall})
	all, err := full.RoundTrip(context.Background(), mechanism.Syscall)
	if err != nil {
		t.Fatal(err)
	}
	over := startFixture(t, Options{Mechanism: mechanism.Syscall, Over: 1})
	tr, err := over.RoundTrip(context.Background(), mechanism.Syscall)
	if err != nil {
		t.Fatal(err)
	}
	var skipped []string
	for _, s := range tr.All() {
		if s.Over != nil {
			skipped = append(skipped, s.Over.Target)
		}
		if s.CPL == 0 && strings.HasPrefix(s.Symbol, "do_syscall_64") {
			t.Errorf("step %d is inside do_syscall_64 with --over 1", s.Index)
		}
	}
	if len(skipped) == 0 || !strings.Contains(skipped[0], "do_syscall_64") {
		t.Errorf("stepped over %v, want do_syscall_64", skipped)
	}
	if tr.Len() >= all.Len() {
		t.Errorf("--over 1 recorded %d steps, stepping into everything %d", tr.Len(), all.Len())
	}
	if ev := countEvents(tr); ev.swapgs != 2 || ev.cr3 != 2 || ev.findings != 0 {
		t.Errorf("events with --over 1: %+v", ev)
	}
}

func TestAttachDeadAddress(t *testing.T) {
	start := time.Now()
	_, err := Attach(context.Background(), "127.0.0.1:1", Options{Timeout: time.Second})
	if err == nil {
		t.Fatal("attach to a closed port succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("attach to a dead address took %v", d)
	}
	if !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("error %q does not name the address", err)
	}
}

func TestAttachBadSymbols(t *testing.T) {
	_, err := Attach(context.Background(), "127.0.0.1:1", Options{Symbols: "testdata/nonexistent"})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("attach with a missing symbol file = %v, want a not-exist error", err)
	}
}

// BenchmarkRoundTrip records a full syscall round trip on the teaching
// kernel and reports the recorder's instructions per second, to compare
// with the raw `s`+`g` rate of the stub.
func BenchmarkRoundTrip(b *testing.B) {
	s := startFixture(b, Options{Mechanism: mechanism.Syscall})
	steps := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tr, err := s.RoundTrip(context.Background(), mechanism.Syscall)
		if err != nil {
			b.Fatal(err)
		}
		steps += tr.Len()
	}
	b.ReportMetric(float64(steps)/b.Elapsed().Seconds(), "insns/s")
	b.ReportMetric(float64(steps)/float64(b.N), "insns/op")
}

// TestStackWordsNearTheTop reads stack words at every step, including the
// user steps whose stack ends at an unmapped guard page: the words below
// the page boundary are kept.
func TestStackWordsNearTheTop(t *testing.T) {
	s := startFixture(t, Options{Mechanism: mechanism.Syscall, StackWords: 24})
	tr, err := s.RoundTrip(context.Background(), mechanism.Syscall)
	if err != nil {
		t.Fatal(err)
	}
	top, ok := s.Symbols.Find("user_stack")
	if !ok {
		t.Fatal("no user_stack symbol")
	}
	first := tr.Step(0)
	rsp := first.Regs.Val(x86.RSP)
	want := int(min(24, (top.Addr+top.Size-rsp)/8))
	if len(first.Stack) != want || want == 0 {
		t.Errorf("step 0 (rsp %#x, stack top %#x): %d stack words, want %d", rsp, top.Addr+top.Size, len(first.Stack), want)
	}
	for i, st := range tr.All() {
		if i == 0 {
			continue
		}
		if len(st.Stack) == 0 && st.Regs.CPL() == 0 && st.Symbol != "" {
			if r, ok := (&annotate.Context{Regions: tr.Header.Regions}).RegionOf(st.Regs.Val(x86.RSP)); ok && r.Kind == annotate.RegionKernelStack {
				t.Errorf("step %d on the kernel stack has no stack words", st.Index)
			}
		}
	}
}

// kept stops, when the test ends, the QEMU of a session started with
// Keep (so that it outlives Close, for gdb to count on the same guest)
// and removes the session's private directory.
func kept(t testing.TB, s *Session) {
	t.Cleanup(func() {
		s.QEMU.Stop()
		os.RemoveAll(s.tmp)
	})
}

// attachRunning boots the teaching kernel under QEMU, running in its trace
// loop (every mechanism in turn), the way a user starts a guest by hand,
// and attaches to it with o and no symbols.
func attachRunning(ctx context.Context, t *testing.T, o Options) *Session {
	t.Helper()
	inst := kerneltest.Start(t, t.TempDir(), "trace", 60*time.Second)
	s, err := Attach(ctx, inst.GDBAddr, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestAttachWithoutSymbols attaches to a running guest that sctrace did not
// start, with no symbols: the recorder steps out of whatever the guest was
// doing, finds the next user syscall by decoding, and records it.
func TestAttachWithoutSymbols(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := attachRunning(ctx, t, Options{Symbols: NoSymbols})
	tr, err := s.RoundTrip(ctx, mechanism.Syscall)
	if err != nil {
		t.Fatal(err)
	}
	first := tr.Step(0)
	if first.ATT != "syscall" || first.CPL != 3 || first.Symbol != "" {
		t.Errorf("step 0 = %q at CPL %d (symbol %q), want an unnamed user syscall", first.ATT, first.CPL, first.Symbol)
	}
	if tr.Final.CPL() != 3 || tr.Header.Stop != string(trace.StopUser) {
		t.Errorf("final CPL %d, stop %q", tr.Final.CPL(), tr.Header.Stop)
	}
	if ev := countEvents(tr); ev.swapgs != 2 || ev.cr3 != 2 || ev.findings != 0 {
		t.Errorf("events without symbols: %+v", ev)
	}
}

// TestProbeMSRs reads the MSRs behind the system-call instructions with
// the opt-in rdmsr probe on the teaching kernel, checks them against its
// symbols and the values its source sets, checks the guest comes out of the
// probe unchanged (the round trip goes on to the same end), and checks an
// MSR the CPU does not have is reported as such with nothing left changed.
func TestProbeMSRs(t *testing.T) {
	s := startFixture(t, Options{ProbeMSRs: true}) // the guest loops through every mechanism
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tr, err := s.RoundTrip(ctx, mechanism.Syscall)
	if err != nil {
		t.Fatal(err)
	}
	probed := map[string]annotate.MSR{}
	for _, m := range tr.Header.MSRs {
		if m.Source == annotate.SourceProbed {
			probed[m.Name] = m
		}
	}
	addr := func(name string) uint64 {
		a, ok := s.Symbols.Addr(name)
		if !ok {
			t.Fatalf("no symbol %s", name)
		}
		return a
	}
	want := map[string]uint64{
		"IA32_LSTAR":        addr("entry_SYSCALL_64"),
		"IA32_SYSENTER_EIP": addr("entry_SYSENTER"),
		"IA32_STAR":         0x0023_0010_0000_0000, // SYSRET base 0x23, SYSCALL CS 0x10
		"IA32_FMASK":        0x47700,               // IF TF DF AC NT, as Linux
		"IA32_SYSENTER_CS":  0x10,
	}
	for name, v := range want {
		if m, ok := probed[name]; !ok || m.Value != v {
			t.Errorf("probed %s = %+v, want %#x", name, m, v)
		}
	}
	// The probe put everything back: the round trip ends where it must.
	first := tr.Step(0)
	if tr.Final.CPL() != 3 || tr.Final.Val(x86.RIP) != uint64(first.RIP)+2 || tr.Len() < 20 {
		t.Errorf("after the probe: %d steps, final CPL %d at %#x", tr.Len(), tr.Final.CPL(), tr.Final.Val(x86.RIP))
	}
	if ev := countEvents(tr); ev.swapgs != 2 || ev.cr3 != 2 {
		t.Errorf("events after the probe: %+v", ev)
	}
	// What SYSCALL showed agrees with the probe. QEMU's TCG clears
	// arithmetic flags FMASK does not name: the trace says the emulator
	// did, and leaves them out of what it infers of FMASK, so nothing
	// contradicts the probed 0x47700.
	const arith = 0x8d5 // CF PF AF ZF SF OF
	for _, st := range tr.All() {
		for _, e := range st.Effects {
			if e.Verdict == annotate.Finding {
				t.Errorf("step %d: unexpected finding %q", st.Index, e.Text)
			}
		}
	}
	// The probe is recorded once, at the stop after the first step (the
	// user syscall), with an effect for each MSR it read.
	if len(tr.Probes) != 1 || tr.Probes[0].Step != 1 || len(tr.Probes[0].Effects) != len(trace.ProbedMSRs) {
		t.Fatalf("probes %+v: want one, before step 1, with %d effects", tr.Probes, len(trace.ProbedMSRs))
	}
	for _, e := range tr.Probes[0].Effects {
		if e.Verdict == annotate.Finding {
			t.Errorf("probe: unexpected finding %q", e.Text)
		}
	}
	if m := probed["IA32_FMASK"]; m.Value&arith != 0 {
		t.Errorf("FMASK %#x names arithmetic flags", m.Value)
	}

	// A probe on another path, inside the int $0x80 handler, leaves the
	// guest as it was there too. (A fault in rdmsr is tested against the
	// fake stub in package target: QEMU's TCG reads unknown MSRs as 0.)
	s.Recorder.Reset()
	if err := s.Recorder.ToEntry(ctx, mechanism.Int80); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recorder.Step(ctx); err != nil { // into the kernel
		t.Fatal(err)
	}
	before, err := s.Target.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	readings, err := s.Target.ProbeMSRs(ctx, []uint32{x86.MSRSysenterEIP, x86.MSRLSTAR})
	if err != nil {
		t.Fatal(err)
	}
	if len(readings) != 2 || readings[0].Value != addr("entry_SYSENTER") || readings[1].Value != addr("entry_SYSCALL_64") {
		t.Errorf("readings %+v: want SYSENTER_EIP and LSTAR", readings)
	}
	after, err := s.Target.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ch := before.Changed(after); len(ch) > 0 {
		t.Errorf("registers %v changed by the probe", ch)
	}
	if _, err := s.Recorder.Run(ctx, trace.BackInUser()); err != nil {
		t.Fatal(err)
	}
	if got := s.Recorder.Trace().Final; got.CPL() != 3 {
		t.Errorf("int80 after the probe ended at CPL %d", got.CPL())
	}
}

// TestProbeNeedsKernel refuses to probe from user mode.
func TestProbeNeedsKernel(t *testing.T) {
	s := startFixture(t, Options{Mechanism: mechanism.Syscall})
	if err := s.Recorder.ToEntry(context.Background(), mechanism.Syscall); err != nil {
		t.Fatal(err)
	}
	_, err := s.Target.ProbeMSRs(context.Background(), []uint32{x86.MSRLSTAR})
	if !errors.Is(err, target.ErrNotKernel) {
		t.Fatalf("probe at CPL 3 = %v, want ErrNotKernel", err)
	}
}

// TestAttachInt80WithoutSymbols finds the user's int $0x80 with no symbols
// through IDT entry 0x80: the handler is caught, the return address read
// from the frame the CPU pushed. The step budget is too small to find it by
// stepping.
func TestAttachInt80WithoutSymbols(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := attachRunning(ctx, t, Options{Budget: 3, Symbols: NoSymbols})
	if err := s.Recorder.ToEntry(ctx, mechanism.Int80); err != nil {
		t.Fatal(err)
	}
	st := s.Recorder.Current()
	code, err := s.Target.ReadMemory(ctx, st.Val(x86.RIP), 2)
	if err != nil {
		t.Fatal(err)
	}
	if st.CPL() != 3 || code[0] != 0xcd || code[1] != 0x80 {
		t.Errorf("stopped at %#x (CPL %d, % x), want a user int $0x80", st.Val(x86.RIP), st.CPL(), code)
	}
}

// TestInterruptWhileStepping plays a stub that cannot mask interrupts while
// stepping (QEMU under KVM on a host kernel without KVM_GUESTDBG_BLOCKIRQ
// offers only ENABLE; here TCG is asked for ENABLE|NOTIMER) and injects an
// NMI with QEMU's `nmi` monitor command in the middle of the entry path.
// An NMI is not masked by RFLAGS.IF, so the CPU takes it at the next step
// and lands on the handler in IDT[2] (the teaching kernel's asm_exc_nmi, a
// lone iretq). By default the recorder must say so, run the handler to its
// return and leave it out: the trace is then the same instruction sequence
// as an undisturbed one. With AllowIRQ it records the handler: one step
// more, the iretq of asm_exc_nmi. int $0x80 enters through the IDT too,
// and must not be taken for an interrupt.
func TestInterruptWhileStepping(t *testing.T) {
	for _, mech := range []mechanism.Mechanism{mechanism.Syscall, mechanism.Int80} {
		ref := startFixture(t, Options{Mechanism: mech})
		want, err := ref.RoundTrip(context.Background(), mech)
		if err != nil {
			t.Fatal(err)
		}
		for _, record := range []bool{false, true} {
			name := string(mech) + "/stepped-over"
			if record {
				name = string(mech) + "/recorded"
			}
			t.Run(name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				s := startFixture(t, Options{Mechanism: mech, StepFlags: gdbremote.SStepEnable | gdbremote.SStepNoTimer, AllowIRQ: record})
				if err := s.ToEntry(ctx, mech); err != nil {
					t.Fatal(err)
				}
				const at = 12
				for range at {
					if _, err := s.Recorder.Step(ctx); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := s.Conn.Monitor(ctx, "nmi"); err != nil {
					t.Fatal(err)
				}
				got, err := s.Record(ctx)
				if err != nil {
					t.Fatal(err)
				}
				h := got.Header
				wantIRQ := trace.IRQSteppedOver
				if record {
					wantIRQ = trace.IRQRecorded
				}
				if h.StepFlags != "ENABLE|NOTIMER" || h.Interrupts != wantIRQ {
					t.Errorf("header step flags %q, interrupts %q; want ENABLE|NOTIMER, %q (%s)", h.StepFlags, h.Interrupts, wantIRQ, h.Stepping)
				}
				var marked []int
				for _, st := range got.All() {
					if slices.Contains(st.Events, annotate.EventIRQ) {
						marked = append(marked, st.Index)
					}
				}
				if len(marked) != 1 || marked[0] != at {
					t.Fatalf("steps marked %s: %v, want [%d] (the step after the NMI was injected)", annotate.EventIRQ, marked, at)
				}
				nmi, ok := s.Symbols.Addr("asm_exc_nmi")
				if !ok {
					t.Fatal("no asm_exc_nmi in the teaching kernel's symbols")
				}
				rips := func(tr *trace.Trace) []uint64 {
					var out []uint64
					for _, st := range tr.All() {
						if uint64(st.RIP) != nmi {
							out = append(out, uint64(st.RIP))
						}
					}
					return out
				}
				if record {
					// The CPU takes the NMI before the instruction at step
					// 12 runs: that step is the delivery, 13 the handler's
					// iretq back to it, 14 the instruction itself.
					if got.Len() != want.Len()+2 || uint64(got.Step(at+1).RIP) != nmi || got.Step(at+2).RIP != got.Step(at).RIP || h.IRQs != 0 {
						t.Errorf("recorded: %d steps (want %d), step %d at %s, %d stepped over; want the NMI handler's iretq recorded", got.Len(), want.Len()+2, at+1, got.Step(at+1).Symbol, h.IRQs)
					}
					if !slices.Equal(rips(got)[:at], rips(want)[:at]) || !slices.Equal(rips(got)[at+1:], rips(want)[at:]) {
						t.Errorf("recorded: the RIPs around the NMI differ from an undisturbed trace")
					}
				} else if !slices.Equal(rips(got), rips(want)) {
					t.Errorf("the trace with the NMI left out differs from an undisturbed one: %d steps, want %d", got.Len(), want.Len())
				}
				if !record && (got.Len() != want.Len() || h.IRQs != 1) {
					t.Errorf("stepped over: %d steps, want %d; %d interrupts stepped over, want 1", got.Len(), want.Len(), h.IRQs)
				}
				if ev := countEvents(got); ev.findings != 0 {
					for _, f := range trace.Summarize(got).Findings {
						t.Log(f)
					}
					t.Errorf("%d findings", ev.findings)
				}
				if got.Final.Val(x86.RIP) != want.Final.Val(x86.RIP) || got.Final.CPL() != 3 {
					t.Errorf("ended at %#x CPL %d, want %#x CPL 3", got.Final.Val(x86.RIP), got.Final.CPL(), want.Final.Val(x86.RIP))
				}
			})
		}
	}
}

// TestAccelChoice: tracing takes TCG under auto whatever KVM can do, and
// --accel kvm is refused with the check's reason, before QEMU starts, when
// KVM does not work (a KVM check injected for each kind of host).
func TestAccelChoice(t *testing.T) {
	testenv.NeedQEMU(t)
	works := accel.CheckerFunc(func(context.Context) accel.Verdict {
		return accel.Verdict{OK: true, Reason: "its selftest passed here"}
	})
	broken := accel.CheckerFunc(func(context.Context) accel.Verdict {
		return accel.Verdict{Reason: "kvm present but its selftest failed: unexpected exception #PF"}
	})
	for name, check := range map[string]accel.Checker{"kvm works": works, "kvm broken": broken} {
		s := startFixture(t, Options{Accel: accel.Auto, KVMCheck: check, Mechanism: mechanism.Syscall})
		if s.QEMU.Accel != accel.TCG || !strings.HasPrefix(s.Recorder.Trace().Header.Accel, "tcg (auto") {
			t.Errorf("%s: auto traced under %s (%s), want TCG", name, s.QEMU.Accel, s.Recorder.Trace().Header.Accel)
		}
	}
	_, err := StartFixture(context.Background(), Options{Accel: accel.KVM, KVMCheck: broken})
	if err == nil || !strings.Contains(err.Error(), "KVM does not work on this host") || !strings.Contains(err.Error(), "#PF") {
		t.Errorf("--accel kvm on a broken KVM: %v, want the reason", err)
	}
}

// TestReadUnder reads kernel memory that the user page tables do not map.
// The teaching kernel's user PGD (kernel PGD | 0x1000, see
// fixtures/kernel/README.md) maps only the entry text and the CPU entry
// area, so at the user syscall instruction kernel_stack is not mapped; read
// under the kernel PGD through physical memory it must give the same bytes
// as a plain read once the entry code has switched CR3 to the kernel PGD.
// Kernel text (do_syscall_64, not in the entry text) is checked the same
// way: those bytes are known, and not zero.
func TestReadUnder(t *testing.T) {
	s := startFixture(t, Options{Mechanism: mechanism.Syscall})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.ToEntry(ctx, mechanism.Syscall); err != nil {
		t.Fatal(err)
	}
	stack, ok := s.Symbols.Addr("kernel_stack")
	if !ok {
		t.Fatal("no kernel_stack symbol")
	}
	addr := stack + 0x3f00
	cr3 := s.Recorder.Current().Val(x86.CR3)
	if cr3&0x1000 == 0 {
		t.Fatalf("CR3 %#x at the user syscall is not the user PGD", cr3)
	}
	if _, err := s.Target.ReadMemory(ctx, addr, 64); err == nil || !strings.Contains(err.Error(), "not mapped") {
		t.Fatalf("kernel_stack read under the user PGD: %v, want not mapped", err)
	}
	under, err := s.Target.ReadUnder(ctx, cr3&^0x1fff, addr, 64)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Target.ReadMemory(ctx, addr, 64); err == nil {
		t.Fatal("the stub was left in physical mode: a virtual read of an unmapped address worked")
	}
	for s.Recorder.Current().Val(x86.CR3)&0x1000 != 0 {
		if _, err := s.Recorder.Step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	plain, err := s.Target.ReadMemory(ctx, addr, 64)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(under, plain) {
		t.Errorf("ReadUnder gave % x\nunder the kernel CR3: % x", under, plain)
	}
	text, ok := s.Symbols.Addr("do_syscall_64")
	if !ok {
		t.Fatal("no do_syscall_64 symbol")
	}
	code, err := s.Target.ReadUnder(ctx, cr3&^0x1fff, text, 16)
	if err != nil {
		t.Fatal(err)
	}
	if plain, err := s.Target.ReadMemory(ctx, text, 16); err != nil || !bytes.Equal(code, plain) || bytes.Count(code, []byte{0}) == len(code) {
		t.Errorf("do_syscall_64 under the kernel PGD: % x; plain read at CPL 0: % x (%v)", code, plain, err)
	}
	if _, err := s.Target.ReadUnder(ctx, cr3&^0x1fff, 0x7fff_0000_0000, 8); err == nil || !strings.Contains(err.Error(), "not mapped under CR3") {
		t.Errorf("ReadUnder of an unmapped address: %v, want not mapped", err)
	}
}

// TestAttachRecognisesBundledKernel attaches with no symbol file to a QEMU
// running the bundled teaching kernel (as `sctrace run --keep` leaves one):
// its entry code is found in guest memory where the embedded ELF puts it,
// so the ELF's symbols name the trace.
func TestAttachRecognisesBundledKernel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := attachRunning(ctx, t, Options{})
	if s.Kernel != KernelDescription || !strings.Contains(s.Symbols.Source, "recognised in guest memory") {
		t.Fatalf("kernel %q, symbols %v: want the bundled teaching kernel recognised", s.Kernel, s.Symbols)
	}
	tr, err := s.RoundTrip(ctx, mechanism.Syscall)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := s.Symbols.Addr(mechanism.Syscall.UserLabel())
	if tr.Step(0).Symbol != mechanism.Syscall.UserLabel() || uint64(tr.Step(0).RIP) != want || len(tr.Header.Regions) == 0 {
		t.Errorf("step 0 at %s (%#x), %d regions; want %s at %#x and the kernel's stacks", tr.Step(0).Symbol, uint64(tr.Step(0).RIP), len(tr.Header.Regions), mechanism.Syscall.UserLabel(), want)
	}
}

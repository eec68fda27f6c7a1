package session

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/fixtures/kernel"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// TestEventRoundTrips records the teaching kernel's two entries that are no
// system call, a demand page fault and the timer interrupt, under QEMU. Each
// starts at a user instruction (the store at user_pagefault_insn; for the
// interrupt, the instruction of the wait loop it arrived at), enters the
// handler its IDT gate names at CPL 0 on the entry stack (TSS.RSP0, IST 0:
// the top of entry_stack minus the frame the CPU pushed, with an error code
// for #PF and none for an interrupt), runs on the kernel stack, and returns
// with the handler's iretq to the same user instruction, which then runs.
// gdb's stepi loop then counts the same path on the same guest, three
// times: for the page fault from a hardware breakpoint at the store, as
// sctrace counts it; for the interrupt from a hardware breakpoint at the
// handler's first instruction, since an interrupt cannot be stepped into
// (QEMU's gdbstub masks interrupts while it single-steps, which is also
// what keeps other interrupts out of both counts). sctrace's first step is
// the interrupt's arrival at the user instruction (caught by the same kind
// of breakpoint, with the state before it taken from the frame), which no
// stepi runs: its trace has one step more than gdb counts. The handler
// does the same work whichever user instruction it interrupts (it counts
// the interrupt and sends the EOI), so every count must agree.
func TestEventRoundTrips(t *testing.T) {
	testenv.NeedTools(t, "gdb") // it counts the path sctrace records
	tests := []struct {
		mech  mechanism.Mechanism
		entry string // the handler, an ELF symbol
		exit  string // its iretq, an ELF symbol
		frame uint64 // bytes the CPU pushed
		text  []string
	}{
		{mechanism.PageFault, "asm_exc_page_fault", "pf_iretq_insn", 48, []string{
			"#PF page fault delivered",
			"error code 0x6: not present, write, user",
			"cr2 = 0x700238: the linear address",
		}},
		{mechanism.IRQ, "asm_irq_timer", "irq_iretq_insn", 40, []string{
			"vector 0x20 delivered",
			"external interrupt",
			"EOI",
		}},
	}
	for _, tt := range tests {
		t.Run(string(tt.mech), func(t *testing.T) {
			s := startFixture(t, Options{Mechanism: tt.mech, Keep: true})
			kept(t, s)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
			defer cancel()
			tr, err := s.RoundTrip(ctx, tt.mech)
			if err != nil {
				t.Fatal(err)
			}
			checkEventRoundTrip(t, s, tr, tt.mech, tt.entry, tt.exit, tt.frame, tt.text)

			// gdb's breakpoint, by ELF symbol: the store for the page
			// fault, the handler for the interrupt (whose arrival
			// sctrace counts as step 0 and gdb does not).
			at, arrival := tt.mech.UserLabel(), 0
			if tt.mech == mechanism.IRQ {
				at, arrival = tt.entry, 1
			}
			site, ok := s.Symbols.Addr(at)
			if !ok {
				t.Fatalf("the teaching kernel has no symbol %s", at)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			counts, ends := gdbStepiCount(ctx, t, s.QEMU.GDBAddr, site, 3)
			t.Logf("%s: sctrace %d, gdb stepi %v (from %#x)", tt.mech, tr.Len(), counts, site)
			for i, n := range counts {
				// The page fault returns to the store, to run again;
				// the interrupt to whichever user instruction it
				// interrupted, normally in the wait loop.
				back := ends[i] == site
				if tt.mech == mechanism.IRQ {
					back = ends[i] >= kernel.UserText && ends[i] < kernel.VDSOData
				}
				if n+arrival != tr.Len() || !back {
					t.Errorf("gdb's stepi loop %d counted %d to %#x; sctrace recorded %d (%d of them stepped) to %#x",
						i, n, ends[i], tr.Len(), tr.Len()-arrival, tr.Final.Val(x86.RIP))
				}
			}
		})
	}
}

func checkEventRoundTrip(t *testing.T, s *Session, tr *trace.Trace, mech mechanism.Mechanism, entry, exit string, frame uint64, text []string) {
	t.Helper()
	addr := func(name string) uint64 {
		t.Helper()
		a, ok := s.Symbols.Addr(name)
		if !ok {
			t.Fatalf("the teaching kernel has no symbol %s", name)
		}
		return a
	}
	if tr.Len() < 10 {
		t.Fatalf("only %d steps", tr.Len())
	}
	st0, st1, end := tr.Step(0), tr.Step(1), tr.Step(tr.Len()-1)
	from := uint64(st0.RIP)
	switch mech {
	case mechanism.PageFault:
		if from != addr(mech.UserLabel()) {
			t.Errorf("step 0 at %s %#x, want %s %#x", st0.Symbol, from, mech.UserLabel(), addr(mech.UserLabel()))
		}
	case mechanism.IRQ:
		// Normally the wait loop; after a host stall that made the timer
		// expire earlier, any instruction of the user program.
		if from != addr(mech.UserLabel()) && from != addr(mech.UserReturnLabel()) {
			t.Logf("step 0 at %s %#x, not in the wait loop (%s %#x, %s %#x)", st0.Symbol, from,
				mech.UserLabel(), addr(mech.UserLabel()), mech.UserReturnLabel(), addr(mech.UserReturnLabel()))
			if from < kernel.UserText || from >= kernel.VDSOData {
				t.Errorf("step 0 at %#x, not in the user program's text", from)
			}
		}
	}
	if st0.CPL != 3 || st1.CPL != 0 || uint64(st1.RIP) != addr(entry) {
		t.Errorf("step 0 at CPL %d, step 1 at %s %#x CPL %d; want CPL 3, then %s %#x at CPL 0",
			st0.CPL, st1.Symbol, uint64(st1.RIP), st1.CPL, entry, addr(entry))
	}
	// The stack switch: IST 0 from ring 3 takes TSS.RSP0, the top of
	// entry_stack (4 KiB), and the CPU pushes its frame there.
	if got, want := st1.Regs.Val(x86.RSP), addr("entry_stack")+4096-frame; got != want {
		t.Errorf("rsp at %s = %#x, want %#x (top of entry_stack minus the %d-byte frame)", entry, got, want, frame)
	}
	if mech == mechanism.PageFault {
		if cr2, ok := st1.Regs.Get(x86.CR2); ok && cr2 != kernel.PageFaultAddr {
			t.Errorf("cr2 at %s = %#x, want %#x", entry, cr2, kernel.PageFaultAddr)
		}
	}
	if uint64(end.RIP) != addr(exit) || end.CPL != 0 {
		t.Errorf("last step at %s %#x CPL %d, want %s %#x at CPL 0", end.Symbol, uint64(end.RIP), end.CPL, exit, addr(exit))
	}
	if tr.Final.CPL() != 3 || tr.Final.Val(x86.RIP) != from {
		t.Errorf("ended at %#x CPL %d, want %#x CPL 3: the same user instruction, to run again", tr.Final.Val(x86.RIP), tr.Final.CPL(), from)
	}
	if got, want := tr.Final.Val(x86.RSP), st0.Regs.Val(x86.RSP); got != want {
		t.Errorf("user rsp after = %#x, want %#x as before", got, want)
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
	if tr.Header.Stop != string(trace.StopUser) || tr.Header.Mechanism != string(mech) {
		t.Errorf("stop reason %q, mechanism %q", tr.Header.Stop, tr.Header.Mechanism)
	}
	var all strings.Builder
	for i := range tr.Len() {
		for _, e := range tr.Step(i).Effects {
			all.WriteString(e.Text + "\n")
		}
	}
	for _, want := range text {
		if !strings.Contains(all.String(), want) {
			t.Errorf("no annotation says %q", want)
		}
	}
	if t.Failed() {
		var b strings.Builder
		tr.Write(&b)
		t.Logf("trace:\n%s", b.String())
	}
}

// TestLinuxIRQ boots Debian's Linux 6.1 and 6.12 with pti=on and records a
// timer interrupt arriving while /init runs in user mode: the first step
// is the interrupted user instruction, the second the local APIC timer's
// handler the IDT names (asm_sysvec_apic_timer_interrupt, found in
// kallsyms) on the entry stack TSS.RSP0 gives, minus the five-word frame;
// the handler moves to the task stack, and the trace ends with iretq back
// at the interrupted instruction, the user stack pointer as it was, and no
// finding.
//
// Unlike a system call, and unlike the teaching kernel's interrupt, the
// path is not counted again with gdb's stepi, because no count gdb can
// make is the count of the same path. gdb cannot count the interrupt
// sctrace recorded (it is spent), only later ones, and these differ: the
// guest's clock follows the host's while the guest runs (no -icount), and
// every single step runs it for a moment, so the guest time a path takes
// depends on how fast it is stepped and how busy the host is, not on its
// instructions, and the handler finds ticks, timers and a softirq due.
// Measured on these machines, each interrupt ran tick_sched_timer three
// times, the timer softirq once, and switched tasks 5 to 12 times
// (__switch_to_asm) before /init ran again; lengths went 51425, 94652,
// 69630 and 53601 instructions on four interrupts in a row (6.1). As the
// stepping rate differs between sctrace and gdb, not even a check that
// sctrace's count is among gdb's holds: six interrupts recorded by sctrace
// on 6.1 took 30349, 56331, 47282, 67173 and 52294 instructions (and one
// over the 100000-step budget), while gdb, from a hardware breakpoint on
// asm_sysvec_apic_timer_interrupt and counting only interrupts whose
// frame says CPL 3, counted 32606 to 49227 on the next eight (plus
// sctrace's arrival step: none equal); on 6.12 sctrace took 94008, 24042
// and 49685 (three over budget), gdb 13287 to 46158 (two over 100000).
// Counting the same interrupt twice would need a replay of the guest
// (QEMU's record/replay with -icount), which sessions do not run.
//
// Soon after boot an interrupt may also preempt /init
// on its way out (6.12 has been seen to switch to a kernel thread busy
// checking signatures for far longer than a step budget): such a
// recording runs out of steps, and the test takes the next interrupt, up
// to three times.
func TestLinuxIRQ(t *testing.T) {
	for _, series := range []string{"6.1", "6.12"} {
		t.Run(series, func(t *testing.T) {
			kernel := testenv.LinuxKernel(t, series)
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Second)
			defer cancel()
			s, err := StartLinux(ctx, LinuxOptions{Options: Options{Accel: "tcg", Mechanism: mechanism.IRQ}, Kernel: kernel})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var tr *trace.Trace
			for try := 1; ; try++ {
				tr, err = s.RoundTrip(ctx, mechanism.IRQ)
				if err != nil {
					t.Fatal(err)
				}
				if tr.Header.Stop != string(trace.StopBudget) || try == 3 {
					break
				}
				t.Logf("interrupt %d: no return to user mode within %d steps (last at %s); taking the next", try, tr.Len(), tr.Step(tr.Len()-1).Symbol)
			}
			t.Logf("%s: %d instructions from the interrupt to iretq", s.Kernel, tr.Len())
			handler, ok := s.Symbols.Addr("asm_sysvec_apic_timer_interrupt")
			if !ok {
				t.Fatal("no asm_sysvec_apic_timer_interrupt in kallsyms")
			}
			if tr.Header.Stop != string(trace.StopUser) || tr.Len() < 10 {
				t.Fatalf("stopped: %s after %d steps", tr.Header.Stop, tr.Len())
			}
			st0, st1 := tr.Step(0), tr.Step(1)
			if st0.CPL != 3 || st1.CPL != 0 || uint64(st1.RIP) != handler {
				t.Errorf("step 0 at CPL %d, step 1 %s %#x at CPL %d; want CPL 3, then asm_sysvec_apic_timer_interrupt %#x at CPL 0",
					st0.CPL, st1.Symbol, uint64(st1.RIP), st1.CPL, handler)
			}
			ctx2 := &annotate.Context{Regions: tr.Header.Regions}
			if r, ok := ctx2.RegionOf(st1.Regs.Val(x86.RSP)); !ok || r.Kind != annotate.RegionEntryStack {
				t.Errorf("rsp at the handler %#x is not on the entry stack (%+v)", st1.Regs.Val(x86.RSP), r)
			} else if got, want := st1.Regs.Val(x86.RSP), r.End-40; got != want {
				t.Errorf("rsp at the handler %#x, want %#x: the entry stack's top minus the 40-byte frame", got, want)
			}
			checkIretqPath(t, tr)
			if tr.Final.CPL() != 3 || tr.Final.Val(x86.RIP) != uint64(st0.RIP) || tr.Final.Val(x86.RSP) != st0.Regs.Val(x86.RSP) {
				t.Errorf("ended at %#x (rsp %#x) CPL %d, want %#x (rsp %#x) CPL 3: the interrupted instruction",
					tr.Final.Val(x86.RIP), tr.Final.Val(x86.RSP), tr.Final.CPL(), uint64(st0.RIP), st0.Regs.Val(x86.RSP))
			}
		})
	}
}

// TestExceptionRoundTrips records the teaching kernel's int3 and a hlt at
// CPL 3 under QEMU. int3 raises #BP (vector 3) through a gate of DPL 3, a
// trap: the five-word frame (40 bytes, no error code) holds the
// instruction after it. hlt raises #GP(0) (vector 13), a fault: the frame
// holds the hlt itself and an error code of 0, 48 bytes. Each enters its
// handler (ELF symbols) at CPL 0 on the entry stack, runs on the kernel
// stack and returns with its iretq at CPL 3 to the instruction after the
// one that raised it (user_int3_ret, user_gpfault_ret: the #GP handler
// moves the saved RIP past the one-byte hlt), with the user stack pointer
// as it was and no finding. gdb's stepi loop then counts the same path on
// the same guest.
func TestExceptionRoundTrips(t *testing.T) {
	testenv.NeedTools(t, "gdb") // it counts the path sctrace records
	tests := []struct {
		mech        mechanism.Mechanism
		entry, exit string // the handler and its iretq, ELF symbols
		vector      int
		frame       uint64 // bytes the CPU pushed
		text        []string
	}{
		{mechanism.Int3, "asm_exc_int3", "bp_iretq_insn", 3, 40, []string{
			"int3: #BP breakpoint delivered",
			"IDT[3] has DPL 3 ≥ CPL",
			"#BP is a trap: the CPU saves the address of the instruction after the int3",
		}},
		{mechanism.GPFault, "asm_exc_general_protection", "gp_iretq_insn", 13, 48, []string{
			"#GP general protection was delivered",
			"error code 0: the fault did not come from loading a segment or gate descriptor",
			"hlt is a privileged instruction: at CPL 3",
			"advanced by 1, past the instruction that raised the fault",
		}},
	}
	for _, tt := range tests {
		t.Run(string(tt.mech), func(t *testing.T) {
			s := startFixture(t, Options{Mechanism: tt.mech, Keep: true})
			kept(t, s)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
			defer cancel()
			tr, err := s.RoundTrip(ctx, tt.mech)
			if err != nil {
				t.Fatal(err)
			}
			addr := func(name string) uint64 {
				t.Helper()
				a, ok := s.Symbols.Addr(name)
				if !ok {
					t.Fatalf("the teaching kernel has no symbol %s", name)
				}
				return a
			}
			site, ret := addr(tt.mech.UserLabel()), addr(tt.mech.UserReturnLabel())
			st0, st1, end := tr.Step(0), tr.Step(1), tr.Step(tr.Len()-1)
			if uint64(st0.RIP) != site || st0.CPL != 3 || uint64(st1.RIP) != addr(tt.entry) || st1.CPL != 0 {
				t.Errorf("step 0 %s %#x CPL %d, step 1 %s %#x CPL %d; want %s %#x CPL 3, then %s %#x CPL 0",
					st0.Symbol, uint64(st0.RIP), st0.CPL, st1.Symbol, uint64(st1.RIP), st1.CPL,
					tt.mech.UserLabel(), site, tt.entry, addr(tt.entry))
			}
			rsp := st1.Regs.Val(x86.RSP)
			if want := addr("entry_stack") + 4096 - tt.frame; rsp != want {
				t.Errorf("rsp at %s = %#x, want %#x (top of entry_stack minus the %d-byte frame)", tt.entry, rsp, want, tt.frame)
			}
			// The frame's RIP, as the annotator read it from the stack
			// (above #GP's error code): the next instruction for the
			// trap, the faulting one for the fault.
			savedRIP, at := uint64(st0.RIP), rsp+8
			if tt.vector == 3 {
				savedRIP, at = ret, rsp
			}
			tt.text = append(tt.text, fmt.Sprintf("CPU pushed at %#x: rip %#x", at, savedRIP))
			if uint64(end.RIP) != addr(tt.exit) || end.CPL != 0 || end.Op != x86asm.IRETQ {
				t.Errorf("last step %s %#x CPL %d, want iretq at %s %#x CPL 0", end.Symbol, uint64(end.RIP), end.CPL, tt.exit, addr(tt.exit))
			}
			if tr.Final.CPL() != 3 || tr.Final.Val(x86.RIP) != ret || tr.Final.Val(x86.RSP) != st0.Regs.Val(x86.RSP) {
				t.Errorf("ended at %#x (rsp %#x) CPL %d, want %s %#x (rsp %#x) CPL 3",
					tr.Final.Val(x86.RIP), tr.Final.Val(x86.RSP), tr.Final.CPL(), tt.mech.UserReturnLabel(), ret, st0.Regs.Val(x86.RSP))
			}
			ev := countEvents(tr)
			if ev.swapgs != 2 || ev.cr3 != 2 || !ev.kernelStack || ev.findings != 0 {
				for _, f := range trace.Summarize(tr).Findings {
					t.Log(f)
				}
				t.Errorf("events: %+v; want 2 swapgs, 2 CR3 writes, the kernel stack and no finding", ev)
			}
			var all strings.Builder
			for _, st := range tr.All() {
				for _, e := range st.Effects {
					all.WriteString(e.Text + "\n")
				}
			}
			for _, want := range tt.text {
				if !strings.Contains(all.String(), want) {
					t.Errorf("no annotation says %q", want)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			counts, ends := gdbStepiCount(ctx, t, s.QEMU.GDBAddr, site, 3)
			t.Logf("%s: sctrace %d, gdb stepi %v", tt.mech, tr.Len(), counts)
			for i, n := range counts {
				if n != tr.Len() || ends[i] != ret {
					t.Errorf("gdb's stepi loop %d counted %d to %#x; sctrace recorded %d to %#x", i, n, ends[i], tr.Len(), ret)
				}
			}
		})
	}
}

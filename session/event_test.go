package session

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/fixtures/kernel"
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
func TestEventRoundTrips(t *testing.T) {
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
			s := startFixture(t, Options{Mechanism: tt.mech})
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			tr, err := s.RoundTrip(ctx, tt.mech)
			if err != nil {
				t.Fatal(err)
			}
			checkEventRoundTrip(t, s, tr, tt.mech, tt.entry, tt.exit, tt.frame, tt.text)
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
		if from != addr(mech.UserLabel()) && from != addr(mech.UserReturnLabel()) {
			t.Errorf("step 0 at %s %#x, want the wait loop: %s %#x or %s %#x", st0.Symbol, from,
				mech.UserLabel(), addr(mech.UserLabel()), mech.UserReturnLabel(), addr(mech.UserReturnLabel()))
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

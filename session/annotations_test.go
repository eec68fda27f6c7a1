package session

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// stepText joins a step's effects, one per line.
func stepText(s *trace.Step) string {
	var b strings.Builder
	for _, e := range s.Effects {
		b.WriteString(e.Text + "\n")
	}
	return b.String()
}

// onEntryStackLeaving reports whether a step runs on an entry stack (the
// teaching kernel's entry_stack, Linux's cpu_entry_area stack at TSS.sp0)
// that the kernel moved to from a kernel-half stack at CPL 0: the exit
// path's trampoline.
func onEntryStackLeaving(tr *trace.Trace, i int) bool {
	ctx := &annotate.Context{Regions: tr.Header.Regions}
	r, ok := ctx.StackOf(tr.Step(i).Regs.Val(x86.RSP))
	if !ok || r.Kind != annotate.RegionEntryStack || tr.Step(i).CPL != 0 {
		return false
	}
	for j := i - 1; j >= 0; j-- {
		prev := tr.Step(j).Regs.Val(x86.RSP)
		if p, ok := ctx.StackOf(prev); ok && p == r {
			continue
		}
		// Step j moved RSP onto the entry stack: by the CPU entering
		// from user mode, or by the kernel leaving from its own stack.
		return tr.Step(j).CPL == 0 && prev>>63 == 1
	}
	return false
}

// TestRecordedAnnotations records the teaching kernel's paths under TCG and
// checks what the annotations say against the architecture and the
// kernel's source (fixtures/kernel/src: entry.S, defs.h).
func TestRecordedAnnotations(t *testing.T) {
	// record records n round trips by m; the last may end in an error (a
	// kernel that crashes) when it recorded steps.
	record := func(t *testing.T, m mechanism.Mechanism, o Options, n int) (*Session, []*trace.Trace) {
		o.Mechanism = m
		s := startFixture(t, o)
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		var out []*trace.Trace
		for range n {
			tr, err := s.RoundTrip(ctx, m)
			if err != nil && (tr == nil || len(out) < n-1 || o.Append == "") {
				t.Fatal(err)
			}
			out = append(out, tr)
		}
		return s, out
	}
	// noPtRegsOnTrampoline: the exit path copies the user RSP (and, for
	// iretq, the IRET frame) and RDI to the entry stack to switch CR3
	// with the task stack unmapped; those words are no pt_regs frame.
	noPtRegsOnTrampoline := func(t *testing.T, tr *trace.Trace) {
		t.Helper()
		n := 0
		for i, s := range tr.All() {
			if !onEntryStackLeaving(tr, i) {
				continue
			}
			n++
			if txt := stepText(s); strings.Contains(txt, "(pt_regs->") {
				t.Errorf("step %d %s on the exit trampoline names a pt_regs field:\n%s", s.Index, s.ATT, txt)
			}
		}
		if n == 0 {
			t.Errorf("no step ran on the exit trampoline")
		}
	}

	t.Run("syscall", func(t *testing.T) {
		_, trs := record(t, mechanism.Syscall, Options{}, 2)
		tr := trs[0]
		// FMASK is 0x47700 (defs.h SYSCALL_MASK_VALUE): ZF and PF are not
		// in it; under TCG QEMU clears them itself.
		st0 := stepText(tr.Step(0))
		if !strings.Contains(st0, "ZF PF cleared by QEMU's TCG, not by FMASK") || strings.Contains(st0, "FMASK cleared IF ZF") {
			t.Errorf("syscall's flags:\n%s", st0)
		}
		for _, m := range tr.Header.MSRs {
			if m.Name == "IA32_FMASK" && (m.Value&^0x47700 != 0 || m.Value&m.Known != 0x47700&m.Known) {
				t.Errorf("FMASK inferred %s, contradicting 0x47700", m.ValueString())
			}
		}
		noPtRegsOnTrampoline(t, tr)
		var sysret string
		for _, st := range tr.All() {
			if strings.HasPrefix(st.ATT, "sysretq") {
				sysret = stepText(st)
			}
		}
		// entry.S checks RCX == RIP, canonical RCX and R11 == RFLAGS
		// before syscall_return_via_sysret.
		for _, want := range []string{"the kernel chose SYSRET after checking, as Linux's do_syscall_64 does, that RCX == RIP", "RIP canonical", "R11 == RFLAGS", "STAR[63:48] = 0x20"} {
			if !strings.Contains(sysret, want) {
				t.Errorf("sysretq step lacks %q:\n%s", want, sysret)
			}
		}
		// STAR[63:48] is 0x23 (kernel.go User32CS): SS 0x2b shows 0x20 in
		// bits 63:50; the second sysret quotes the first sysret for it.
		var second string
		for _, st := range trs[1].All() {
			if strings.HasPrefix(st.ATT, "sysretq") {
				second = stepText(st)
			}
		}
		if !strings.Contains(second, "STAR[63:48] = 0x20 (bits 49:48 unknown), as known (inferred at step") || !strings.Contains(second, "SS after sysret)") || strings.Contains(second, "STAR[63:50]") {
			t.Errorf("second sysretq:\n%s", second)
		}
	})
	t.Run("int80", func(t *testing.T) {
		_, trs := record(t, mechanism.Int80, Options{}, 1)
		tr := trs[0]
		st0 := tr.Step(0)
		if !slices.Contains(st0.Events, annotate.EventInterrupt) || slices.Contains(st0.Events, annotate.EventException) {
			t.Errorf("int $0x80 events %v: a software interrupt, not an exception", st0.Events)
		}
		if txt := stepText(st0); strings.Contains(txt, "was not read") || !strings.Contains(txt, "CPU pushed at") {
			t.Errorf("int $0x80's frame not checked:\n%s", txt)
		}
		noPtRegsOnTrampoline(t, tr)
	})
	t.Run("ud2", func(t *testing.T) {
		_, trs := record(t, mechanism.UD2, Options{}, 1)
		tr := trs[0]
		st0 := stepText(tr.Step(0))
		if strings.Contains(st0, "was not read") || !strings.Contains(st0, "#UD is a fault") {
			t.Errorf("ud2:\n%s", st0)
		}
		// exc_invalid_op (kernel.c) stores pt_regs->ip + 2.
		all := ""
		for _, s := range tr.All() {
			all += stepText(s)
		}
		if !strings.Contains(all, "advanced by 2, past the instruction that raised the fault at step 0") {
			t.Errorf("no step says the handler advanced pt_regs->ip by 2")
		}
	})
	t.Run("sysenter", func(t *testing.T) {
		_, trs := record(t, mechanism.Sysenter, Options{}, 1)
		last := trs[0].Step(trs[0].Len() - 1)
		txt := stepText(last)
		if !slices.Contains(last.Events, annotate.EventStackSwitch) || strings.Count(txt, "CPL 0 → 3") != 1 {
			t.Errorf("sysexit events %v, effects:\n%s", last.Events, txt)
		}
	})
	t.Run("int80-noswapgs", func(t *testing.T) {
		// Lesson 5: without the exit swapgs the second entry runs on the
		// user GS base, and mov %gs:0x1000,%rsp page-faults at CPL 0.
		_, trs := record(t, mechanism.Int80, Options{Append: "bug=int80-noswapgs"}, 2)
		found := false
		for _, s := range trs[1].All() {
			if !slices.Contains(s.Events, annotate.EventException) || s.CPL != 0 {
				continue
			}
			found = true
			txt := stepText(s)
			if strings.Contains(txt, "(pt_regs->") || !strings.Contains(txt, "(nested #PF frame: ip)") || !strings.Contains(txt, "faulted: nothing was loaded") {
				t.Errorf("kernel-mode #PF at step %d:\n%s", s.Index, txt)
			}
			break
		}
		if !found {
			t.Errorf("no kernel-mode exception in the second int $0x80 round trip")
		}
	})
}

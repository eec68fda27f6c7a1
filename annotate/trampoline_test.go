package annotate

import (
	"strings"
	"testing"

	"github.com/sctrace/sctrace/x86"
)

// entryTop is the top of a per-CPU entry stack (Linux's cpu_entry_area
// entry stack, TSS.sp0): the CPU builds an interrupt frame there on entry
// from user mode, and the exit path switches to it as a trampoline.
const entryTop = 0xfffffe0000002000

// exitRegions are a task stack with a pt_regs frame at its top and an entry
// stack whose top is also where an entry frame would be built.
var exitRegions = []Region{
	{Name: "task", Kind: RegionKernelStack, Start: kstackTop - 0x4000, End: kstackTop, FrameTop: kstackTop},
	{Name: "entry", Kind: RegionEntryStack, Start: entryTop - 0x1000, End: entryTop, FrameTop: entryTop},
	{Name: "main", Kind: RegionUserStack, Start: userRSP - 0x10000, End: userRSP + 0x1000},
}

// TestExitTrampoline follows Linux's syscall_return_via_sysret (entry_64.S):
// after POP_REGS pop_rdi=0, RSP points at pt_regs->di; the code saves it in
// RDI, loads TSS.sp0 (the entry stack) into RSP, pushes RSP-RDI(%rdi)
// (pt_regs->sp, offset 0x28) and (%rdi) (pt_regs->di), switches CR3, and
// pops RDI and RSP. The two words on the entry stack are copies made for the
// trampoline, not the pt_regs->ss and pt_regs->sp their positions below the
// stack top would suggest.
func TestExitTrampoline(t *testing.T) {
	c := &Context{Regions: exitRegions}
	di := uint64(kstackTop - 8*7) // pt_regs->di: the 7th slot from the top
	k := with(kernel, regs{x86.RSP: di, x86.RDI: di, x86.GSBase: percpu})
	steps := []struct {
		code          []byte
		before, after regs
		want          string
	}{
		{insLoadRSP, k, with(k, regs{x86.RSP: entryTop}), "the exit trampoline"},
		{[]byte{0xff, 0x77, 0x28}, with(k, regs{x86.RSP: entryTop}), with(k, regs{x86.RSP: entryTop - 8}),
			"at 0xfffffe0000001ff8 (the trampoline's copy of pt_regs->sp)"}, // pushq 0x28(%rdi)
		{[]byte{0xff, 0x37}, with(k, regs{x86.RSP: entryTop - 8}), with(k, regs{x86.RSP: entryTop - 16}),
			"at 0xfffffe0000001ff0 (the trampoline's copy of pt_regs->di)"}, // pushq (%rdi)
		{insPushRAX, with(k, regs{x86.RSP: entryTop - 16}), with(k, regs{x86.RSP: entryTop - 24}),
			"(rax saved on the exit trampoline)"}, // SWITCH_TO_USER_CR3_STACK's push %rax (6.12)
		{[]byte{0x58}, with(k, regs{x86.RSP: entryTop - 24}), with(k, regs{x86.RSP: entryTop - 16}),
			"loads the slot at 0xfffffe0000001fe8 (rax saved on the exit trampoline)"}, // pop %rax
		{[]byte{0x5f}, with(k, regs{x86.RSP: entryTop - 16}), with(k, regs{x86.RSP: entryTop - 8, x86.RDI: 0}),
			"loads the slot at 0xfffffe0000001ff0 (the trampoline's copy of pt_regs->di)"}, // pop %rdi
		{[]byte{0x5c}, with(k, regs{x86.RSP: entryTop - 8}), with(k, regs{x86.RSP: userRSP}),
			"loads the slot at 0xfffffe0000001ff8 (the trampoline's copy of pt_regs->sp)"}, // pop %rsp
	}
	for i, s := range steps {
		addr := lstar + 0x200 + uint64(16*i)
		effects := Annotate(mkStep(t, 80+i, s.code, addr, with(s.before, regs{x86.RIP: addr}), with(s.after, regs{x86.RIP: addr + uint64(len(s.code))})), c)
		expectEffects(t, effects, check{KindStack, s.want, NoVerdict})
		for _, e := range effects {
			if strings.Contains(e.Text, "(pt_regs->") {
				t.Errorf("step %d: a trampoline slot labelled as a pt_regs field: %q", 80+i, e.Text)
			}
		}
	}
	if c.Knowledge.tramp != nil {
		t.Errorf("still on the trampoline after RSP left it")
	}
	// Back on the task stack the frame's slots are pt_regs again.
	effects := Annotate(mkStep(t, 90, insPopRBX, lstar, with(k, regs{x86.RIP: lstar, x86.RSP: kstackTop - 8*16}), with(k, regs{x86.RIP: lstar + 1, x86.RSP: kstackTop - 8*15})), c)
	expectEffects(t, effects, note(KindStack, "(pt_regs->bx)"))
}

// TestEntryFrameOnEntryStack: an interrupt from user mode builds the start of
// a pt_regs frame at the top of the entry stack (the CPU's five words, then
// the entry code's orig_ax): that frame is a pt_regs frame and keeps its
// labels.
func TestEntryFrameOnEntryStack(t *testing.T) {
	c := &Context{Regions: exitRegions}
	k := with(kernel, regs{x86.RIP: lstar, x86.RSP: entryTop - 40})
	effects := Annotate(mkStep(t, 2, insPushRAX, lstar, k, with(k, regs{x86.RIP: lstar + 1, x86.RSP: entryTop - 48})), c)
	expectEffects(t, effects, note(KindStack, "(pt_regs->orig_ax)"))
}

package annotate

import (
	"fmt"

	"github.com/sctrace/sctrace/x86"
	"golang.org/x/arch/x86/x86asm"
)

// pushValue returns the value a push stored and how it is known.
func (a *annotator) pushValue(after uint64) (string, bool) {
	inst := a.s.Inst
	if inst.Op == x86asm.PUSHFQ || inst.Op == x86asm.PUSHF {
		if v, ok := a.b.Get(x86.RFLAGS); ok {
			return fmt.Sprintf("rflags %#x", v), true
		}
		return "", false
	}
	switch src := inst.Args[0].(type) {
	case x86asm.Reg:
		if v, ok := regVal(a.b, src); ok {
			return fmt.Sprintf("%s %#x", lowerReg(src), v), true
		}
	case x86asm.Imm:
		return fmt.Sprintf("the constant %#x", uint64(src)), true
	case x86asm.Mem:
		if w, ok := a.words(after, 1, 8, true); ok {
			return fmt.Sprintf("%#x (read from the stack after the step)", w[0]), true
		}
		if a.c.Unread != "" {
			return "a value from memory (" + a.c.Unread + ")", true
		}
		return "a value from memory (not read)", true
	}
	return "", false
}

// trampolineCopy records what a push onto the exit trampoline stores: a
// copy of a pt_regs field when it pushes one from the frame, else the
// register it saves.
func (a *annotator) trampolineCopy(at uint64) {
	if !a.onTrampoline(at) {
		return
	}
	what := "a word the exit path saved"
	switch src := a.s.Inst.Args[0].(type) {
	case x86asm.Mem:
		if lin, ok := linear(a.s.Inst, src, a.b, a.next, a.hasNext); ok {
			if f, ok := a.ptRegsField(lin); ok {
				what = "the trampoline's copy of pt_regs->" + f
			}
		}
	case x86asm.Reg:
		what = lowerReg(src) + " saved on the exit trampoline"
	}
	if a.s.Inst.Op == x86asm.PUSHFQ {
		what = "rflags saved on the exit trampoline"
	}
	a.k.tramp.slots[at] = what
}

// stack explains an RSP change made by an ordinary instruction.
func (a *annotator) stack() {
	before, ok1 := a.b.Get(x86.RSP)
	after, ok2 := a.a.Get(x86.RSP)
	if !ok1 || !ok2 || before == after {
		return
	}
	a.explained(x86.RSP)
	inst := a.s.Inst
	if a.scratchRSP(before, after) {
		return
	}
	if a.k.scratchRSP {
		// The first real stack pointer after RSP served as scratch.
		a.k.scratchRSP = false
		defer a.stackSwitch(a.k.stackRSP, after)
		a.note(KindStack, "rsp is a stack pointer again: %#x (it held %#x, scratch)", after, a.b.Val(x86.RSP))
		return
	}
	d := int64(after - before)
	v, text := NoVerdict, ""
	switch inst.Op {
	case x86asm.PUSH, x86asm.PUSHFQ, x86asm.PUSHF:
		want := int64(-8)
		if inst.DataSize == 16 {
			want = -2
		}
		val, _ := a.pushValue(after)
		a.trampolineCopy(after)
		text = fmt.Sprintf("push: rsp %#x → %#x; stores %s at %#x%s", before, after, val, after, a.slot(after))
		if d != want {
			v, text = Finding, text+fmt.Sprintf("; a push moves rsp by %d, not %d", want, d)
		}
	case x86asm.POP, x86asm.POPFQ, x86asm.POPF:
		text = fmt.Sprintf("pop: rsp %#x → %#x; loads the slot at %#x%s", before, after, before, a.slot(before))
		if dst, ok := inst.Args[0].(x86asm.Reg); ok && inst.Op == x86asm.POP {
			if nv, ok := regVal(a.a, dst); ok {
				text += fmt.Sprintf(" into %s: %#x", lowerReg(dst), nv)
			}
		}
	case x86asm.CALL:
		text = fmt.Sprintf("call: pushes the return address %#x at %#x; rsp %#x → %#x", a.next, after, before, after)
		if d != -8 {
			v, text = Finding, text+fmt.Sprintf("; a call moves rsp by -8, not %d", d)
		}
	case x86asm.RET:
		text = fmt.Sprintf("ret: pops the return address at %#x; rsp %#x → %#x", before, before, after)
	case x86asm.SUB, x86asm.ADD:
		if d < 0 {
			text = fmt.Sprintf("rsp %#x → %#x: reserves %d bytes of stack", before, after, -d)
		} else {
			text = fmt.Sprintf("rsp %#x → %#x: releases %d bytes of stack", before, after, d)
		}
	case x86asm.AND:
		if imm, ok := inst.Args[1].(x86asm.Imm); ok {
			text = fmt.Sprintf("rsp %#x → %#x: aligned down to %d bytes", before, after, -int64(imm))
		}
	case x86asm.LEAVE:
		text = fmt.Sprintf("leave: rsp = rbp + 8 = %#x, rbp popped: the stack frame released", after)
	case x86asm.LEA:
		text = fmt.Sprintf("rsp %#x → %#x (%+d) by lea", before, after, d)
	case x86asm.MOV, x86asm.XCHG, x86asm.CMOVNE, x86asm.CMOVE:
		switch src := inst.Args[1].(type) {
		case x86asm.Reg:
			text = fmt.Sprintf("rsp %#x → %#x: copied from %s", before, after, lowerReg(src))
		case x86asm.Mem:
			text = fmt.Sprintf("rsp %#x → %#x: loaded from memory", before, after)
			if lin, ok := linear(inst, src, a.b, a.next, a.hasNext); ok {
				text = fmt.Sprintf("rsp %#x → %#x: loaded from %#x%s", before, after, lin, a.where(lin))
			}
		}
	}
	if text == "" {
		text = fmt.Sprintf("rsp %#x → %#x (%+d)", before, after, d)
	}
	a.add(KindStack, v, "%s", text)
	a.stackSwitch(before, after)
}

// scratchRSP recognises RSP used as a scratch register: loaded from a
// control register (Linux's SWITCH_TO_KERNEL_CR3 scratch_reg=%rsp), then
// masked, while the real stack pointer waits in a per-CPU slot.
func (a *annotator) scratchRSP(before, after uint64) bool {
	inst := a.s.Inst
	if src, ok := inst.Args[1].(x86asm.Reg); ok && inst.Op == x86asm.MOV && src >= x86asm.CR0 && src <= x86asm.CR15 {
		if !a.k.scratchRSP {
			a.k.scratchRSP, a.k.stackRSP = true, before
		}
		a.note(KindStack, "rsp borrowed as a scratch register: it holds %s %#x, not a stack address (the stack pointer %#x was saved first)", lowerReg(src), after, a.k.stackRSP)
		return true
	}
	if !a.k.scratchRSP {
		return false
	}
	switch inst.Op {
	case x86asm.AND, x86asm.OR, x86asm.BTS, x86asm.BTR, x86asm.XOR:
		text := fmt.Sprintf("rsp (scratch) %#x → %#x", before, after)
		if edit := a.cr3Edit(); edit != "" {
			text += ": " + edit
		}
		a.note(KindStack, "%s", text)
		return true
	}
	return false
}

// otherStack reports whether after is on another stack than before: in
// another named stack region, or, where the regions say nothing, in the
// other half of the address space or more than 64 KiB away.
func (a *annotator) otherStack(before, after uint64) bool {
	rb, okb := a.stackRegion(before)
	ra, oka := a.stackRegion(after)
	switch {
	case okb && oka:
		return rb.Name != ra.Name || rb.Kind != ra.Kind
	case okb != oka:
		return true
	}
	d := int64(after - before)
	return x86.KernelHalf(before) != x86.KernelHalf(after) || d > 1<<16 || d < -(1<<16)
}

// stackSwitch names a move to another stack.
func (a *annotator) stackSwitch(before, after uint64) {
	if a.otherStack(before, after) {
		a.note(KindStack, "stack switch: %s → %s", a.stackName(before), a.stackName(after))
		a.mark(EventStackSwitch)
		if cpl(a.b) == 0 && !a.entered && a.c.ExitTrampoline(before, after) {
			r, _ := a.c.StackOf(after)
			a.k.tramp = &trampoline{region: r, slots: map[uint64]string{}}
			a.note(KindStack, "the exit trampoline: the kernel copies the few words it still needs here, so that it can switch to the user page tables, which do not map the task stack; no pt_regs frame is on this stack")
		}
	}
}

// storedValue returns the value a store's source operand holds.
func (a *annotator) storedValue() (uint64, bool) {
	switch src := a.s.Inst.Args[1].(type) {
	case x86asm.Reg:
		return regVal(a.b, src)
	case x86asm.Imm:
		return uint64(src), true
	}
	return 0, false
}

// advancedIP explains a store to pt_regs->ip or pt_regs->sp, the user RIP
// and RSP the return to user mode loads, made after an entry from user
// mode: a RIP moved past the instruction that faulted on entry (ud2 used
// as a system call, a #GP stepped over: a fault saves the address of the
// instruction itself), or a RIP and RSP replaced by other ones altogether,
// as Linux does to deliver a signal (the handler, and the frame it built
// on the user stack below the interrupted one). Only what the values show
// is said: where the return now goes and how far the stack moved.
func (a *annotator) advancedIP(lin uint64) {
	e := a.k.Entry
	f, ok := a.ptRegsField(lin)
	if !ok || e == nil || e.FromCPL != 3 || (f != "ip" && f != "sp") {
		return
	}
	v, ok := a.storedValue()
	if !ok {
		return
	}
	switch {
	case f == "ip" && e.Fault && e.InsnLen > 0 && v == e.ReturnRIP+uint64(e.InsnLen):
		a.note(KindFrame, "pt_regs->ip %#x → %#x: advanced by %d, past the instruction that raised the fault at step %d (%s), so the return to user mode goes on after it instead of running it again", e.ReturnRIP, v, e.InsnLen, e.Step, e.Mechanism)
	case f == "ip" && v != e.ReturnRIP && !x86.KernelHalf(v):
		a.note(KindFrame, "pt_regs->ip %#x → %s: the return to user mode will go there, not back to where the %s of step %d left off; the kernel rewrote the frame the entry saved (signal delivery does this to enter the handler)", e.ReturnRIP, a.sym(v), e.Mechanism, e.Step)
	case f == "sp" && e.CallerRSP != 0 && v < e.CallerRSP && !x86.KernelHalf(v):
		a.note(KindFrame, "pt_regs->sp %#x → %#x: the return to user mode will load a stack pointer %d bytes below the one the %s of step %d saved; the kernel wrote that much onto the user stack (for a signal: the frame with siginfo, the ucontext holding the interrupted registers, and the restorer's return address on top)", e.CallerRSP, v, e.CallerRSP-v, e.Mechanism, e.Step)
	}
}

// frameStores explains ordinary (not FS/GS-relative) memory moves: stores
// into a pt_regs frame get the field's name.
func (a *annotator) frameStores() {
	inst := a.s.Inst
	if inst.Op != x86asm.MOV || a.entered {
		return
	}
	m, idx, ok := memArg(inst)
	if !ok || m.Segment == x86asm.FS || m.Segment == x86asm.GS {
		return
	}
	lin, ok := linear(inst, m, a.b, a.next, a.hasNext)
	if !ok {
		return
	}
	place := fmt.Sprintf("%#x", lin)
	if s := a.symbol(lin); s != "" {
		place += " <" + s + ">"
	}
	if idx == 0 {
		val := a.accessValue(0, "stores to")
		if slot := a.slot(lin); slot != "" && inst.MemBytes == 8 {
			a.note(KindFrame, "stores%s at %#x%s", val, lin, slot)
			a.advancedIP(lin)
			return
		}
		a.note(KindMemory, "stores%s at %s%s", val, place, a.where(lin))
		return
	}
	if dst, ok := inst.Args[0].(x86asm.Reg); ok {
		if r, _, _, ok := regInfo(dst); ok && r != x86.RSP {
			a.explained(r)
			a.note(KindMemory, "loads from %s%s%s%s", place, a.slot(lin), a.where(lin), a.accessValue(1, "loads from"))
		}
	}
}

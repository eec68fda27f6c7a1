package annotate

import (
	"fmt"

	"github.com/sctrace/sctrace/x86"
)

// loadableFlags are the RFLAGS bits IRET loads at CPL 0 (RF, VM, VIF and VIP
// are left out of the comparison).
const loadableFlags = x86.FlagCF | x86.FlagPF | x86.FlagAF | x86.FlagZF | x86.FlagSF |
	x86.FlagTF | x86.FlagIF | x86.FlagDF | x86.FlagOF | x86.FlagIOPL | x86.FlagNT |
	x86.FlagAC | x86.FlagID

// iret explains IRETQ: it pops RIP, CS, RFLAGS, RSP and SS from the frame at
// RSP, which MemoryBefore asked to read.
func (a *annotator) iret() {
	a.explained(x86.RIP, x86.RSP, x86.RFLAGS, x86.CS, x86.SS)
	a.stackDone = true
	name, size := "iretq", 8
	if !a.op.wide {
		name, size = "iretd", 4
	}
	rsp, ok := a.b.Get(x86.RSP)
	if !ok {
		a.privilegeChange(name, -1)
		return
	}
	w, ok := a.words(rsp, 5, size, false)
	if !ok {
		a.privilegeChange(name, -1)
		a.unread(KindCheck, "the frame at %#x was not read: cannot check what %s popped", rsp, name)
		a.iretStack(rsp)
		return
	}
	rip, cs, fl, sp, ss := w[0], w[1]&0xffff, w[2], w[3], w[4]&0xffff
	from, to := cpl(a.b), int(cs&3)
	a.add(KindFrame, NoVerdict, "%s pops the frame at %#x: rip %#x, cs %#x, rflags %#x, rsp %#x, ss %#x", name, rsp, rip, cs, fl, sp, ss)
	a.privilegeChange(name, to)
	what := "the popped RIP"
	switch e := a.k.Entry; {
	case e == nil || to == 0:
	case e.ReturnRIP == rip:
		what += fmt.Sprintf(", where the %s of step %d left off", e.Mechanism, e.Step)
	case e.Fault && e.ReturnRIP+uint64(e.InsnLen) == rip:
		what += fmt.Sprintf(", %d bytes past the %s of step %d that faulted: the kernel advanced the saved RIP", e.InsnLen, e.Mechanism, e.Step)
	case e.FromCPL == 3 && to == 3:
		what += fmt.Sprintf(", not %#x where the %s of step %d left off: the kernel rewrote the frame since that entry", e.ReturnRIP, e.Mechanism, e.Step)
	}
	a.expectMasked(KindControl, x86.RIP, rip, ^uint64(0), what, "IRET loads RIP from the frame")
	a.expectMasked(KindRegister, x86.CS, cs, 0xffff, "the popped CS", "IRET loads CS from the frame")
	mask := uint64(loadableFlags)
	if from > 0 {
		mask &^= uint64(x86.FlagIOPL) // only CPL 0 may change IOPL
		if from > x86.Flags(a.b.Val(x86.RFLAGS)).IOPL() {
			mask &^= uint64(x86.FlagIF) // and only CPL <= IOPL may change IF
		}
	}
	a.expectMasked(KindFlags, x86.RFLAGS, fl, mask, "the popped RFLAGS", "IRET loads RFLAGS from the frame")
	a.expectMasked(KindStack, x86.RSP, sp, ^uint64(0), "the popped RSP", "IRET in 64-bit mode always pops RSP")
	a.expectMasked(KindRegister, x86.SS, ss, 0xffff, "the popped SS", "IRET in 64-bit mode always pops SS")
	a.iretStack(rsp)
	a.ifChange("from the popped RFLAGS")
	if to > from {
		a.k.Entry = nil
	}
}

// ifChange notes an IF change a family made, saying where IF came from.
func (a *annotator) ifChange(why string) {
	bf, ok1 := a.b.Get(x86.RFLAGS)
	af, ok2 := a.a.Get(x86.RFLAGS)
	if !ok1 || !ok2 || x86.Flags(bf^af)&x86.FlagIF == 0 {
		return
	}
	if x86.Flags(af)&x86.FlagIF != 0 {
		a.note(KindPrivilege, "IF 0 → 1: interrupts enabled again, %s", why)
	} else {
		a.note(KindPrivilege, "IF 1 → 0: interrupts disabled, %s", why)
	}
}

// iretStack names the stack switch a return made.
func (a *annotator) iretStack(before uint64) {
	after, ok := a.a.Get(x86.RSP)
	if !ok {
		return
	}
	if from, to := a.stackName(before), a.stackName(after); from != to {
		a.note(KindStack, "stack switch: %s → %s (rsp %#x → %#x)", from, to, before, after)
		a.mark(EventStackSwitch)
	}
}

// expectMasked checks the bits of r in mask against want.
func (a *annotator) expectMasked(k Kind, r x86.Reg, want, mask uint64, what, rule string) {
	got, ok := a.a.Get(r)
	if !ok {
		a.note(KindCheck, "%s unknown after the step: cannot check it is %#x (%s)", name(r), want, what)
		return
	}
	if (got^want)&mask == 0 {
		a.add(k, OK, "%s = %#x: %s", name(r), got, what)
		return
	}
	a.add(k, Finding, "%s = %#x, expected %#x (%s): %s", name(r), got, want&mask|got&^mask, what, rule)
}

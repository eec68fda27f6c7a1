package annotate

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/sctrace/sctrace/x86"
	"golang.org/x/arch/x86/x86asm"
)

// isBranch reports whether inst may change RIP other than to the next
// instruction (near branches, calls and returns).
func isBranch(inst x86asm.Inst) bool {
	switch inst.Op {
	case x86asm.JMP, x86asm.CALL, x86asm.RET, x86asm.LJMP,
		x86asm.LOOP, x86asm.LOOPE, x86asm.LOOPNE, x86asm.JCXZ, x86asm.JECXZ, x86asm.JRCXZ:
		return true
	}
	return isJcc(inst.Op)
}

// isJcc reports whether op is a conditional jump.
func isJcc(op x86asm.Op) bool {
	switch op {
	case x86asm.JA, x86asm.JAE, x86asm.JB, x86asm.JBE, x86asm.JE, x86asm.JG, x86asm.JGE, x86asm.JL, x86asm.JLE,
		x86asm.JNE, x86asm.JNO, x86asm.JNP, x86asm.JNS, x86asm.JO, x86asm.JP, x86asm.JS,
		x86asm.LOOP, x86asm.LOOPE, x86asm.LOOPNE, x86asm.JCXZ, x86asm.JECXZ, x86asm.JRCXZ:
		return true
	}
	return false
}

// branchTarget returns a direct branch's target.
func (a *annotator) branchTarget() (uint64, bool) {
	if rel, ok := a.s.Inst.Args[0].(x86asm.Rel); ok && a.hasNext {
		return a.next + uint64(int64(rel)), true
	}
	return 0, false
}

// branch explains where a branch went.
func (a *annotator) branch() {
	inst := a.s.Inst
	if !isBranch(inst) || a.entered {
		return
	}
	a.explained(x86.RIP)
	rip, ok := a.a.Get(x86.RIP)
	if !ok {
		return
	}
	tgt, direct := a.branchTarget()
	op := strings.ToLower(inst.Op.String())
	switch {
	case isJcc(inst.Op):
		switch {
		case direct && rip == tgt:
			a.note(KindControl, "%s taken → %s", op, a.target(rip))
		case rip == a.next:
			a.note(KindControl, "%s not taken: falls through to %s", op, a.sym(rip))
		default:
			a.add(KindControl, Finding, "%s went to %s, neither its target nor the next instruction", op, a.sym(rip))
		}
	case inst.Op == x86asm.CALL:
		if direct && rip != tgt {
			a.add(KindControl, Finding, "call went to %s, not its target %s", a.sym(rip), a.sym(tgt))
			return
		}
		a.note(KindControl, "call %s%s; returns to %s", a.target(rip), a.via(), a.sym(a.next))
	case inst.Op == x86asm.RET:
		a.note(KindControl, "ret → %s", a.sym(rip))
	default:
		if direct && rip != tgt {
			a.add(KindControl, Finding, "%s went to %s, not its target %s", op, a.sym(rip), a.sym(tgt))
			return
		}
		a.note(KindControl, "%s → %s%s", op, a.target(rip), a.via())
	}
}

// overCall explains a call the recorder stepped over: it must come back to
// the next instruction with the stack pointer where it was.
func (a *annotator) overCall() {
	a.explained(x86.RIP, x86.RSP)
	callee := "its target"
	if tgt, ok := a.branchTarget(); ok {
		callee = a.sym(tgt)
	}
	rip, ok := a.a.Get(x86.RIP)
	if !ok {
		return
	}
	if a.hasNext && rip != a.next {
		a.add(KindControl, Finding, "the call to %s was stepped over but stopped at %s, not at the return address %s", callee, a.sym(rip), a.sym(a.next))
		return
	}
	before, bok := a.b.Get(x86.RSP)
	after, aok := a.a.Get(x86.RSP)
	switch {
	case bok && aok && before != after && a.otherStack(before, after):
		// Linux's error_entry, for one, returns on the task stack after
		// copying the frame there from the entry stack.
		a.note(KindStack, "the call to %s returned on another stack: %s → %s; it was stepped over, so how it moved the stack is not traced", callee, a.stackName(before), a.stackName(after))
		a.mark(EventStackSwitch)
		return
	case bok && aok && before != after:
		// RET pops whatever is at RSP: a callee may return with the stack
		// moved, as Linux's error_entry does, leaving the registers it
		// saved on it. Not an architectural fault, so a note.
		a.note(KindStack, "the call to %s returned with rsp %#x, not %#x as before the call: the callee left the stack moved by %d bytes; it was stepped over, so how is not traced", callee, after, before, int64(before-after))
		return
	}
	a.note(KindControl, "call %s ran to its return (stepped over, not traced)", callee)
}

// via says how an indirect branch found its target.
func (a *annotator) via() string {
	switch src := a.s.Inst.Args[0].(type) {
	case x86asm.Reg:
		return " (indirect, through " + lowerReg(src) + ")"
	case x86asm.Mem:
		if lin, ok := linear(a.s.Inst, src, a.b, a.next, a.hasNext); ok {
			return fmt.Sprintf(" (indirect, through the pointer at %#x)", lin)
		}
		return " (indirect, through memory)"
	}
	return ""
}

// regKind says which kind of effect a register change is.
func regKind(r x86.Reg) Kind {
	switch r {
	case x86.RFLAGS:
		return KindFlags
	case x86.RSP:
		return KindStack
	case x86.FSBase, x86.GSBase, x86.KernelGSBase:
		return KindGS
	case x86.CR0, x86.CR2, x86.CR3, x86.CR4, x86.CR8:
		return KindCR3
	case x86.EFER:
		return KindMSR
	case x86.RIP:
		return KindControl
	}
	return KindRegister
}

// registers lists the registers that changed and no other effect explained.
func (a *annotator) registers() {
	for _, r := range a.b.Changed(a.a) {
		if a.done&(1<<r) != 0 || r == x86.RIP {
			continue
		}
		old, okOld := a.b.Get(r)
		nw, okNew := a.a.Get(r)
		switch {
		case !okNew:
			a.note(KindCheck, "%s no longer known", name(r))
		case !okOld:
			a.note(regKind(r), "%s = %#x (now known)", name(r), nw)
		case r == x86.RFLAGS:
			b := changeText(make([]byte, 0, 80), "rflags", old, nw)
			b = append(append(append(append(append(b, " ("...), x86.Flags(old).String()...), " → "...), x86.Flags(nw).String()...), ')')
			a.out = append(a.out, Effect{Kind: KindFlags, Text: string(b), Verdict: NoVerdict})
		case r >= x86.CS && r <= x86.GS:
			a.note(KindRegister, "%s %#x → %s", name(r), old, x86.Selector(nw))
		case r == x86.CR2:
			a.note(KindRegister, "cr2 %#x → %#x: the address that faulted", old, nw)
		case r == x86.EFER:
			a.note(KindMSR, "efer %#x → %#x (%s)", old, nw, x86.EFERFlags(nw))
		default:
			a.out = append(a.out, Effect{Kind: regKind(r), Text: string(changeText(nil, name(r), old, nw)), Verdict: NoVerdict})
		}
	}
}

// changeText appends "NAME OLD → NEW", the values as %#x prints them,
// without fmt: almost every step changes a register or two, and a long
// recording makes millions of these.
func changeText(b []byte, name string, old, nw uint64) []byte {
	b = append(append(b, name...), " 0x"...)
	b = strconv.AppendUint(b, old, 16)
	b = append(b, " → 0x"...)
	return strconv.AppendUint(b, nw, 16)
}

package annotate

import (
	"strings"

	"github.com/sctrace/sctrace/x86"
	"golang.org/x/arch/x86/x86asm"
)

// privilege explains IF and AC changes made by ordinary instructions, and a
// CPL change nothing else explained.
func (a *annotator) privilege() {
	bf, ok1 := a.b.Get(x86.RFLAGS)
	af, ok2 := a.a.Get(x86.RFLAGS)
	if a.op.kind == opStac || a.op.kind == opClac {
		a.smap(af, ok2)
	}
	if !ok1 || !ok2 || a.done&(1<<x86.RFLAGS) != 0 {
		return
	}
	if x86.Flags(bf^af)&x86.FlagIF != 0 {
		c := cpl(a.b)
		iopl := x86.Flags(bf).IOPL()
		switch {
		case (a.s.Inst.Op == x86asm.CLI || a.s.Inst.Op == x86asm.STI) && c > iopl:
			a.add(KindPrivilege, Finding, "IF %d → %d by %s at CPL %d with IOPL %d: it should have raised #GP", bit(bf, x86.FlagIF), bit(af, x86.FlagIF), a.mnemonic(), c, iopl)
		case x86.Flags(af)&x86.FlagIF != 0:
			extra := ""
			if a.s.Inst.Op == x86asm.STI {
				extra = "; one more instruction runs before the first interrupt is taken"
			}
			a.note(KindPrivilege, "IF 0 → 1: interrupts enabled%s", extra)
		default:
			a.note(KindPrivilege, "IF 1 → 0: interrupts disabled")
		}
	}
	if x86.Flags(bf^af)&x86.FlagAC != 0 && a.op.kind != opStac && a.op.kind != opClac {
		a.note(KindPrivilege, "AC %d → %d: %s", bit(bf, x86.FlagAC), bit(af, x86.FlagAC), acMeaning(x86.Flags(af)&x86.FlagAC != 0, a.b))
	}
	if from, to := cpl(a.b), cpl(a.a); from >= 0 && to >= 0 && from != to && !a.entered && !a.cplDone {
		a.note(KindPrivilege, "CPL %d → %d (%s → %s)", from, to, ring(from), ring(to))
	}
}

// acMeaning says what AC means for kernel accesses to user pages.
func acMeaning(set bool, st *x86.State) string {
	cr4, ok := st.Get(x86.CR4)
	smapOff := ok && x86.CR4Flags(cr4)&x86.CR4SMAP == 0
	var s string
	if set {
		s = "kernel code may now touch user pages (SMAP suspended)"
	} else {
		s = "kernel accesses to user pages fault again (SMAP enforced)"
	}
	if smapOff {
		s += "; CR4.SMAP is clear here, so it changes nothing"
	}
	return s
}

// smap checks stac and clac.
func (a *annotator) smap(af uint64, ok bool) {
	a.explained(x86.RFLAGS)
	if !ok {
		return
	}
	set := a.op.kind == opStac
	if c := cpl(a.b); c > 0 {
		a.add(KindPrivilege, Finding, "%s at CPL %d should raise #UD: it is a ring-0 instruction", a.op.name, c)
	}
	a.add(KindPrivilege, verdict((x86.Flags(af)&x86.FlagAC != 0) == set), "%s: AC = %d: %s", a.op.name, bit(af, x86.FlagAC), acMeaning(set, a.b))
}

// mitigations names speculative-execution mitigations.
func (a *annotator) mitigations() {
	switch a.s.Inst.Op {
	case x86asm.VERW:
		a.note(KindMitigation, "verw: with MD_CLEAR microcode it also overwrites the CPU's internal buffers (MDS/TAA mitigation before returning to user mode)")
	case x86asm.LFENCE:
		if a.k.prevOp == opSwapgs {
			a.note(KindMitigation, "lfence right after swapgs: no later load may run speculatively with the wrong GS base (Spectre v1 swapgs variant)")
		} else {
			a.note(KindMitigation, "lfence: a speculation barrier: later instructions wait until the earlier ones complete")
		}
	case x86asm.MFENCE:
		a.note(KindMitigation, "mfence: all earlier loads and stores complete before any later one")
	case x86asm.PAUSE:
		what := "pause: a spin-wait hint"
		if t := thunk(a.symbol(a.s.Addr)); t != "" {
			what += "; here it is the loop that catches speculation inside a thunk"
		}
		a.note(KindMitigation, "%s", what)
	case x86asm.CALL, x86asm.JMP:
		if rip, ok := a.a.Get(x86.RIP); ok {
			if t := thunk(a.symbol(rip)); t != "" {
				a.note(KindMitigation, "%s %s: %s", strings.ToLower(a.s.Inst.Op.String()), a.sym(rip), t)
			}
		}
		a.patchedOut()
	}
}

package annotate

import (
	"strings"

	"github.com/sctrace/sctrace/target"
	"golang.org/x/arch/x86/x86asm"
)

// privilege explains IF and AC changes made by ordinary instructions, and a
// CPL change nothing else explained.
func (a *annotator) privilege() {
	bf, ok1 := a.b.Get(target.RFLAGS)
	af, ok2 := a.a.Get(target.RFLAGS)
	if a.op.kind == opStac || a.op.kind == opClac {
		a.smap(af, ok2)
	}
	if !ok1 || !ok2 || a.done&(1<<target.RFLAGS) != 0 {
		return
	}
	if (bf^af)&target.FlagIF != 0 {
		c := cpl(a.b)
		iopl := target.Flags(bf).IOPL()
		switch {
		case (a.s.Inst.Op == x86asm.CLI || a.s.Inst.Op == x86asm.STI) && c > iopl:
			a.add(KindPrivilege, Finding, "IF %d → %d by %s at CPL %d with IOPL %d: it should have raised #GP", bit(bf, target.FlagIF), bit(af, target.FlagIF), a.mnemonic(), c, iopl)
		case af&target.FlagIF != 0:
			extra := ""
			if a.s.Inst.Op == x86asm.STI {
				extra = "; one more instruction runs before the first interrupt is taken"
			}
			a.note(KindPrivilege, "IF 0 → 1: interrupts enabled%s", extra)
		default:
			a.note(KindPrivilege, "IF 1 → 0: interrupts disabled")
		}
	}
	if (bf^af)&target.FlagAC != 0 && a.op.kind != opStac && a.op.kind != opClac {
		a.note(KindPrivilege, "AC %d → %d: %s", bit(bf, target.FlagAC), bit(af, target.FlagAC), acMeaning(af&target.FlagAC != 0, a.b))
	}
	if from, to := cpl(a.b), cpl(a.a); from >= 0 && to >= 0 && from != to && !a.entered && !a.cplDone {
		a.note(KindPrivilege, "CPL %d → %d (%s → %s)", from, to, ring(from), ring(to))
	}
}

// acMeaning says what AC means for kernel accesses to user pages.
func acMeaning(set bool, st *target.State) string {
	cr4, ok := st.Get(target.CR4)
	smapOff := ok && cr4&target.CR4SMAP == 0
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
	a.explained(target.RFLAGS)
	if !ok {
		return
	}
	set := a.op.kind == opStac
	if c := cpl(a.b); c > 0 {
		a.add(KindPrivilege, Finding, "%s at CPL %d should raise #UD: it is a ring-0 instruction", a.op.name, c)
	}
	a.add(KindPrivilege, verdict((af&target.FlagAC != 0) == set), "%s: AC = %d: %s", a.op.name, bit(af, target.FlagAC), acMeaning(set, a.b))
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
		if rip, ok := a.a.Get(target.RIP); ok {
			if t := thunk(a.symbol(rip)); t != "" {
				a.note(KindMitigation, "%s %s: %s", strings.ToLower(a.s.Inst.Op.String()), a.sym(rip), t)
			}
		}
		a.patchedOut()
	}
}

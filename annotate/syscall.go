package annotate

import (
	"fmt"

	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/x86"
)

// cpl returns the privilege level of a state: the CPL from `info registers`
// when it was read, else the RPL of CS; -1 when neither is known.
func cpl(st *x86.State) int {
	if st.Sys != nil && st.Sys.CPL >= 0 && st.Sys.CPL <= 3 {
		return st.Sys.CPL
	}
	return st.CPL()
}

// ring names a privilege level for a student.
func ring(c int) string {
	switch c {
	case 0:
		return "kernel"
	case 3:
		return "user"
	case -1:
		return "unknown"
	}
	return fmt.Sprintf("ring %d", c)
}

// predicted is OK when the CPL was predicted (want >= 0) and matched.
func predicted(want int) Verdict {
	if want >= 0 {
		return OK
	}
	return NoVerdict
}

// privilegeChange reports the CPL change and checks it against want (-1: no
// prediction).
func (a *annotator) privilegeChange(how string, want int) {
	a.cplDone = true
	from, to := cpl(a.b), cpl(a.a)
	switch {
	case to < 0:
		a.note(KindCheck, "%s: CPL after the step unknown (CS not read)", how)
	case want >= 0 && to != want:
		a.add(KindPrivilege, Finding, "%s: CPL %d → %d, but the architecture puts the CPU at CPL %d (%s)", how, from, to, want, ring(want))
	case from == to:
		a.add(KindPrivilege, predicted(want), "%s: stays at CPL %d (%s)", how, to, ring(to))
	default:
		a.add(KindPrivilege, predicted(want), "%s: CPL %d → %d (%s → %s)", how, from, to, ring(from), ring(to))
	}
}

// learnMSR checks an inferred MSR value against what is known, reports a
// contradiction as a finding and learns it. It returns the previous
// knowledge (nil if none) so the caller can say it matched.
func (a *annotator) learnMSR(index uint32, value, known uint64, how string) (prev *MSR, conflict bool) {
	m := MSR{Index: index, Value: value & known, Known: known, Source: SourceInferred, Step: a.s.Index, How: how}
	if old := a.k.MSR(index); old != nil && old.Known&known != 0 {
		cp := *old
		prev = &cp
		if c := a.k.Conflict(m); c != 0 {
			a.add(KindMSR, Finding, "%s: this step shows %#x in bits %#x, but %s was known (%s); no wrmsr to it was seen in between",
				x86.MSRName(index), value&c, c, old.ValueString(), old.ProvenanceOf(c))
			prev, conflict = nil, true
		}
	}
	a.k.Learn(m)
	return prev, conflict
}

// syscall explains SYSCALL: RCX and R11 take the return address and RFLAGS,
// RIP comes from LSTAR, CS and SS from STAR[47:32], RFLAGS is masked by
// FMASK, and RSP is left alone.
func (a *annotator) syscall() {
	if efer, ok := a.b.Get(x86.EFER); ok && x86.EFERFlags(efer)&x86.EFERSCE == 0 {
		a.note(KindMSR, "EFER.SCE is clear (efer %#x): syscall is disabled and raises #UD", efer)
		a.enter(6, false, "syscall with EFER.SCE clear")
		return
	}
	// SYSCALL leaves RSP alone; the #UD's interrupt gate switches to
	// TSS.RSP0 (CPL 3 → 0).
	rspBefore, ok1 := a.b.Get(x86.RSP)
	rspAfter, ok2 := a.a.Get(x86.RSP)
	if a.compatMode(a.b) && ok1 && ok2 && rspBefore != rspAfter && a.raisedUD(x86.MSRCSTAR) {
		a.note(KindControl, "syscall raised #UD: outside 64-bit mode (here compatibility mode, CS.L = 0) Intel CPUs do not support syscall (SDM: #UD if CS.L ≠ 1), and QEMU's TCG with an Intel vendor models that from 9.1; AMD's take it to CSTAR")
		a.enter(6, false, "syscall from compatibility mode")
		return
	}
	a.explained(x86.RIP, x86.RCX, x86.R11, x86.RFLAGS, x86.CS, x86.SS)
	a.privilegeChange("syscall", 0)
	a.compatEntry("syscall")

	// RIP from LSTAR (CSTAR from compatibility mode).
	msr, name := x86.MSRLSTAR, "LSTAR"
	if a.compatMode(a.b) {
		msr, name = x86.MSRCSTAR, "CSTAR"
		if x86.ModelVendor(a.c.CPUModel) == x86.VendorIntel {
			// Seen with QEMU 7.2's TCG and -cpu
			// qemu64,vendor=GenuineIntel; QEMU 10 raises the #UD.
			a.add(KindControl, Finding, "on an Intel CPU a SYSCALL in compatibility mode raises #UD (SDM: #UD if CS.L ≠ 1); this CPU (-cpu %s%s) went to CSTAR instead, which no Intel CPU does", a.c.CPUModel, a.accelNote())
		}
		if rip, ok := a.a.Get(x86.RIP); ok && rip == 0 {
			// Observed with QEMU 7.2's TCG on an Intel vendor under Linux,
			// which writes CSTAR on other vendors only.
			a.add(KindControl, Finding, "rip = 0: CSTAR is 0, no entry point, so the kernel runs from address 0 at CPL 0. An Intel CPU raises #UD on syscall outside 64-bit mode and never uses CSTAR (Linux leaves it unset on Intel CPUs); an emulator that jumps here (QEMU's TCG with an Intel vendor) does not model that #UD")
		}
	}
	if rip, ok := a.a.Get(x86.RIP); ok {
		prev, conflict := a.learnMSR(msr, rip, ^uint64(0), "RIP after syscall")
		switch {
		case conflict:
		case prev != nil:
			a.add(KindControl, OK, "rip = %s: the entry point in %s, as known (%s)", a.sym(rip), name, prev.ProvenanceOf(^uint64(0)))
		default:
			a.note(KindControl, "rip = %s: the kernel entry point, from %s", a.sym(rip), name)
			a.note(KindMSR, "%s = %#x (inferred: the RIP syscall jumped to)", name, rip)
		}
	}
	if a.hasNext {
		a.expect(KindRegister, x86.RCX, a.next, "the address of the next instruction, where sysret will return", "SYSCALL saves the return address in RCX")
	}
	if fl, ok := a.b.Get(x86.RFLAGS); ok {
		a.expect(KindRegister, x86.R11, fl&^uint64(x86.FlagRF), "RFLAGS before the syscall (RF cleared)", "SYSCALL saves RFLAGS in R11")
		a.syscallFlags(fl)
	}
	a.syscallSelectors()

	// No stack switch.
	a.stackDone = true
	if rsp, ok := a.b.Get(x86.RSP); ok {
		a.expect(KindStack, x86.RSP, rsp, "unchanged: SYSCALL does not switch stacks, the kernel still runs on the caller's stack until its entry code loads one", "SYSCALL must not change RSP")
	}
	a.recordEntry(mechanism.Syscall.Instruction(), a.next)
}

// compatMode reports whether the state's CS is a 32-bit (compatibility mode)
// segment, from the cached descriptor attributes (L bit) when they were read.
func (a *annotator) compatMode(st *x86.State) bool { return st.Sys.CompatMode() }

// syscallFlags checks RFLAGS after SYSCALL against FMASK and learns which
// bits FMASK certainly holds.
func (a *annotator) syscallFlags(before uint64) {
	after, ok := a.a.Get(x86.RFLAGS)
	if !ok {
		return
	}
	const fixed = 2 // reserved bit 1 always reads 1
	cleared := before &^ after &^ uint64(x86.FlagRF|fixed)
	if extra := after &^ before &^ fixed; extra != 0 {
		a.add(KindFlags, Finding, "rflags %#x → %#x: %s set, but SYSCALL only clears flags (RFLAGS &= ~FMASK)", before, after, x86.Flags(extra))
	}
	if x86.Flags(after)&x86.FlagRF != 0 {
		a.add(KindFlags, Finding, "RF is set after syscall; SYSCALL clears it")
	}
	// Bits set before and clear after are in FMASK; bits set after are
	// not. Under QEMU's TCG the arithmetic flags are no evidence: its
	// SYSCALL helper masks an RFLAGS value that lacks them (TCG keeps them
	// lazily, apart), so they come out clear whatever FMASK says. With the
	// accelerator unknown they may be either.
	known := (cleared | after) &^ uint64(fixed|x86.FlagRF)
	fmaskCleared := cleared
	switch emu := cleared & arithFlags; {
	case a.c.accel() == "kvm":
	case a.c.accel() == "tcg":
		known &^= arithFlags
		fmaskCleared &^= arithFlags
		if emu != 0 {
			a.note(KindFlags, "rflags %#x → %#x: %s cleared by QEMU's TCG, not by FMASK: its SYSCALL helper masks an RFLAGS value that lacks the lazily kept arithmetic flags (a CPU keeps them unless FMASK names them)", before, after, x86.Flags(emu))
		}
	default:
		known &^= arithFlags
		fmaskCleared &^= arithFlags
		if emu != 0 {
			a.note(KindFlags, "rflags %#x → %#x: %s cleared by FMASK or by the emulator (QEMU's TCG clears arithmetic flags on SYSCALL without FMASK naming them; the accelerator is unknown here), so they are left out of what FMASK is known to hold", before, after, x86.Flags(emu))
		}
	}
	switch {
	case cleared == 0:
		a.note(KindFlags, "rflags %#x unchanged: none of the set flags is in FMASK", after)
	case fmaskCleared != 0:
		a.note(KindFlags, "rflags %#x → %#x: FMASK cleared %s", before, after, x86.Flags(fmaskCleared))
	}
	if known == 0 {
		return
	}
	prev, conflict := a.learnMSR(x86.MSRFMASK, cleared, known, "RFLAGS bits syscall cleared (1) or kept (0)")
	m := a.k.MSR(x86.MSRFMASK)
	switch {
	case conflict:
	case prev != nil && prev.Known&known == known:
		a.add(KindMSR, OK, "FMASK agrees with what was known (%s)", prev.ProvenanceOf(known))
	case m != nil:
		a.note(KindMSR, "FMASK learnt (inferred): clears %s; known to leave alone: %s; known bits %#x", flagList(m.Value&m.Known), flagList(^m.Value&m.Known), m.Known)
	}
}

// arithFlags are the status flags an ALU result sets: CF PF AF ZF SF OF.
const arithFlags = uint64(x86.FlagCF | x86.FlagPF | x86.FlagAF | x86.FlagZF | x86.FlagSF | x86.FlagOF)

func flagList(v uint64) string {
	if v == 0 {
		return "none"
	}
	return x86.Flags(v).String()
}

// syscallSelectors checks CS = STAR[47:32] & 0xfffc and SS = STAR[47:32] + 8.
func (a *annotator) syscallSelectors() {
	cs, csOK := a.a.Get(x86.CS)
	ss, ssOK := a.a.Get(x86.SS)
	const starKernel = 0xffff << 32
	switch {
	case ssOK:
		base := (ss - 8) & 0xffff
		prev, conflict := a.learnMSR(x86.MSRSTAR, base<<32, starKernel, "SS after syscall minus 8")
		if csOK {
			if cs == base&0xfffc {
				a.add(KindRegister, OK, "cs = %s, ss = %s: kernel selectors from STAR[47:32] = %#x (SS = CS + 8)", x86.Selector(cs), x86.Selector(ss), base)
			} else {
				a.add(KindRegister, Finding, "cs = %#x, ss = %#x: SYSCALL loads CS = STAR[47:32] & 0xfffc and SS = STAR[47:32] + 8, so SS must be CS + 8", cs, ss)
			}
		}
		switch {
		case conflict:
		case prev != nil && prev.Known&starKernel == starKernel:
			a.add(KindMSR, OK, "STAR[47:32] = %#x, as known (%s)", base, prev.ProvenanceOf(starKernel))
		default:
			a.note(KindMSR, "STAR[47:32] = %#x (inferred from SS after syscall)", base)
		}
	case csOK:
		a.learnMSR(x86.MSRSTAR, (cs&0xfffc)<<32, 0xfffc<<32, "CS after syscall")
		a.note(KindRegister, "cs = %s: from STAR[47:32] (SS unknown)", x86.Selector(cs))
	}
}

// sysret explains SYSRET: RIP from RCX, RFLAGS from R11, CS and SS from
// STAR[63:48], and RSP left for the kernel to have restored.
func (a *annotator) sysret() {
	if c := cpl(a.b); c > 0 {
		a.note(KindPrivilege, "sysret at CPL %d raises #GP(0): it is a ring-0 instruction", c)
		a.enter(13, false, "sysret outside ring 0")
		return
	}
	rcx, rcxOK := a.b.Get(x86.RCX)
	if a.op.wide && rcxOK && !x86.Canonical(rcx) {
		a.add(KindControl, Finding, "rcx %#x is not canonical: Intel CPUs raise #GP in ring 0 here with the user RSP already loaded (the CVE-2012-0217 hazard); AMD CPUs return and fault in user mode", rcx)
		if cpl(a.a) == 0 {
			a.enter(13, false, "sysret to a non-canonical RCX")
			return
		}
	}
	a.explained(x86.RIP, x86.RFLAGS, x86.CS, x86.SS)
	mode := "64-bit"
	if !a.op.wide {
		mode = "compatibility (32-bit)"
	}
	a.privilegeChange("sysret to "+mode+" user mode", 3)
	a.sysretRulesHeld()
	if rcxOK {
		want := rcx
		if !a.op.wide {
			want &= 0xffffffff
		}
		what := "the return address held in RCX"
		if e := a.k.Entry; e != nil && e.ReturnRIP == want {
			what += fmt.Sprintf(", right after the %s of step %d", e.Mechanism, e.Step)
		}
		a.expect(KindControl, x86.RIP, want, what, "SYSRET loads RIP from RCX")
		a.compatLanding(want)
	}
	if r11, ok := a.b.Get(x86.R11); ok {
		a.expect(KindFlags, x86.RFLAGS, r11&0x3c7fd7|2, fmt.Sprintf("from R11 %#x (RF, VM and reserved bits cleared, bit 1 set)", r11), "SYSRET loads RFLAGS = (R11 & 0x3c7fd7) | 2")
	}
	a.ifChange("from R11")
	a.sysretSelectors()
	a.stackDone = true
	if rsp, ok := a.b.Get(x86.RSP); ok {
		what := "unchanged: SYSRET does not restore RSP, the kernel put the user stack pointer back itself"
		if e := a.k.Entry; e != nil && e.CallerRSP == rsp {
			what += fmt.Sprintf(" (the value it had at the %s of step %d)", e.Mechanism, e.Step)
		}
		a.expect(KindStack, x86.RSP, rsp, what, "SYSRET must not change RSP")
	}
	a.k.Entry = nil
}

// sysretSelectors checks CS = (STAR[63:48] + 16) | 3 (+0 for a 32-bit
// return) and SS = (STAR[63:48] + 8) | 3, learning STAR[63:48] but for
// its low two bits, which the RPL 3 forced into the selectors hides.
func (a *annotator) sysretSelectors() {
	cs, csOK := a.a.Get(x86.CS)
	ss, ssOK := a.a.Get(x86.SS)
	csOff := uint64(16)
	if !a.op.wide {
		csOff = 0
	}
	const starUser = 0xfffc << 48
	if !ssOK {
		if csOK {
			a.learnMSR(x86.MSRSTAR, ((cs&^3)-csOff)&0xffff<<48, starUser, "CS after sysret")
		}
		return
	}
	base := ((ss &^ 3) - 8) & 0xfffc
	prev, conflict := a.learnMSR(x86.MSRSTAR, base<<48, starUser, "SS after sysret")
	if csOK {
		want := (base+csOff)&0xffff | 3
		if cs == want && ss&3 == 3 {
			a.add(KindRegister, OK, "cs = %s, ss = %s: user selectors from STAR[63:48] (CS = base + %d, SS = base + 8, RPL 3)", x86.Selector(cs), x86.Selector(ss), csOff)
		} else {
			a.add(KindRegister, Finding, "cs = %#x, ss = %#x: SYSRET loads SS = (STAR[63:48] + 8) | 3 and CS = (STAR[63:48] + %d) | 3, so CS should be %#x", cs, ss, csOff, want)
		}
	}
	switch {
	case conflict:
	case prev != nil && prev.Known&starUser == starUser:
		a.add(KindMSR, OK, "STAR[63:48] = %#x (bits 49:48 unknown), as known (%s)", base, prev.ProvenanceOf(starUser))
	default:
		a.note(KindMSR, "STAR[63:48] = %#x (inferred from SS after sysret: SS = (STAR[63:48] + 8) | 3, so bits 49:48 stay unknown)", base)
	}
}

// recordEntry notes a kernel entry so the return can be related to it.
func (a *annotator) recordEntry(mech string, ret uint64) {
	e := &Entry{Step: a.s.Index, Mechanism: mech, FromCPL: cpl(a.b), ReturnRIP: ret}
	if rsp, ok := a.b.Get(x86.RSP); ok {
		e.CallerRSP = rsp
	}
	if e.FromCPL == 3 || a.k.Entry == nil {
		a.k.Entry = e
		a.k.sysretRules = nil
	}
}

package annotate

import (
	"fmt"

	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/x86"
)

// raisedUD reports whether the instruction (sysenter, or syscall from
// compatibility mode) raised #UD rather than entering the kernel: the CPU
// is in the #UD handler (IDT[6]) or pushed a frame whose RIP is the
// instruction itself, and is not at the entry point known from entryMSR.
func (a *annotator) raisedUD(entryMSR uint32) bool {
	rip, ok := a.a.Get(x86.RIP)
	if !ok {
		return false
	}
	if g, ok := a.gate(6); ok && g.Offset == rip {
		return true
	}
	if m := a.k.MSR(entryMSR); m != nil && m.Known == ^uint64(0) && m.Value == rip {
		return false
	}
	rsp, ok := a.a.Get(x86.RSP)
	if !ok {
		return false
	}
	w, ok := a.words(rsp, 2, 8, true)
	cs, csOK := a.b.Get(x86.CS)
	return ok && csOK && w[0] == a.s.Addr && w[1]&0xffff == cs&0xffff
}

// sysenter explains SYSENTER: RIP, RSP and CS from the three SYSENTER MSRs,
// SS = CS + 8, IF and VM cleared. On AMD CPUs in long mode it raises #UD.
func (a *annotator) sysenter() {
	if a.raisedUD(x86.MSRSysenterEIP) {
		a.note(KindControl, "sysenter raised #UD: in 64-bit mode AMD CPUs (and QEMU with an AMD vendor) do not support sysenter; only Intel ones do")
		a.enter(6, false, mechanism.Sysenter.Instruction())
		return
	}
	a.explained(x86.RIP, x86.RSP, x86.CS, x86.SS, x86.RFLAGS)
	a.privilegeChange("sysenter", 0)
	a.compatEntry("sysenter")
	if rip, ok := a.a.Get(x86.RIP); ok {
		a.msrCheck(x86.MSRSysenterEIP, rip, ^uint64(0), "RIP after sysenter", fmt.Sprintf("rip = %s", a.sym(rip)))
	}
	a.stackDone = true
	if rsp, ok := a.a.Get(x86.RSP); ok {
		before, _ := a.b.Get(x86.RSP)
		a.msrCheck(x86.MSRSysenterESP, rsp, ^uint64(0), "RSP after sysenter", fmt.Sprintf("stack switch: %s → %s, rsp = %#x", a.stackName(before), a.stackName(rsp), rsp))
		a.mark(EventStackSwitch)
		a.note(KindStack, "sysenter saves neither the return address nor the caller's RSP: user code must leave them where the kernel expects (Linux's 32-bit vDSO keeps RSP in RBP)")
	}
	cs, csOK := a.a.Get(x86.CS)
	ss, ssOK := a.a.Get(x86.SS)
	if csOK {
		a.msrCheck(x86.MSRSysenterCS, cs&0xfffc, 0xfffc, "CS after sysenter", fmt.Sprintf("cs = %s", x86.Selector(cs)))
		if cs&3 != 0 {
			a.add(KindRegister, Finding, "cs = %#x: SYSENTER loads CS = SYSENTER_CS & 0xfffc, RPL 0", cs)
		}
		if ssOK {
			a.add(KindRegister, verdict(ss == cs+8), "ss = %s: SYSENTER loads SS = CS + 8", x86.Selector(ss))
		}
	}
	bf, ok1 := a.b.Get(x86.RFLAGS)
	af, ok2 := a.a.Get(x86.RFLAGS)
	if ok1 && ok2 {
		bad := x86.Flags(af) & (x86.FlagIF | x86.FlagVM | x86.FlagRF)
		a.add(KindFlags, verdict(bad == 0), "rflags %#x → %#x: SYSENTER clears IF, VM and RF (IF %d → %d)", bf, af, bit(bf, x86.FlagIF), bit(af, x86.FlagIF))
	}
	a.recordEntry(mechanism.Sysenter.Instruction(), 0)
}

// msrCheck learns an MSR value a transition revealed and says so in one
// effect that starts with what: ok when it matches earlier knowledge.
func (a *annotator) msrCheck(index uint32, value, known uint64, how, what string) {
	prev, conflict := a.learnMSR(index, value, known, how)
	switch {
	case conflict: // learnMSR reported it
		return
	case prev != nil:
		a.add(KindMSR, OK, "%s: from %s, as known (%s)", what, x86.MSRName(index), prev.ProvenanceOf(known))
		return
	}
	a.note(KindMSR, "%s: from %s (value inferred from this transition)", what, x86.MSRName(index))
}

// sysexit explains SYSEXIT: RIP = RDX, RSP = RCX, CS = SYSENTER_CS + 32 | 3
// and SS = SYSENTER_CS + 40 | 3 (REX.W form; +16 and +24 for a return to
// 32-bit code).
func (a *annotator) sysexit() {
	if c := cpl(a.b); c > 0 {
		a.note(KindPrivilege, "sysexit at CPL %d raises #GP(0): it is a ring-0 instruction", c)
		a.enter(13, false, "sysexit outside ring 0")
		return
	}
	a.explained(x86.RIP, x86.RSP, x86.CS, x86.SS)
	csOff, ssOff, mask, mode := uint64(32), uint64(40), ^uint64(0), "64-bit"
	if !a.op.wide {
		csOff, ssOff, mask, mode = 16, 24, 0xffffffff, "32-bit"
	}
	a.privilegeChange("sysexit to "+mode+" user mode", 3)
	if rdx, ok := a.b.Get(x86.RDX); ok {
		a.expect(KindControl, x86.RIP, rdx&mask, "the return address from RDX", "SYSEXIT loads RIP from RDX")
	}
	a.stackDone = true
	if rcx, ok := a.b.Get(x86.RCX); ok {
		a.expect(KindStack, x86.RSP, rcx&mask, "the user stack pointer from RCX", "SYSEXIT loads RSP from RCX")
	}
	if rsp, ok := a.b.Get(x86.RSP); ok {
		a.iretStack(rsp)
	}
	cs, csOK := a.a.Get(x86.CS)
	ss, ssOK := a.a.Get(x86.SS)
	if csOK {
		base := ((cs &^ 3) - csOff) & 0xfffc
		a.msrCheck(x86.MSRSysenterCS, base, 0xfffc, "CS after sysexit", fmt.Sprintf("cs = %s = SYSENTER_CS + %d, RPL 3", x86.Selector(cs), csOff))
		if ssOK {
			want := (base+ssOff)&0xffff | 3
			a.add(KindRegister, verdict(ss == want && cs&3 == 3), "ss = %s: SYSEXIT loads SS = (SYSENTER_CS + %d) | 3, CS = (SYSENTER_CS + %d) | 3 (expected ss %#x)", x86.Selector(ss), ssOff, csOff, want)
		}
	}
	a.k.Entry = nil
}

package annotate

import (
	"fmt"
	"strings"

	"github.com/sctrace/sctrace/x86"
)

// stubMSRs are the MSRs the gdbstub shows as registers.
var stubMSRs = []struct {
	index uint32
	reg   x86.Reg
	name  string
	how   string
}{
	{x86.MSREFER, x86.EFER, "", ""},
	{x86.MSRFSBase, x86.FSBase, "", ""},
	{x86.MSRGSBase, x86.GSBase, "", ""},
	{x86.MSRKernelGSBase, x86.KernelGSBase, "", ""},
}

func init() {
	// Said once: every step learns them.
	for i := range stubMSRs {
		stubMSRs[i].name = x86.MSRName(stubMSRs[i].index)
		stubMSRs[i].how = stubMSRs[i].reg.String() + " register from the stub"
	}
}

// learnFromStub records the MSRs the stub's registers show after the step.
func (a *annotator) learnFromStub() {
	for _, m := range stubMSRs {
		if v, ok := a.a.Get(m.reg); ok {
			a.k.Learn(MSR{Index: m.index, Value: v, Known: ^uint64(0), Source: SourceRead, Step: a.s.Index, Name: m.name, How: m.how})
		}
	}
}

// msrValue reads ECX and EDX:EAX.
func msrOperands(st *x86.State) (index uint32, value uint64, idxOK, valOK bool) {
	c, idxOK := st.Get(x86.RCX)
	ax, ok1 := st.Get(x86.RAX)
	dx, ok2 := st.Get(x86.RDX)
	return uint32(c), dx<<32 | ax&0xffffffff, idxOK, ok1 && ok2
}

// wrmsr explains WRMSR: ECX names the MSR, EDX:EAX is the value.
func (a *annotator) wrmsr() {
	if c := cpl(a.b); c > 0 {
		a.add(KindPrivilege, Finding, "wrmsr at CPL %d should raise #GP: it is a ring-0 instruction", c)
	}
	idx, val, idxOK, valOK := msrOperands(a.b)
	if !idxOK || !valOK {
		a.note(KindCheck, "wrmsr: ECX, EAX or EDX unknown")
		return
	}
	name := x86.MSRName(idx)
	a.k.Learn(MSR{Index: idx, Value: val, Known: ^uint64(0), Source: SourceRead, Step: a.s.Index, How: "value written by wrmsr (read from edx:eax)"})
	a.note(KindMSR, "wrmsr: %s (%#x) := %#x (value read from edx:eax)%s", name, idx, val, a.msrMeaning(idx, val))
	for _, m := range stubMSRs {
		if m.index == idx {
			a.explained(m.reg)
			mask := ^uint64(0)
			if idx == x86.MSREFER {
				mask &^= uint64(x86.EFERLMA) // read-only, set by the CPU
			}
			a.expectMasked(KindMSR, m.reg, val, mask, "the value written", "WRMSR to "+name+" sets "+m.reg.String())
		}
	}
	switch idx {
	case x86.MSRSpecCtrl:
		a.note(KindMitigation, "IA32_SPEC_CTRL := %#x: %s", val, specCtrl(val))
	case x86.MSRPredCmd:
		if val&1 != 0 {
			a.note(KindMitigation, "IA32_PRED_CMD.IBPB: indirect branch prediction barrier (branch targets learnt before cannot steer later indirect branches)")
		}
	}
}

// msrMeaning adds a few words on what a value means.
func (a *annotator) msrMeaning(idx uint32, v uint64) string {
	switch idx {
	case x86.MSRLSTAR, x86.MSRCSTAR, x86.MSRSysenterEIP:
		return ": the system-call entry point " + a.sym(v)
	case x86.MSRSTAR:
		return fmt.Sprintf(": syscall CS/SS %#x/%#x, sysret base %#x (CS %#x, SS %#x)", v>>32&0xfffc, v>>32&0xffff+8, v>>48&0xffff, (v>>48+16)&0xffff|3, (v>>48+8)&0xffff|3)
	case x86.MSRFMASK:
		return ": syscall clears " + flagList(v)
	case x86.MSREFER:
		return " (" + x86.EFERFlags(v).String() + ")"
	case x86.MSRKernelGSBase, x86.MSRGSBase:
		if pa, name := a.isPerCPU(v); pa {
			return " (" + name + ")"
		}
	}
	return ""
}

// specCtrl names the bits of IA32_SPEC_CTRL.
func specCtrl(v uint64) string {
	var on []string
	for _, b := range []struct {
		bit  uint64
		name string
	}{{1, "IBRS"}, {2, "STIBP"}, {4, "SSBD"}} {
		if v&b.bit != 0 {
			on = append(on, b.name)
		}
	}
	if len(on) == 0 {
		return "IBRS, STIBP and SSBD off"
	}
	return strings.Join(on, ", ") + " on"
}

// rdmsr explains RDMSR: EDX:EAX receives the MSR named by ECX.
func (a *annotator) rdmsr() {
	if c := cpl(a.b); c > 0 {
		a.add(KindPrivilege, Finding, "rdmsr at CPL %d should raise #GP: it is a ring-0 instruction", c)
	}
	idx, _, idxOK, _ := msrOperands(a.b)
	_, val, _, valOK := msrOperands(a.a)
	if !idxOK || !valOK {
		a.note(KindCheck, "rdmsr: ECX, EAX or EDX unknown")
		return
	}
	a.explained(x86.RAX, x86.RDX)
	name := x86.MSRName(idx)
	ax, dx := a.a.Val(x86.RAX), a.a.Val(x86.RDX)
	if ax>>32 != 0 || dx>>32 != 0 {
		a.add(KindRegister, Finding, "rdmsr left rax %#x, rdx %#x: it must clear their upper halves", ax, dx)
	}
	a.k.Learn(MSR{Index: idx, Value: val, Known: ^uint64(0), Source: SourceRead, Step: a.s.Index, How: "result of the guest's rdmsr (edx:eax)"})
	a.note(KindMSR, "rdmsr: %s (%#x) = %#x (read into edx:eax)%s", name, idx, val, a.msrMeaning(idx, val))
	for _, m := range stubMSRs {
		if m.index == idx {
			if v, ok := a.b.Get(m.reg); ok {
				a.add(KindMSR, verdict(v == val), "the stub showed %s = %#x before", m.reg, v)
			}
		}
	}
}

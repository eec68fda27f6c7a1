package annotate

import (
	"fmt"

	"github.com/sctrace/sctrace/x86"
)

// compatEntry says, on an entry from user mode, that the caller ran in
// compatibility mode: 32-bit code (a CS whose L bit is clear, such as
// Linux's __USER32_CS) under a 64-bit kernel, and what that changes for
// the instruction that entered. The rules are the SDM's (SYSCALL, SYSENTER,
// "64-bit mode" interrupt delivery) and AMD's APM for SYSCALL's CSTAR.
func (a *annotator) compatEntry(how string) {
	if !a.compatMode(a.b) {
		return
	}
	cs, _ := a.b.Get(x86.CS)
	mode := fmt.Sprintf("from compatibility mode (cs = %s, a code segment with L = 0: 32-bit code under a 64-bit kernel)", x86.Selector(cs))
	switch how {
	case "syscall":
		a.note(KindControl, "syscall %s: the CPU takes the entry point from CSTAR, not LSTAR, and enters 64-bit mode with CS from STAR[47:32]; RCX gets the zero-extended EIP of the next instruction. Only AMD CPUs (and QEMU with an AMD vendor) allow it: Intel's raise #UD on syscall outside 64-bit mode", mode)
	case "sysenter":
		a.note(KindControl, "sysenter %s: in IA-32e mode the CPU loads all 64 bits of SYSENTER_EIP and SYSENTER_ESP and a 64-bit CS (L = 1) from SYSENTER_CS, so the kernel runs in 64-bit mode. Only Intel CPUs (and QEMU with an Intel vendor) allow it in long mode: AMD's raise #UD", mode)
	default:
		a.note(KindFrame, "%s %s: the 64-bit IDT gate puts the CPU in 64-bit mode, and the frame is the 64-bit one (SS, RSP, RFLAGS, CS, RIP, 8 bytes each) with the 32-bit ESP and EIP zero-extended", how, mode)
	}
}

// compatLanding explains a 32-bit SYSRET that returns elsewhere than after
// the entering instruction: Linux returns a 32-bit call made by sysenter
// or syscall to the vDSO's int80_landing_pad (do_fast_syscall_32 sets
// pt_regs->ip to it, since sysenter saves no return address), where
// __kernel_vsyscall pops the EBP, EDX and ECX it pushed and returns.
func (a *annotator) compatLanding(rip uint64) {
	e := a.k.Entry
	if e == nil || a.op.wide || e.ReturnRIP == rip || (e.Mechanism != "sysenter" && e.Mechanism != "syscall") {
		return
	}
	a.note(KindControl, "rip = %#x, not the instruction after the %s of step %d: Linux returns a 32-bit call made by sysenter or syscall to the 32-bit vDSO's int80_landing_pad (do_fast_syscall_32 sets pt_regs->ip to it; sysenter saves no return address), where __kernel_vsyscall pops the EBP, EDX and ECX it pushed and returns to its caller", rip, e.Mechanism, e.Step)
}

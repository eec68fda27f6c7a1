// Package mechanism names the ways into the kernel that sctrace traces and
// times: syscall, int $0x80, sysenter, a far call through a call gate, ud2
// used as a system call, and the vDSO read that enters no kernel at all.
// The recorder, the teaching kernel, the Linux /init and the annotator all
// take the names, the labels and the spellings from here.
package mechanism

import (
	"fmt"
	"strings"

	"golang.org/x/arch/x86/x86asm"
)

// Mechanism names a way into the kernel, as the command line, the trace
// header and the output spell it.
type Mechanism string

// The mechanisms sctrace knows. Vdso enters no kernel at all: it is the
// baseline of reading kernel-provided data from user mode.
const (
	Syscall  Mechanism = "syscall"
	Int80    Mechanism = "int80"
	Sysenter Mechanism = "sysenter"
	CallGate Mechanism = "callgate"
	UD2      Mechanism = "ud2"
	Vdso     Mechanism = "vdso"
)

// All lists every mechanism, in the order the teaching kernel's trace mode
// calls them.
var All = []Mechanism{Syscall, Int80, Sysenter, CallGate, UD2, Vdso}

// Parse checks a mechanism name; "" and "any" mean any and return "".
func Parse(s string) (Mechanism, error) {
	if s == "" || s == "any" {
		return "", nil
	}
	for _, m := range All {
		if string(m) == s {
			return m, nil
		}
	}
	names := Names()
	return "", fmt.Errorf("unknown mechanism %q (want %s or %s)", s, strings.Join(names[:len(names)-1], ", "), names[len(names)-1])
}

// Names returns the names of All, as the command line accepts them.
func Names() []string {
	names := make([]string, len(All))
	for i, m := range All {
		names[i] = string(m)
	}
	return names
}

// stem is the middle of the mechanism's labels in the guest programs.
func (m Mechanism) stem() string {
	if m == Vdso {
		return "vdso_read"
	}
	return string(m)
}

// UserLabel is the symbol the guest programs sctrace ships (the teaching
// kernel and Linux's /init) put on the user instruction that enters the
// kernel by m, e.g. user_syscall_insn; for the vDSO baseline, the user
// read of the kernel-provided page, user_vdso_read_insn.
func (m Mechanism) UserLabel() string { return "user_" + m.stem() + "_insn" }

// UserReturnLabel is the symbol on the user instruction right after the one
// UserLabel marks, e.g. user_syscall_ret.
func (m Mechanism) UserReturnLabel() string { return "user_" + m.stem() + "_ret" }

// Instruction spells the instruction that enters the kernel by m as
// annotations name it: "syscall", "int $0x80", "sysenter", "call gate",
// "ud2"; "" for the vDSO read, which enters nothing.
func (m Mechanism) Instruction() string {
	switch m {
	case Syscall, Sysenter, UD2:
		return string(m)
	case Int80:
		return "int $0x80"
	case CallGate:
		return "call gate"
	}
	return ""
}

// Classify says which mechanism an instruction enters the kernel by, or ""
// for an instruction that does not (ud2 counts only when asked, since it is
// an ordinary fault elsewhere). Of the software interrupts only int $0x80
// is the int80 mechanism: int3 is a breakpoint, int1 (icebp) a debug trap,
// and another int n is a vector of its own.
func Classify(inst x86asm.Inst, withUD2 bool) Mechanism {
	switch inst.Op {
	case x86asm.SYSCALL:
		return Syscall
	case x86asm.INT:
		if imm, ok := inst.Args[0].(x86asm.Imm); ok && imm == 0x80 {
			return Int80
		}
	case x86asm.SYSENTER:
		return Sysenter
	case x86asm.LCALL:
		return CallGate
	case x86asm.UD2:
		if withUD2 {
			return UD2
		}
	}
	return ""
}

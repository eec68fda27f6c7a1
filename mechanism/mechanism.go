// Package mechanism names the ways into the kernel that sctrace traces and
// times: syscall, int $0x80, sysenter, a far call through a call gate, ud2
// used as a system call, the vDSO read that enters no kernel at all, and
// four entries that are no system call: a page fault on a page not yet
// mapped, a timer interrupt arriving in user mode, a breakpoint (int3) and
// a general-protection fault raised by a user instruction; and, on the
// teaching kernel, the same int $0x80, sysenter and syscall made from
// 32-bit code (compatibility mode).
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
// baseline of reading kernel-provided data from user mode. PageFault and
// IRQ are not system calls: the first is a user store to a page that is
// not mapped yet (#PF, vector 14), which the kernel maps before the store
// runs again; the second an external interrupt (the timer) taken while
// user code runs. Int3 and GPFault are exceptions a user instruction
// raises: int3's #BP (vector 3, a trap: the CPU saves the address of the
// next instruction) and #GP (vector 13, a fault: it saves the address of
// the instruction itself), raised here by a privileged instruction at
// CPL 3. Linux answers both with a signal (SIGTRAP, SIGSEGV) delivered on
// the way back to user mode; the teaching kernel's handlers return to the
// instruction after.
const (
	Syscall   Mechanism = "syscall"
	Int80     Mechanism = "int80"
	Sysenter  Mechanism = "sysenter"
	CallGate  Mechanism = "callgate"
	UD2       Mechanism = "ud2"
	Vdso      Mechanism = "vdso"
	PageFault Mechanism = "pagefault"
	IRQ       Mechanism = "irq"
	Int3      Mechanism = "int3"
	GPFault   Mechanism = "gpfault"
)

// The teaching kernel's compatibility-mode mechanisms: its user program
// switches to a 32-bit code segment (L = 0, D = 1) and makes the call from
// there by int $0x80, sysenter or syscall. On Linux a 32-bit program is
// itself in compatibility mode, so its calls are traced under the plain
// names (-m int80, sysenter or syscall with an i386 --exec program).
const (
	Int80Compat    Mechanism = "int80-compat"
	SysenterCompat Mechanism = "sysenter-compat"
	SyscallCompat  Mechanism = "syscall-compat"
)

// All lists every mechanism, in the order the teaching kernel's trace mode
// calls them.
var All = []Mechanism{Syscall, Int80, Sysenter, CallGate, UD2, Vdso, PageFault, IRQ, Int80Compat, SysenterCompat, SyscallCompat, Int3, GPFault}

// Compat reports whether m is made from compatibility mode: 32-bit user
// code under a 64-bit kernel.
func (m Mechanism) Compat() bool {
	return m == Int80Compat || m == SysenterCompat || m == SyscallCompat
}

// Native returns the instruction's mechanism whatever the mode it is made
// from: int80 for int80-compat, and so on; m itself otherwise.
func (m Mechanism) Native() Mechanism {
	if m.Compat() {
		return Mechanism(strings.TrimSuffix(string(m), "-compat"))
	}
	return m
}

// SystemCall reports whether m is a way to make a system call (or, for the
// vDSO, to get a system call's answer without one): every mechanism but
// the exceptions and the interrupt (see Event), which enter the kernel
// without a system call number.
func (m Mechanism) SystemCall() bool { return !m.Event() }

// Event reports whether the kernel is entered by an exception or an
// interrupt delivered through the IDT rather than by a system call: a page
// fault raised by an ordinary memory access, an external interrupt
// arriving between two instructions, a breakpoint or a general-protection
// fault. None of them goes back to the instruction after a system call:
// a page fault and an interrupt return to the interrupted instruction,
// which then runs; a breakpoint or a #GP on Linux to a signal handler.
func (m Mechanism) Event() bool {
	return m == PageFault || m == IRQ || m == Int3 || m == GPFault
}

// Signal reports whether Linux answers an entry by m from user mode with a
// signal to the program: SIGTRAP for int3, SIGSEGV for a #GP. The return
// to user mode then goes to the program's handler, not to where it was.
func (m Mechanism) Signal() bool { return m == Int3 || m == GPFault }

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
	return strings.ReplaceAll(string(m), "-", "_")
}

// UserLabel is the symbol the guest programs sctrace ships (the teaching
// kernel and Linux's /init) put on the user instruction that enters the
// kernel by m, e.g. user_syscall_insn; for the vDSO baseline, the user
// read of the kernel-provided page, user_vdso_read_insn; from
// compatibility mode, user_int80_compat_insn and the like; for a page fault,
// the store that faults, user_pagefault_insn; for an interrupt, the first
// instruction of the loop the program waits in, user_irq_insn.
func (m Mechanism) UserLabel() string { return "user_" + m.stem() + "_insn" }

// UserReturnLabel is the symbol on the user instruction right after the one
// UserLabel marks, e.g. user_syscall_ret.
func (m Mechanism) UserReturnLabel() string { return "user_" + m.stem() + "_ret" }

// Instruction spells the instruction that enters the kernel by m as
// annotations name it: "syscall", "int $0x80", "sysenter", "call gate",
// "ud2", "int3" (the same from compatibility mode); "" for the vDSO read,
// which enters nothing, and for a page fault, a general-protection fault
// or an interrupt, which many instructions may meet.
func (m Mechanism) Instruction() string {
	switch m = m.Native(); m {
	case Syscall, Sysenter, UD2, Int3:
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
// an ordinary fault elsewhere). Of the software interrupts int $0x80 is
// the int80 mechanism and the one-byte int3 (0xcc) the int3 mechanism;
// int1 (icebp) is a debug trap, and another int n (cd 03 included) a
// vector of its own. A #GP is not classified: many instructions raise it.
func Classify(inst x86asm.Inst, withUD2 bool) Mechanism {
	switch inst.Op {
	case x86asm.SYSCALL:
		return Syscall
	case x86asm.INT:
		imm, ok := inst.Args[0].(x86asm.Imm)
		switch {
		case ok && imm == 0x80:
			return Int80
		case ok && imm == 3 && inst.Len == 1:
			return Int3
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

// gloss says in a few words what the entries that are no system call are,
// for the command line's help.
var gloss = map[Mechanism]string{
	PageFault: "a demand page fault",
	IRQ:       "a timer interrupt from user mode",
	Int3:      "a breakpoint trap",
	GPFault:   "a general-protection fault from user mode",
}

// Help lists every mechanism of All for a command's -m help, grouped: the
// system calls (and the vDSO read), the entries that are no system call,
// each with a few words, and the calls made from compatibility mode.
func Help() string {
	var calls, events, compat []string
	for _, m := range All {
		switch {
		case m.Compat():
			compat = append(compat, string(m))
		case m.Event():
			e := string(m)
			if g := gloss[m]; g != "" {
				e += " (" + g + ")"
			}
			events = append(events, e)
		default:
			calls = append(calls, string(m))
		}
	}
	s := strings.Join(calls, ", ")
	if len(events) > 0 {
		s += ", the entries that are no system call: " + and(events)
	}
	if len(compat) > 0 {
		s += ",\nand the teaching kernel's calls from 32-bit code: " + and(compat)
	}
	return s
}

// and joins a list as prose: "a", "a and b", "a, b and c".
func and(l []string) string {
	if len(l) < 2 {
		return strings.Join(l, "")
	}
	return strings.Join(l[:len(l)-1], ", ") + " and " + l[len(l)-1]
}

// Entry names in prose what enters the kernel by m, with its article, as
// in "stopped before the system call": "the system call" for the ways to
// make one, "the vDSO read" for the vDSO, and for the entries that are no
// system call "the page fault", "the timer interrupt", "the breakpoint
// (int3)" and "the general-protection fault".
func (m Mechanism) Entry() string {
	switch m {
	case Vdso:
		return "the vDSO read"
	case PageFault:
		return "the page fault"
	case IRQ:
		return "the timer interrupt"
	case Int3:
		return "the breakpoint (int3)"
	case GPFault:
		return "the general-protection fault"
	}
	return "the system call"
}

// A returns m's name after the indefinite article it takes read aloud:
// "an int80", "an irq", "a syscall", "a ud2".
func (m Mechanism) A() string {
	if s := string(m); s != "" && strings.ContainsRune("aeio", rune(s[0])) {
		return "an " + s
	}
	return "a " + string(m)
}

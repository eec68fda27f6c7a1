// Package x86 holds sctrace's typed view of an x86-64 CPU: a State
// snapshot of the registers QEMU's gdbstub exposes; RFLAGS, CR0, CR3, CR4
// and EFER with their bits; segment selectors and descriptors, gate
// descriptors and the 64-bit TSS, decoded from the bytes of the GDT, the
// IDT and TR's base; the MSR numbers; which half of the address space an
// address lies in; and the extra state `monitor info registers` prints.
// It does no I/O: the live connection is package target's.
package x86

import (
	"fmt"
	"strings"
)

// Reg names one register of a State.
type Reg uint8

// The registers a State holds, in the order QEMU's i386-64bit.xml lists them.
const (
	RAX Reg = iota
	RBX
	RCX
	RDX
	RSI
	RDI
	RBP
	RSP
	R8
	R9
	R10
	R11
	R12
	R13
	R14
	R15
	RIP
	RFLAGS
	CS
	SS
	DS
	ES
	FS
	GS
	FSBase
	GSBase
	KernelGSBase
	CR0
	CR2
	CR3
	CR4
	CR8
	EFER
	NumRegs // the number of registers in a State
)

// regNames are the names QEMU's target description uses, which are also the
// names sctrace shows and stores in trace files.
var regNames = [NumRegs]string{
	"rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
	"r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
	"rip", "eflags", "cs", "ss", "ds", "es", "fs", "gs",
	"fs_base", "gs_base", "k_gs_base",
	"cr0", "cr2", "cr3", "cr4", "cr8", "efer",
}

// GPRs lists the sixteen general-purpose registers in encoding order
// (rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8..r15 are reordered here to the
// conventional display order rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8..r15).
var GPRs = []Reg{RAX, RBX, RCX, RDX, RSI, RDI, RBP, RSP, R8, R9, R10, R11, R12, R13, R14, R15}

// Segments lists the segment selector registers.
var Segments = []Reg{CS, SS, DS, ES, FS, GS}

// String returns the register's name as QEMU's target description spells it
// ("eflags", "k_gs_base").
func (r Reg) String() string {
	if r < NumRegs {
		return regNames[r]
	}
	return fmt.Sprintf("reg%d", uint8(r))
}

// ParseReg looks a register up by name. It accepts the target-description
// names and the common aliases rflags and kernel_gs_base.
func ParseReg(name string) (Reg, bool) {
	name = strings.ToLower(name)
	switch name {
	case "rflags":
		return RFLAGS, true
	case "kernel_gs_base", "kernelgsbase":
		return KernelGSBase, true
	}
	for i, n := range regNames {
		if n == name {
			return Reg(i), true
		}
	}
	return 0, false
}

// State is a snapshot of the CPU registers at one stop. A register the stub
// did not give (or gave as unknown) is not Known, and reads as zero only
// through Val, which callers use once they have checked Known.
type State struct {
	R     [NumRegs]uint64
	Known uint64 // bit r set: R[r] was read from the target
	// Sys holds what `monitor info registers` adds (CPL, TR, GDTR, IDTR,
	// segment caches); nil when it was not read at this stop.
	Sys *SysRegs
}

// Get returns a register's value and whether it is known.
func (s *State) Get(r Reg) (uint64, bool) {
	return s.R[r], s.Known&(1<<r) != 0
}

// Val returns a register's value, zero when unknown.
func (s *State) Val(r Reg) uint64 { return s.R[r] }

// Set stores a register's value and marks it known.
func (s *State) Set(r Reg, v uint64) {
	s.R[r] = v
	s.Known |= 1 << r
}

// Has reports whether a register is known.
func (s *State) Has(r Reg) bool { return s.Known&(1<<r) != 0 }

// CPL returns the current privilege level: the RPL bits of CS, which in
// 64-bit and protected mode equal the CPL. It is -1 when CS is unknown.
func (s *State) CPL() int {
	cs, ok := s.Get(CS)
	if !ok {
		return -1
	}
	return int(cs & 3)
}

// User reports whether the CPU is at CPL 3.
func (s *State) User() bool { return s.CPL() == 3 }

// Changed returns the registers whose known values differ between s and
// next, and those that became known or unknown.
func (s *State) Changed(next *State) []Reg {
	var out []Reg
	for r := Reg(0); r < NumRegs; r++ {
		a, aok := s.Get(r)
		b, bok := next.Get(r)
		if aok != bok || a != b {
			out = append(out, r)
		}
	}
	return out
}

// ActiveGSBase returns the GS base in use now and the one parked in
// IA32_KERNEL_GS_BASE, which SWAPGS exchanges.
func (s *State) ActiveGSBase() (active, parked uint64) {
	return s.R[GSBase], s.R[KernelGSBase]
}

// KernelGS returns the kernel's GS base (its per-CPU base) from the state:
// whichever of GS base and the parked IA32_KERNEL_GS_BASE is a kernel-half
// address, since swapgs exchanges the two on the way in and out.
func (s *State) KernelGS() (uint64, bool) {
	for _, r := range []Reg{GSBase, KernelGSBase} {
		if v, ok := s.Get(r); ok && CanonicalKernel(v) {
			return v, true
		}
	}
	return 0, false
}

package mechanism

import (
	"fmt"
	"strings"
	"testing"

	"golang.org/x/arch/x86/x86asm"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		code []byte
		ud2  bool
		want Mechanism
	}{
		{"syscall", []byte{0x0f, 0x05}, false, Syscall},
		{"int $0x80", []byte{0xcd, 0x80}, false, Int80},
		{"int3, the one-byte breakpoint", []byte{0xcc}, false, Int3},
		{"int $0x3 is a vector of its own", []byte{0xcd, 0x03}, false, ""},
		{"hlt raises #GP at CPL 3 but is not classified", []byte{0xf4}, false, ""},
		{"int1 (icebp) is a debug trap", []byte{0xf1}, false, ""},
		{"int $0x81 is another vector", []byte{0xcd, 0x81}, false, ""},
		{"int $0x0 is another vector", []byte{0xcd, 0x00}, false, ""},
		{"sysenter", []byte{0x0f, 0x34}, false, Sysenter},
		{"lcall through a gate", []byte{0x48, 0xff, 0x1c, 0x25, 0, 0, 0x40, 0}, false, CallGate},
		{"near call", []byte{0xe8, 0, 0, 0, 0}, false, ""},
		{"ud2 when asked", []byte{0x0f, 0x0b}, true, UD2},
		{"ud2 otherwise", []byte{0x0f, 0x0b}, false, ""},
		{"sysretq leaves the kernel", []byte{0x48, 0x0f, 0x07}, false, ""},
		{"nop", []byte{0x90}, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inst, err := x86asm.Decode(tt.code, 64)
			if err != nil {
				t.Fatal(err)
			}
			if got := Classify(inst, tt.ud2); got != tt.want {
				t.Errorf("Classify(% x, %v) = %q, want %q", tt.code, tt.ud2, got, tt.want)
			}
		})
	}
}

func TestParse(t *testing.T) {
	for _, m := range All {
		if got, err := Parse(string(m)); err != nil || got != m {
			t.Errorf("Parse(%q) = %q, %v", m, got, err)
		}
	}
	for _, s := range []string{"", "any"} {
		if got, err := Parse(s); err != nil || got != "" {
			t.Errorf("Parse(%q) = %q, %v; want any", s, got, err)
		}
	}
	_, err := Parse("sysret")
	if want := `unknown mechanism "sysret" (want syscall, int80, sysenter, callgate, ud2, vdso, pagefault, irq, int80-compat, sysenter-compat, syscall-compat, int3 or gpfault)`; err == nil || err.Error() != want {
		t.Errorf("Parse(sysret) error = %v, want %s", err, want)
	}
}

func TestLabels(t *testing.T) {
	tests := []struct {
		m                 Mechanism
		insn, ret, spoken string
	}{
		{Syscall, "user_syscall_insn", "user_syscall_ret", "syscall"},
		{Int80, "user_int80_insn", "user_int80_ret", fmt.Sprintf("int $%#x", 0x80)},
		{Sysenter, "user_sysenter_insn", "user_sysenter_ret", "sysenter"},
		{CallGate, "user_callgate_insn", "user_callgate_ret", "call gate"},
		{UD2, "user_ud2_insn", "user_ud2_ret", "ud2"},
		{Vdso, "user_vdso_read_insn", "user_vdso_read_ret", ""},
		{PageFault, "user_pagefault_insn", "user_pagefault_ret", ""},
		{IRQ, "user_irq_insn", "user_irq_ret", ""},
		{Int80Compat, "user_int80_compat_insn", "user_int80_compat_ret", "int $0x80"},
		{SysenterCompat, "user_sysenter_compat_insn", "user_sysenter_compat_ret", "sysenter"},
		{SyscallCompat, "user_syscall_compat_insn", "user_syscall_compat_ret", "syscall"},
		{Int3, "user_int3_insn", "user_int3_ret", "int3"},
		{GPFault, "user_gpfault_insn", "user_gpfault_ret", ""},
	}
	for _, tt := range tests {
		if got := tt.m.UserLabel(); got != tt.insn {
			t.Errorf("%s.UserLabel() = %q, want %q", tt.m, got, tt.insn)
		}
		if got := tt.m.UserReturnLabel(); got != tt.ret {
			t.Errorf("%s.UserReturnLabel() = %q, want %q", tt.m, got, tt.ret)
		}
		if got := tt.m.Instruction(); got != tt.spoken {
			t.Errorf("%s.Instruction() = %q, want %q", tt.m, got, tt.spoken)
		}
	}
}

func TestKinds(t *testing.T) {
	for _, m := range All {
		event := m == PageFault || m == IRQ || m == Int3 || m == GPFault
		if m.Event() != event || m.SystemCall() == event {
			t.Errorf("%s: Event() = %v, SystemCall() = %v; want %v, %v", m, m.Event(), m.SystemCall(), event, !event)
		}
		// Linux sends SIGTRAP for int3 and SIGSEGV for a user #GP
		// (arch/x86/kernel/traps.c: do_int3_user, exc_general_protection).
		if signal := m == Int3 || m == GPFault; m.Signal() != signal {
			t.Errorf("%s: Signal() = %v, want %v", m, m.Signal(), signal)
		}
	}
}

func TestCompat(t *testing.T) {
	native := map[Mechanism]Mechanism{Int80Compat: Int80, SysenterCompat: Sysenter, SyscallCompat: Syscall}
	for _, m := range All {
		want, compat := native[m]
		if !compat {
			want = m
		}
		if m.Compat() != compat || m.Native() != want {
			t.Errorf("%s: Compat() = %v, Native() = %s; want %v, %s", m, m.Compat(), m.Native(), compat, want)
		}
	}
}

// TestEntryAndArticle checks the prose each mechanism gets: every entry
// that is no system call has a phrase of its own (not "the system call"),
// the system calls share that one, and a name starting with a vowel sound
// takes "an".
func TestEntryAndArticle(t *testing.T) {
	for _, m := range All {
		got := m.Entry()
		switch {
		case m.Event() && got == "the system call":
			t.Errorf("%s.Entry() = %q, but %s is no system call", m, got, m)
		case !m.Event() && m != Vdso && got != "the system call":
			t.Errorf("%s.Entry() = %q, want the system call", m, got)
		case !strings.HasPrefix(got, "the "):
			t.Errorf("%s.Entry() = %q, want a phrase starting with \"the \"", m, got)
		}
	}
	for _, tt := range []struct {
		m    Mechanism
		want string
	}{
		{IRQ, "an irq"}, {Int80, "an int80"}, {Int3, "an int3"}, {Syscall, "a syscall"},
		{UD2, "a ud2"}, {PageFault, "a pagefault"}, {Int80Compat, "an int80-compat"},
	} {
		if got := tt.m.A(); got != tt.want {
			t.Errorf("%s.A() = %q, want %q", tt.m, got, tt.want)
		}
	}
}

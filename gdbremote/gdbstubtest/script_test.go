package gdbstubtest

import (
	"os"
	"strings"
	"testing"
)

// TestInfoRegistersLong sets the stub to the state of a capture of QEMU
// 7.2's `info registers` (a Linux guest at its user syscall, in
// x86/testdata) and checks the stub prints the same text.
func TestInfoRegistersLong(t *testing.T) {
	want, err := os.ReadFile("../../x86/testdata/info-registers-long.txt")
	if err != nil {
		t.Fatal(err)
	}
	s := New(t)
	for name, v := range map[string]uint64{
		"rax": 0x27, "rcx": 0x401005, "rsp": 0x7fffffffef58, "r11": 0x246, "rdx": 0,
		"rip": 0x401003, "eflags": 0x246, "cs": 0x33, "ss": 0x2b, "ds": 0x2b, "es": 0x2b,
		"cr0": 0x80050033, "cr3": 0x110a000, "cr4": 0x3506f0, "efer": 0xd01,
	} {
		s.SetRegister(name, v)
	}
	s.SetTables(Tables{GDTBase: 0xfffffe0000001000, GDTLimit: 0x7f, IDTBase: 0xfffffe0000000000, IDTLimit: 0xfff,
		TRSel: 0x40, TRBase: 0xfffffe0000003000, TRLimit: 0x4087})
	s.mu.Lock()
	got := s.infoRegisters()
	s.mu.Unlock()
	gl := strings.Split(strings.TrimRight(strings.ReplaceAll(got, "\r\n", "\n"), "\n"), "\n")
	wl := strings.Split(strings.TrimRight(string(want), "\n"), "\n")
	if len(gl) != len(wl) {
		t.Fatalf("%d lines, want %d:\n%s", len(gl), len(wl), got)
	}
	for i := range wl {
		if gl[i] != wl[i] {
			t.Errorf("line %d:\n got %q\nwant %q", i+1, gl[i], wl[i])
		}
	}
}

// TestScript walks a step and a continue through scripted stops; with the
// script used up, a step adds one to rip again.
func TestScript(t *testing.T) {
	s := New(t)
	s.Script(Stop{Regs: map[string]uint64{"rip": 0x1000, "rsp": 0x8000}, Mem: map[uint64][]byte{0x8000: {1, 2}}}, Stop{})
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.nextStop() || s.u64("rip") != 0x1000 || s.u64("rsp") != 0x8000 {
		t.Errorf("first stop: rip %#x rsp %#x", s.u64("rip"), s.u64("rsp"))
	}
	if b, ok := s.readMem(0x8000, 2); !ok || b[0] != 1 || b[1] != 2 {
		t.Errorf("memory at 0x8000: %x %v", b, ok)
	}
	if !s.nextStop() || s.u64("rip") != 0x1000 {
		t.Errorf("the empty stop moved rip to %#x", s.u64("rip"))
	}
	if s.nextStop() {
		t.Error("a stop past the end of the script")
	}
}

package main

import (
	"bytes"
	"debug/elf"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/fixtures/linuxinit"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/syscalls"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// TestRunLinuxExecve boots Linux with /init looping on execve and checks
// that `run linux --init execve --trace` starts its record at the execve's
// syscall instruction, with RAX holding execve's number from the x86-64 ABI
// list, and steps into the kernel's entry from there (the budget keeps the
// record short; the whole execve is tens of thousands of instructions).
func TestRunLinuxExecve(t *testing.T) {
	kernel := testenv.LinuxKernel(t, "6.1")
	saved := filepath.Join(t.TempDir(), "execve.json")
	out, err := run(t, "run", "linux", "--kernel", kernel, "--accel", "tcg", "--init", "execve", "--trace", "--budget", "50", "--format", "json", "--out", saved)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	tr, err := trace.ReadFile(saved)
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.NewFile(bytes.NewReader(linuxinit.ELF))
	if err != nil {
		t.Fatal(err)
	}
	syms, _ := f.Symbols()
	var site uint64
	for _, s := range syms {
		if s.Name == linuxinit.ExecveInsn {
			site = s.Value
		}
	}
	execve, _ := syscalls.ABI().ByName("execve")
	if tr.Len() < 2 {
		t.Fatalf("%d steps recorded", tr.Len())
	}
	first := tr.Step(0)
	if uint64(first.RIP) != site || first.Op != x86asm.SYSCALL || first.CPL != 3 {
		t.Errorf("step 0 is %s at %#x (CPL %d), want the syscall at %s (%#x)", first.Mnemonic, uint64(first.RIP), first.CPL, linuxinit.ExecveInsn, site)
	}
	if got := first.Regs.Val(x86.RAX); got != uint64(execve.Nr) {
		t.Errorf("RAX = %d at the syscall, want execve's %d", got, execve.Nr)
	}
	if sym := tr.Step(1).Symbol; !strings.HasPrefix(sym, "entry_SYSCALL_64") {
		t.Errorf("step 1 is at %q, want entry_SYSCALL_64", sym)
	}
	if tr.Header.Stop != string(trace.StopBudget) {
		t.Errorf("stopped: %q, want the budget (execve is longer than 50 instructions)", tr.Header.Stop)
	}
}

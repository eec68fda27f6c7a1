package main

import (
	"bytes"
	"context"
	"debug/elf"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/fixtures/linuxinit"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/qemu"
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

// TestTraceAttachSyscall starts QEMU itself with Linux and sctrace's /init
// reading a file in a loop (lseek back to 0, then read), attaches with
// `trace --attach --syscall lseek`, and checks that the record starts at
// the lseek's syscall instruction, one no symbol marks (found through the
// kernel entry), with the call named from the kernel's own table.
func TestTraceAttachSyscall(t *testing.T) {
	kernel := testenv.LinuxKernel(t, "6.1")
	dir := t.TempDir()
	img, err := linuxinit.Initramfs()
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(dir, "initramfs.cpio")
	if err := os.WriteFile(initrd, img, 0o600); err != nil {
		t.Fatal(err)
	}
	var console qemu.Output
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	inst, err := qemu.Start(ctx, qemu.Config{Kernel: kernel, Initrd: initrd, Append: "console=ttyS0 nokaslr quiet no_timer_check -- " + linuxinit.Read,
		Accel: "tcg", Memory: "256M", GDB: true, Serial: &console})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Stop()
	testenv.WaitOutput(t, console.String, linuxinit.Banner, 120*time.Second)
	saved := filepath.Join(dir, "lseek.json")
	out, err := run(t, "trace", "--attach", inst.GDBAddr, "--syscall", "lseek", "--format", "json", "--out", saved)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	tr, err := trace.ReadFile(saved)
	if err != nil {
		t.Fatal(err)
	}
	lseek, _ := syscalls.ABI().ByName("lseek")
	h := tr.Header.Syscall
	if h == nil || h.Nr != lseek.Nr || h.Name != "lseek" || !strings.Contains(h.Table, "sys_call_table") {
		t.Fatalf("header names %+v, want lseek (%d) from the kernel's sys_call_table", h, lseek.Nr)
	}
	first := tr.Step(0)
	if first.Op != x86asm.SYSCALL || first.CPL != 3 || first.Regs.Val(x86.RAX) != uint64(lseek.Nr) {
		t.Errorf("step 0 is %s at CPL %d with RAX %d, want the user syscall with lseek's number", first.Mnemonic, first.CPL, first.Regs.Val(x86.RAX))
	}
	if tr.Header.Stop != string(trace.StopUser) {
		t.Errorf("stopped: %s", tr.Header.Stop)
	}
}

// TestRunLinuxSigreturn checks that `run linux --syscall rt_sigreturn`
// picks /init's int3 loop (whose SIGTRAP handler returns through the
// call) and records it: from the restorer's syscall (init_sigreturn_insn,
// from /init's ELF) with RAX holding rt_sigreturn's number from the x86-64
// ABI list, named in the header, back to CPL 3 at the instruction after
// the int3 (init_int3_ret), with no finding.
func TestRunLinuxSigreturn(t *testing.T) {
	kernel := testenv.LinuxKernel(t, "6.1")
	saved := filepath.Join(t.TempDir(), "sigreturn.json")
	out, err := run(t, "run", "linux", "--kernel", kernel, "--accel", "tcg", "--syscall", "rt_sigreturn", "--trace", "--format", "json", "--out", saved)
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
	addr := map[string]uint64{}
	for _, s := range syms {
		addr[s.Name] = s.Value
	}
	call, _ := syscalls.ABI().ByName(linuxinit.Sigreturn)
	if tr.Len() < 2 {
		t.Fatalf("%d steps recorded", tr.Len())
	}
	first := tr.Step(0)
	if uint64(first.RIP) != addr[linuxinit.SigreturnInsn] || first.Op != x86asm.SYSCALL || first.Regs.Val(x86.RAX) != uint64(call.Nr) {
		t.Errorf("step 0 is %s at %#x with rax %d, want the syscall at %s (%#x) with rax %d",
			first.Mnemonic, uint64(first.RIP), first.Regs.Val(x86.RAX), linuxinit.SigreturnInsn, addr[linuxinit.SigreturnInsn], call.Nr)
	}
	if c := tr.Header.Syscall; c == nil || c.Name != linuxinit.Sigreturn {
		t.Errorf("header names the call %+v, want %s", c, linuxinit.Sigreturn)
	}
	if tr.Header.Stop != string(trace.StopUser) || tr.Final.CPL() != 3 || tr.Final.Val(x86.RIP) != addr[linuxinit.Int3Ret] {
		t.Errorf("stopped %q at %#x CPL %d, want back in user mode at %s %#x", tr.Header.Stop, tr.Final.Val(x86.RIP), tr.Final.CPL(), linuxinit.Int3Ret, addr[linuxinit.Int3Ret])
	}
	if findings := trace.Summarize(tr).Findings; len(findings) != 0 {
		t.Errorf("findings: %q", findings)
	}
}

package command

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/fixtures/kernel"
	"github.com/sctrace/sctrace/internal/kerneltest"
	"github.com/sctrace/sctrace/session"
	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/x86"
)

// startTeachingKernel boots the bundled teaching kernel in its trace loop
// and returns the gdbstub's address once the loop runs.
func startTeachingKernel(t *testing.T) string {
	t.Helper()
	return kerneltest.StartLoop(t, t.TempDir(), 60*time.Second).GDBAddr
}

// TestTeachingKernel breaks on the teaching kernel's system-call
// dispatcher, a symbol nothing has recorded yet, continues to it, and
// checks what the commands show against their sources of truth: RIP
// against the ELF symbol, x/2xg $rsp against a direct memory read,
// pt_regs fields against the frame the C function is handed in RDI (its
// layout from fixtures/kernel/src/defs.h), a register written with set
// against what the stub reads back; then records to the return to user
// mode, with the write in the trace, and checks that Close left no
// breakpoint behind (the guest, which loops on system calls, runs on
// without stopping there).
func TestTeachingKernel(t *testing.T) {
	addr := startTeachingKernel(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := session.Attach(ctx, addr, session.Options{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	elf, err := symbols.FromELF(bytes.NewReader(kernel.ELF))
	if err != nil {
		t.Fatal(err)
	}
	want, ok := elf.Addr("do_syscall_64")
	if !ok {
		t.Fatal("no do_syscall_64 in the teaching kernel's ELF")
	}
	var out bytes.Buffer
	e := New(s, &out)
	e.Deadline = 60 * time.Second
	e.Confirm = func(string) bool { return true }
	do := func(line string) string {
		t.Helper()
		out.Reset()
		if err := e.Run(ctx, line); err != nil {
			t.Fatalf("%s: %v\n%s", line, err, out.String())
		}
		return out.String()
	}

	do("break do_syscall_64")
	got := do("continue")
	if !strings.Contains(got, fmt.Sprintf("Breakpoint 1, %#x <do_syscall_64>", want)) {
		t.Errorf("continue:\n%s", got)
	}
	st, err := s.Target.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rip := st.Val(x86.RIP); rip != want {
		t.Fatalf("RIP %#x, the ELF's do_syscall_64 is %#x", rip, want)
	}
	// Continuing from the breakpoint's own address runs on to the next
	// system call rather than stopping where it is.
	steps := s.Target.Steps
	if got := do("continue"); !strings.Contains(got, "Breakpoint 1, ") {
		t.Errorf("second continue:\n%s", got)
	}
	if got := do("info breakpoints"); !strings.Contains(got, fmt.Sprintf("1    0x%016x 2 ", want)) {
		t.Errorf("info breakpoints after two hits:\n%s", got)
	}
	if st, err = s.Target.State(ctx); err != nil {
		t.Fatal(err)
	}
	if n := s.Target.Steps - steps; n != 1 {
		t.Errorf("%d steps off the breakpoint before continuing, want 1", n)
	}

	rsp := st.Val(x86.RSP)
	mem, err := s.Conn.ReadMemory(ctx, rsp, 16)
	if err != nil {
		t.Fatal(err)
	}
	got = do("x/2xg $rsp")
	line := fmt.Sprintf("%#x <", rsp)
	vals := fmt.Sprintf("\t0x%016x\t0x%016x", binary.LittleEndian.Uint64(mem), binary.LittleEndian.Uint64(mem[8:]))
	if !strings.HasPrefix(got, line) && !strings.HasPrefix(got, fmt.Sprintf("%#x:", rsp)) || !strings.Contains(got, vals) {
		t.Errorf("x/2xg $rsp = %q, direct read gives %s", got, vals)
	}

	// In the kernel, CR3 holds the physical address of kernel_pgd
	// (setup_page_tables in kernel.c): the same words, read virtually at
	// the symbol and physically at CR3.
	virt, phys := do("x/4xg kernel_pgd"), do(fmt.Sprintf("x/4xg -phys %#x", st.Val(x86.CR3)&^0xfff))
	vwords, pwords := examined(virt), examined(phys)
	if !strings.HasPrefix(phys, "phys ") || len(vwords) != 4 || !slices.Equal(vwords, pwords) {
		t.Errorf("kernel_pgd read virtually:\n%s and at CR3 physically:\n%s", virt, phys)
	}

	// do_syscall_64(struct pt_regs *regs): RDI points at the frame.
	// defs.h: ORIG_RAX at 120, RIP at 128 from its lowest address.
	regs := st.Val(x86.RDI)
	for _, f := range []struct {
		field string
		off   uint64
	}{{"orig_ax", 120}, {"ip", 128}} {
		b, err := s.Conn.ReadMemory(ctx, regs+f.off, 8)
		if err != nil {
			t.Fatal(err)
		}
		got := do("print pt_regs->" + f.field)
		if want := fmt.Sprintf("pt_regs->%s = %#x ", f.field, binary.LittleEndian.Uint64(b)); !strings.HasPrefix(got, want) {
			t.Errorf("print pt_regs->%s = %q, the frame at RDI holds %q", f.field, got, want)
		}
	}

	do("set $rax = 0x1234abcd")
	got = do("info registers rax")
	if !strings.HasPrefix(got, "rax        0x1234abcd ") {
		t.Errorf("info registers rax after set: %q", got)
	}
	if b, err := s.Conn.ReadRegister(ctx, "rax"); err != nil || binary.LittleEndian.Uint64(b) != 0x1234abcd {
		t.Errorf("the stub reads rax as % x, %v", b, err)
	}

	got = do("trace")
	tr := s.Recorder.Trace()
	if tr.Len() == 0 || tr.Final == nil || tr.Final.CPL() != 3 || !strings.Contains(got, "returned to user mode") {
		t.Fatalf("trace recorded %d steps, ending at CPL %v:\n%s", tr.Len(), tr.Final, got)
	}
	if len(tr.UserWrites) != 1 || tr.UserWrites[0].Step != 0 || tr.UserWrites[0].What != "rax" || tr.UserWrites[0].New != 0x1234abcd {
		t.Errorf("writes by hand in the trace: %+v", tr.UserWrites)
	}
	if v := tr.Step(0).Regs.Val(x86.RAX); v != 0x1234abcd {
		t.Errorf("the recording starts with rax %#x, not the value written", v)
	}

	// From user mode, trace runs to the next system call and records
	// its round trip; the first recording is kept for save.
	first := tr
	got = do("trace")
	tr = s.Recorder.Trace()
	if tr == first || tr.Len() == 0 || tr.Final == nil {
		t.Fatalf("trace from user mode recorded %d steps:\n%s", tr.Len(), got)
	}
	if tr.Step(0).Mnemonic != "syscall" || tr.Final.CPL() != 3 {
		t.Errorf("trace from user mode: first %q, ends at CPL %d:\n%s", tr.Step(0).Mnemonic, tr.Final.CPL(), got)
	}
	if e.prev != first {
		t.Errorf("the first recording was not kept for save")
	}

	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
	e2 := New(s, &out)
	e2.Deadline = 3 * time.Second
	if err := e2.Run(ctx, "continue"); err == nil || !strings.Contains(err.Error(), "no breakpoint reached within 3s") {
		t.Errorf("continue after Close: %v (a breakpoint left behind would stop it at do_syscall_64)", err)
	}
}

// examined returns the values x printed, without the addresses.
func examined(out string) []string {
	var words []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		_, vals, _ := strings.Cut(line, ":\t")
		words = append(words, strings.Fields(vals)...)
	}
	return words
}

// TestUserBreakpointUnderKernelCR3 stops in the kernel and asks for a
// breakpoint on a user address the kernel's page tables do not map.
func TestUserBreakpointUnderKernelCR3(t *testing.T) {
	addr := startTeachingKernel(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := session.Attach(ctx, addr, session.Options{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out bytes.Buffer
	e := New(s, &out)
	e.Deadline = 60 * time.Second
	defer e.Close(ctx)
	for _, line := range []string{"break do_syscall_64", "continue"} {
		if err := e.Run(ctx, line); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
	}
	// 0x10000 is below the teaching kernel's user program (text from
	// 0x400000, kernel.lds.S), in no mapping.
	err = e.Run(ctx, "break 0x10000")
	if err == nil || !strings.Contains(err.Error(), "0x10000 is a user address, not mapped under the kernel's CR3") || strings.Contains(err.Error(), "\n") {
		t.Errorf("break on an unmapped user address at CPL 0: %v", err)
	}
}

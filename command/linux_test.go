package command

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/session"
	"github.com/sctrace/sctrace/x86"
)

// TestLinux boots Debian's 6.1 kernel (pti=on) with /init looping on
// getpid, breaks on do_syscall_64 (named by the guest's kallsyms) and
// checks that pt_regs->FIELD, found from the per-CPU top of the task
// stack, reads the frame the kernel hands do_syscall_64 in RDI: orig_ax
// at byte 120 and ip at 128 of struct pt_regs
// (arch/x86/include/asm/ptrace.h). (Which call it is, is not checked:
// besides /init's getpid the guest makes others, a write to the console
// say.) trace then records to the return to user mode.
func TestLinux(t *testing.T) {
	k := testenv.LinuxKernel(t, "6.1")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, err := session.StartLinux(ctx, session.LinuxOptions{Options: session.Options{Accel: "tcg", Mechanism: mechanism.Syscall, Timeout: 10 * time.Second}, Kernel: k})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want, ok := s.Symbols.Addr("do_syscall_64")
	if !ok {
		t.Fatal("no do_syscall_64 in kallsyms")
	}
	var out bytes.Buffer
	e := New(s, &out)
	e.Deadline = 2 * time.Minute
	defer e.Close(ctx)
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
	st, err := s.Target.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Val(x86.RIP) != want || !strings.Contains(got, fmt.Sprintf("Breakpoint 1, %#x <do_syscall_64>", want)) {
		t.Fatalf("stopped at %#x, do_syscall_64 is %#x:\n%s", st.Val(x86.RIP), want, got)
	}
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
	got = do("trace")
	tr := s.Recorder.Trace()
	if tr.Len() == 0 || tr.Final == nil || tr.Final.CPL() != 3 {
		t.Fatalf("trace from do_syscall_64:\n%s", got)
	}
	// Back in user mode on the user half of the KPTI page-table pair
	// (CR3 bit 12), which leaves do_syscall_64 out: a breakpoint there is
	// still set, and hit.
	if cr3 := tr.Final.Val(x86.CR3); cr3&(1<<12) == 0 {
		t.Fatalf("CR3 %#x in user mode with pti=on: not the user half", cr3)
	}
	do("delete 1")
	got = do("break do_syscall_64")
	if !strings.Contains(got, "is not mapped under the user page tables now in force") {
		t.Errorf("break from user mode under KPTI:\n%s", got)
	}
	if got := do("continue"); !strings.Contains(got, fmt.Sprintf("Breakpoint 2, %#x <do_syscall_64>", want)) {
		t.Errorf("continue from user mode:\n%s", got)
	}
}

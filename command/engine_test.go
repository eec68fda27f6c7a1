package command

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
	"github.com/sctrace/sctrace/session"
	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/trace"
)

// A kernel-like machine for the fake stub: code at text (nops), a stack,
// page tables at cr3, the CPU at CPL 0 in long mode. The stub plays QEMU's
// gdbstub (see gdbstubtest): memory not mapped answers E14, a continue
// stops at the first breakpoint with rip at its address, a step adds one
// to rip.
const (
	text      = 0xffffffff81000000
	doSyscall = text + 0x100
	stack     = 0xffffc90000004000
	user      = 0x401000
	cr3       = 0x1000
)

func newStub(t *testing.T) *gdbstubtest.Stub {
	t.Helper()
	stub := gdbstubtest.New(t)
	stub.Map(text, bytes.Repeat([]byte{0x90}, 0x1000))
	stub.Map(user, bytes.Repeat([]byte{0x90}, 0x1000))
	words := make([]byte, 0x1000)
	for i := 0; i < len(words); i += 8 {
		binary.LittleEndian.PutUint64(words[i:], 0x1000+uint64(i))
	}
	stub.Map(stack-0x1000, words)
	for reg, v := range map[string]uint64{
		"rip": text, "cs": 0x10, "ss": 0x18, "rsp": stack - 0x100, "rax": 0x27,
		"cr0": 0x80050033, "cr3": cr3, "cr4": 0x6f0, "efer": 0xd01, "gs_base": 0xffff888007a00000,
	} {
		stub.SetRegister(reg, v)
	}
	return stub
}

// attach opens a session on the stub with a symbol map naming the code.
func attach(t *testing.T, stub *gdbstubtest.Stub) (context.Context, *Engine, *bytes.Buffer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	m := filepath.Join(t.TempDir(), "System.map")
	if err := os.WriteFile(m, []byte("ffffffff81000000 T _text\nffffffff81000100 T do_syscall_64\nffffffff81000200 T entry_SYSCALL_64\n0000000000401000 T user_start\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := session.Attach(ctx, stub.Addr(), session.Options{Symbols: m, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	var out bytes.Buffer
	e := New(s, &out)
	return ctx, e, &out
}

func run(t *testing.T, ctx context.Context, e *Engine, out *bytes.Buffer, line string) string {
	t.Helper()
	out.Reset()
	if err := e.Run(ctx, line); err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	return out.String()
}

func TestBreakContinueDelete(t *testing.T) {
	stub := newStub(t)
	ctx, e, out := attach(t, stub)
	got := run(t, ctx, e, out, "break do_syscall_64")
	if !strings.Contains(got, "Breakpoint 1 at 0xffffffff81000100 <do_syscall_64> (hardware)") {
		t.Errorf("break: %q", got)
	}
	if bps := stub.Breakpoints(); !slices.Equal(bps, []string{"Z1,ffffffff81000100,1"}) {
		t.Errorf("stub breakpoints %q, want one hardware breakpoint", bps)
	}
	run(t, ctx, e, out, "break entry_SYSCALL_64+0x10")
	got = run(t, ctx, e, out, "info breakpoints")
	for _, want := range []string{"1    0xffffffff81000100 0      hardware breakpoint at do_syscall_64", "2    0xffffffff81000210"} {
		if !strings.Contains(got, want) {
			t.Errorf("info breakpoints lacks %q:\n%s", want, got)
		}
	}
	got = run(t, ctx, e, out, "continue")
	if !strings.Contains(got, "Breakpoint 1, 0xffffffff81000100 <do_syscall_64>") || !strings.Contains(got, "=> 0xffffffff81000100 <do_syscall_64>:\tnop") {
		t.Errorf("continue: %q", got)
	}
	if v := binary.LittleEndian.Uint64(stub.Register("rip")); v != doSyscall {
		t.Errorf("rip after continue = %#x", v)
	}
	run(t, ctx, e, out, "delete 1")
	if bps := stub.Breakpoints(); !slices.Equal(bps, []string{"Z1,ffffffff81000210,1"}) {
		t.Errorf("after delete 1: %q", bps)
	}
	if err := e.Run(ctx, "delete 1"); err == nil || !strings.Contains(err.Error(), "no breakpoint 1") {
		t.Errorf("delete 1 again: %v", err)
	}
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if bps := stub.Breakpoints(); len(bps) != 0 {
		t.Errorf("breakpoints left after Close: %q", bps)
	}
}

func TestUntilRemovesItsBreakpoint(t *testing.T) {
	stub := newStub(t)
	ctx, e, out := attach(t, stub)
	got := run(t, ctx, e, out, "until entry_SYSCALL_64")
	if !strings.Contains(got, "Stopped at 0xffffffff81000200 <entry_SYSCALL_64>") {
		t.Errorf("until: %q", got)
	}
	if bps := stub.Breakpoints(); len(bps) != 0 {
		t.Errorf("until left %q", bps)
	}
}

func TestContinueDeadline(t *testing.T) {
	stub := newStub(t)
	ctx, e, _ := attach(t, stub)
	e.Deadline = 300 * time.Millisecond
	// No breakpoint: the stub runs until interrupted, as QEMU does.
	err := e.Run(ctx, "continue")
	if err == nil || !strings.Contains(err.Error(), "no breakpoint reached within 300ms; the guest is stopped at 0xffffffff81000000 <_text>") {
		t.Errorf("continue with a deadline: %v", err)
	}
}

func TestExamine(t *testing.T) {
	stub := newStub(t)
	ctx, e, out := attach(t, stub)
	want, _ := stub.Memory(stack-0x100, 16)
	got := run(t, ctx, e, out, "x/2xg $rsp")
	line := fmt.Sprintf("0xffffc90000003f00:\t0x%016x\t0x%016x", binary.LittleEndian.Uint64(want), binary.LittleEndian.Uint64(want[8:]))
	if strings.TrimSpace(got) != line {
		t.Errorf("x/2xg $rsp = %q, want %q", got, line)
	}
	got = run(t, ctx, e, out, "x/2i $rip")
	if got != "=> 0xffffffff81000000 <_text>:\tnop\n   0xffffffff81000001 <_text+0x1>:\tnop\n" {
		t.Errorf("x/2i $rip = %q", got)
	}
	got = run(t, ctx, e, out, "x/4xw $rsp")
	line = "0xffffc90000003f00:"
	for i := 0; i < 16; i += 4 {
		line += fmt.Sprintf("\t0x%08x", binary.LittleEndian.Uint32(want[i:]))
	}
	if strings.TrimSpace(got) != line {
		t.Errorf("x/4xw $rsp = %q", got)
	}
	// Physical: the stub switched to physical addresses and back.
	got = run(t, ctx, e, out, "x/1xgp 0x1000")
	if !strings.HasPrefix(got, "phys 0x1000:") || stub.PhysicalMemoryMode() {
		t.Errorf("x/1xgp = %q, physical mode left %v", got, stub.PhysicalMemoryMode())
	}
}

func TestErrorsAreOneLine(t *testing.T) {
	stub := newStub(t)
	ctx, e, _ := attach(t, stub)
	for _, tc := range []struct{ line, want string }{
		{"break do_syscal_64", `break: no symbol "do_syscal_64"; did you mean do_syscall_64?`},
		{"brake do_syscall_64", `unknown command "brake"; did you mean break?`},
		{"break 0xffffffff82000000", "break: 0xffffffff82000000: not mapped under CR3 0x1000"},
		{"break 0x500000", "break: 0x500000 is a user address, not mapped under the kernel's CR3 0x1000 now in force (CPL 0)"},
		{"break 0x800000000000", "is not a canonical address"},
		{"x/2xg 0xffffffff82000000", "x: 0xffffffff82000000: not mapped under CR3 0x1000"},
		{"x/2xg 0x12zz", "malformed number"},
		{"print nosuch", `no symbol "nosuch"`},
		{"set $cs = 0x1ffffffff", "does not fit in $cs (32 bits)"},
		{"save out.json", "nothing recorded yet"},
		{"print pt_regs->ip", "task's kernel stack is not known"},
	} {
		err := e.Run(ctx, tc.line)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.line, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error spans lines: %q", tc.line, err)
		}
	}
	if bps := stub.Breakpoints(); len(bps) != 0 {
		t.Errorf("refused breakpoints reached the stub: %q", bps)
	}
}

func TestUserBreakpointWhileInKernel(t *testing.T) {
	stub := newStub(t)
	ctx, e, out := attach(t, stub)
	got := run(t, ctx, e, out, "break user_start")
	if !strings.Contains(got, "note: 0x401000 is a user address and the kernel is running") {
		t.Errorf("break on a mapped user address from the kernel: %q", got)
	}
}

func TestNoLiveGuest(t *testing.T) {
	var out bytes.Buffer
	e := New(nil, &out)
	for _, line := range []string{"break do_syscall_64", "continue", "stepi", "x/2xg $rsp", "info registers", "set $rax = 1", "trace"} {
		err := e.Run(context.Background(), line)
		if err == nil || !strings.Contains(err.Error(), "needs a live guest") {
			t.Errorf("%s without a guest: %v", line, err)
		}
	}
	if err := e.Run(context.Background(), "help"); err != nil || !strings.Contains(out.String(), "Commands") {
		t.Errorf("help without a guest: %v", err)
	}
}

func TestSetRegisterAndMemory(t *testing.T) {
	stub := newStub(t)
	ctx, e, out := attach(t, stub)
	var asked []string
	answer := false
	e.Confirm = func(q string) bool { asked = append(asked, q); return answer }
	if err := e.Run(ctx, "set $rax = 5"); !errors.Is(err, ErrNotConfirmed) {
		t.Errorf("unconfirmed set: %v", err)
	}
	if v := binary.LittleEndian.Uint64(stub.Register("rax")); v != 0x27 {
		t.Errorf("rax changed without confirmation: %#x", v)
	}
	if len(asked) != 1 || asked[0] != "Write $rax = 0x5 in the guest (now 0x27)?" {
		t.Errorf("asked %q", asked)
	}
	answer = true
	got := run(t, ctx, e, out, "set $rax = 5")
	if v := binary.LittleEndian.Uint64(stub.Register("rax")); v != 5 {
		t.Errorf("rax after set = %#x", v)
	}
	if !strings.Contains(got, "$rax = 0x5 (was 0x27)") {
		t.Errorf("set: %q", got)
	}
	got = run(t, ctx, e, out, "info registers rax")
	if !strings.HasPrefix(got, "rax        0x5 ") {
		t.Errorf("info registers rax = %q", got)
	}
	run(t, ctx, e, out, "set *(u32*)($rsp+4) = -1")
	if b, _ := stub.Memory(stack-0x100+4, 4); !bytes.Equal(b, []byte{0xff, 0xff, 0xff, 0xff}) {
		t.Errorf("memory after set = % x", b)
	}
	// Both writes are in the trace, before its first step; a step then
	// records from the written state.
	run(t, ctx, e, out, "stepi 2")
	tr := e.S.Recorder.Trace()
	if tr.Len() != 2 || len(tr.UserWrites) != 2 {
		t.Fatalf("trace has %d steps, %d writes by hand", tr.Len(), len(tr.UserWrites))
	}
	w := tr.UserWrites[0]
	if w.Step != 0 || w.What != "rax" || w.Old != 0x27 || w.New != 5 || !w.OldKnown {
		t.Errorf("register write recorded as %+v", w)
	}
	w = tr.UserWrites[1]
	if w.Step != 0 || w.Addr != stack-0x100+4 || w.Size != 4 || w.New != 0xffffffff {
		t.Errorf("memory write recorded as %+v", w)
	}
	if v, _ := tr.Step(0).Regs.Get(0); v != 5 {
		t.Errorf("step 0 starts with rax %#x, not the value written", v)
	}
	file := filepath.Join(t.TempDir(), "t.json")
	run(t, ctx, e, out, "save "+file)
	back, err := trace.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if back.Len() != 2 || len(back.UserWrites) != 2 {
		t.Errorf("saved trace: %d steps, %d writes", back.Len(), len(back.UserWrites))
	}
}

func TestStepiRecords(t *testing.T) {
	stub := newStub(t)
	ctx, e, out := attach(t, stub)
	got := run(t, ctx, e, out, "stepi 3")
	for i, want := range []string{"    0 K _text ", "    1 K _text+0x1 ", "    2 K _text+0x2 ", "=> 0xffffffff81000003 <_text+0x3>:\tnop"} {
		if !strings.Contains(got, want) {
			t.Errorf("stepi 3 line %d: want %q in\n%s", i, want, got)
		}
	}
	if v := binary.LittleEndian.Uint64(stub.Register("rip")); v != text+3 {
		t.Errorf("rip after stepi 3 = %#x", v)
	}
	// A continue moves the guest outside the recording: the next stepi
	// starts a new one, and the old one is kept for save.
	run(t, ctx, e, out, "break do_syscall_64")
	run(t, ctx, e, out, "continue")
	run(t, ctx, e, out, "stepi")
	if n := e.S.Recorder.Trace().Len(); n != 1 {
		t.Errorf("recording after continue has %d steps, want 1", n)
	}
	if e.prev == nil || e.prev.Len() != 3 {
		t.Errorf("the first recording was not kept")
	}
}

// TestHostileNames: symbol names come from the guest (kallsyms); one
// with terminal escapes is shown escaped, in output and in errors.
func TestHostileNames(t *testing.T) {
	stub := newStub(t)
	ctx, e, out := attach(t, stub)
	evil := "do_\x1b]0;owned\x07syscall"
	e.S.Symbols = symbols.New("hostile", []symbols.Symbol{{Name: evil, Addr: doSyscall, Type: 'T'}})
	got := run(t, ctx, e, out, "info symbols do_")
	if strings.ContainsAny(got, "\x1b\x07") || !strings.Contains(got, `do_\x1b]0;owned\x07syscall`) {
		t.Errorf("info symbols printed %q", got)
	}
	err := e.Run(ctx, "break do_")
	if err == nil || strings.ContainsAny(err.Error(), "\x1b\x07") {
		t.Errorf("error %q", err)
	}
}

// TestNoSymbols attaches with --symbols none: addresses work, names are
// refused with a message that says why.
func TestNoSymbols(t *testing.T) {
	stub := newStub(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := session.Attach(ctx, stub.Addr(), session.Options{Symbols: session.NoSymbols, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out bytes.Buffer
	e := New(s, &out)
	for _, line := range []string{"break 0xffffffff81000100", "continue", "x/2i $rip", "stepi", "info symbols do", "info regions", "info msrs"} {
		if err := e.Run(ctx, line); err != nil {
			t.Errorf("%s: %v", line, err)
		}
	}
	for _, want := range []string{"Breakpoint 1, 0xffffffff81000100\n", "No symbols are loaded", "No regions known"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if err := e.Run(ctx, "break do_syscall_64"); err == nil || !strings.Contains(err.Error(), "no symbols are loaded") {
		t.Errorf("break on a name without symbols: %v", err)
	}
}

// TestKernelBreakpointFromUserMode: under KPTI the user page tables leave
// the kernel out, yet a breakpoint on a kernel symbol must be possible
// from user mode (the kernel's tables map it); an unnamed kernel address
// nothing maps is refused.
func TestKernelBreakpointFromUserMode(t *testing.T) {
	stub := gdbstubtest.New(t)
	stub.Map(user, bytes.Repeat([]byte{0x90}, 0x1000))
	for reg, v := range map[string]uint64{"rip": user, "cs": 0x33, "ss": 0x2b, "cr0": 0x80050033, "cr3": 0x2000 | 1<<12, "efer": 0xd01} {
		stub.SetRegister(reg, v)
	}
	ctx, e, out := attach(t, stub)
	got := run(t, ctx, e, out, "break do_syscall_64")
	if !strings.Contains(got, "note: 0xffffffff81000100 <do_syscall_64> is not mapped under the user page tables now in force (CR3 0x3000)") {
		t.Errorf("break on a kernel symbol from user mode: %q", got)
	}
	if bps := stub.Breakpoints(); !slices.Equal(bps, []string{"Z1,ffffffff81000100,1"}) {
		t.Errorf("stub breakpoints %q", bps)
	}
	if err := e.Run(ctx, "break 0xffffffff90000000"); err == nil || !strings.Contains(err.Error(), "0xffffffff90000000: not mapped under CR3 0x3000") {
		t.Errorf("break on an unnamed unmapped kernel address: %v", err)
	}
}

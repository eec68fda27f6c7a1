package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/fixtures/kernel"
	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
	"github.com/sctrace/sctrace/internal/kerneltest"
	"github.com/sctrace/sctrace/symbols"
)

// runIn executes sctrace in-process with stdin in.
func runIn(t *testing.T, in string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetIn(strings.NewReader(in))
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

func TestBatchUsageErrors(t *testing.T) {
	script := filepath.Join(t.TempDir(), "bad.cmds")
	if err := os.WriteFile(script, []byte("# set up\nbreak do_syscall_64\n\ncontinnue\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"attach", ":1", "--batch"}, "--batch needs the stub's address and at least one command"},
		{[]string{"attach", ":1", "info registers"}, "put --batch before them"},
		// Parsed before attaching: the dead address is never dialled.
		{[]string{"attach", "127.0.0.1:1", "--batch", "brek do_syscall_64"}, `--batch command 1: unknown command "brek"; did you mean break?`},
		{[]string{"attach", "127.0.0.1:1", "--batch", "info registers", "x/2q $rsp"}, `--batch command 2: x: unknown format letter 'q'`},
		{[]string{"attach", "127.0.0.1:1", "-x", script}, script + `:4: unknown command "continnue"; did you mean continue?`},
		{[]string{"attach", "127.0.0.1:1", "-x", filepath.Join(t.TempDir(), "none.cmds")}, "-x: open"},
		{[]string{"attach", "127.0.0.1:1", "--batch", "--deadline", "-1s", "info registers"}, "--deadline must be 0 (none) or positive"},
		{[]string{"attach", "127.0.0.1:1", "--yes"}, "--yes goes with -x FILE or --batch"},
		{[]string{"attach", "127.0.0.1:1", "--deadline", "5s"}, "--deadline goes with -x FILE or --batch"},
	} {
		_, err := runIn(t, "", tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("sctrace %q: %v, want one line with %q", tc.args, err, tc.want)
		}
	}
}

// TestBatchHelp: help alone needs no guest (the address is dead).
func TestBatchHelp(t *testing.T) {
	out, err := runIn(t, "", "attach", "127.0.0.1:1", "--batch", "help", "help x")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"(sctrace) help\nCommands", "  break SYM[+OFF]", "(sctrace) help x\nx[/NFU] [-phys] EXPR"} {
		if !strings.Contains(out, want) {
			t.Errorf("help output lacks %q:\n%s", want, out)
		}
	}
}

// batchStub is a fake stub (playing QEMU's, see gdbstubtest) stopped in a
// kernel at _text, with a symbol map naming do_syscall_64.
func batchStub(t *testing.T) (*gdbstubtest.Stub, string) {
	stub := gdbstubtest.New(t)
	stub.Map(0xffffffff81000000, bytes.Repeat([]byte{0x90}, 0x1000))
	stub.Map(0xffffc90000003000, make([]byte, 0x1000))
	for reg, v := range map[string]uint64{"rip": 0xffffffff81000000, "cs": 0x10, "rsp": 0xffffc90000003f00, "rax": 0x27, "cr0": 0x80050033, "cr3": 0x1000, "efer": 0xd01} {
		stub.SetRegister(reg, v)
	}
	m := filepath.Join(t.TempDir(), "System.map")
	if err := os.WriteFile(m, []byte("ffffffff81000000 T _text\nffffffff81000100 T do_syscall_64\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return stub, m
}

func TestBatchFakeStub(t *testing.T) {
	stub, m := batchStub(t)
	out, err := runIn(t, "y\n", "attach", stub.Addr(), "--symbols", m, "--batch",
		"break do_syscall_64", "continue", "info registers rip", "set $rax = 1", "info breakpoints")
	// Standard input is no terminal: set cannot ask, and refuses.
	if err == nil || !strings.Contains(err.Error(), "--batch command 4: set: not written: not confirmed (1 more not run); no terminal to ask on: give --yes") {
		t.Errorf("set without --yes: %v", err)
	}
	for _, want := range []string{"(sctrace) break do_syscall_64\nBreakpoint 1 at 0xffffffff81000100 <do_syscall_64> (hardware)",
		"Breakpoint 1, 0xffffffff81000100 <do_syscall_64>", "rip        0xffffffff81000100   <do_syscall_64>"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "info breakpoints\n") {
		t.Errorf("ran a command after the failure:\n%s", out)
	}
	if v := binary.LittleEndian.Uint64(stub.Register("rax")); v != 0x27 {
		t.Errorf("rax written without confirmation: %#x", v)
	}
	if bps := stub.Breakpoints(); len(bps) != 0 {
		t.Errorf("breakpoints left in the guest: %q", bps)
	}
	if reqs := stub.Requests(); !slices.ContainsFunc(reqs, func(r string) bool { return strings.HasPrefix(r, "D") }) {
		t.Errorf("sctrace did not detach: %q", reqs[max(0, len(reqs)-5):])
	}

	stub, m = batchStub(t)
	script := filepath.Join(t.TempDir(), "s.cmds")
	if err := os.WriteFile(script, []byte("# write and look\nset $rax = 1\ninfo registers rax\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = runIn(t, "", "attach", stub.Addr(), "--symbols", m, "-x", script, "--yes", "--batch", "x/1i $rip")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if v := binary.LittleEndian.Uint64(stub.Register("rax")); v != 1 {
		t.Errorf("rax after set --yes: %#x", v)
	}
	i, j := strings.Index(out, "rax        0x1 "), strings.Index(out, "(sctrace) x/1i $rip")
	if i < 0 || j < i {
		t.Errorf("the script's commands, then --batch's, did not run in order:\n%s", out)
	}
}

// TestBatchTeachingKernel runs the built sctrace with --batch against the
// teaching kernel in its trace loop: break on the system-call dispatcher,
// continue to it, show rip and the stack, and leave. RIP is checked
// against the ELF symbol, and the guest must run on afterwards (a
// breakpoint left behind would stop it at once: it loops on system
// calls).
func TestBatchTeachingKernel(t *testing.T) {
	e := newFaultEnv(t)
	inst := kerneltest.StartLoop(t, e.work, 60*time.Second)
	tab, err := symbols.FromELF(bytes.NewReader(kernel.ELF))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := tab.Addr("do_syscall_64")
	cmd := exec.Command(e.exe, "attach", inst.GDBAddr, "--batch", "break do_syscall_64", "continue", "info registers rip", "x/2xg $rsp", "print pt_regs->orig_ax")
	cmd.Env = append(os.Environ(), "TMPDIR="+e.tmp)
	outb, err := cmd.CombinedOutput()
	out := string(outb)
	if err != nil {
		t.Fatalf("sctrace attach --batch: %v\n%s", err, out)
	}
	for _, w := range []string{
		fmt.Sprintf("Breakpoint 1, %#x <do_syscall_64>", want),
		fmt.Sprintf("rip        %#x   <do_syscall_64>", want),
		"(sctrace) x/2xg $rsp\n0x",
		// getpid, the call the trace loop makes: __NR_getpid in the teaching
		// kernel's defs.h.
		"pt_regs->orig_ax = 0x27 (39)",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	c0 := cpuTicks(t, inst.Pid())
	time.Sleep(2 * time.Second)
	if c1 := cpuTicks(t, inst.Pid()); c1-c0 < 5 {
		t.Errorf("the guest does not run after sctrace left: %d CPU ticks in 2s", c1-c0)
	}
	e.checkNothingLeft()
}

// TestBatchInterrupt stops a batch continue that would wait for ever (no
// breakpoint, no deadline) with ctrl-c: sctrace must say where the guest
// stopped, run no further command, detach (the wire log ends with D) and
// leave the guest running.
func TestBatchInterrupt(t *testing.T) {
	e := newFaultEnv(t)
	inst := kerneltest.StartLoop(t, e.work, 60*time.Second)
	wire := filepath.Join(e.work, "wire.log")
	cmd, stdout, stderr := e.command(nil, "attach", inst.GDBAddr, "--wire-log", wire, "--deadline", "0", "--batch", "continue", "info registers")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(stdout.String(), "(sctrace) continue"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("continue did not start:\n%s%s", stdout.String(), stderr.String())
		}
	}
	time.Sleep(500 * time.Millisecond)
	cmd.Process.Signal(os.Interrupt)
	if err := exitWithin(t, cmd, 15*time.Second); err == nil {
		t.Fatal("sctrace exited 0 after ctrl-c")
	}
	msg := stderr.String()
	if !strings.Contains(msg, "--batch command 1: continue: interrupted; the guest is stopped at 0x") || strings.Count(strings.TrimSpace(msg), "\n") != 0 {
		t.Errorf("message:\n%s", msg)
	}
	if strings.Contains(stdout.String(), "(sctrace) info registers") {
		t.Errorf("ran a command after ctrl-c:\n%s", stdout.String())
	}
	log, _ := os.ReadFile(wire)
	var sent []string
	for _, l := range strings.Split(strings.TrimSpace(string(log)), "\n") {
		if _, p, ok := strings.Cut(l, " -> "); ok {
			sent = append(sent, p)
		}
	}
	if len(sent) == 0 || !strings.HasPrefix(sent[len(sent)-1], "D") {
		t.Errorf("last packet sent: %q, want D (detach)", sent[max(0, len(sent)-3):])
	}
	c0 := cpuTicks(t, inst.Pid())
	time.Sleep(2 * time.Second)
	if c1 := cpuTicks(t, inst.Pid()); c1-c0 < 5 {
		t.Errorf("the guest does not run after sctrace left: %d CPU ticks in 2s", c1-c0)
	}
	e.checkNothingLeft()
}

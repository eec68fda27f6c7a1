package tui

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDebuggerEndToEnd drives the real binary in tmux against the real
// QEMU and teaching kernel as a debugger user would: a breakpoint on a
// symbol the recording has not reached, continue to it, memory examined
// there, a register written (confirmed in the TUI) and seen in the
// registers pane, a burst of ten s that steps ten times, and q removing
// the breakpoint and ending QEMU.
func TestDebuggerEndToEnd(t *testing.T) {
	exe := sctraceBinary(t)
	// The breakpoint's address, from the kernel's own symbol table.
	f, err := elf.Open("../fixtures/kernel/sctrace-kernel.elf")
	if err != nil {
		t.Fatal(err)
	}
	syms, err := f.Symbols()
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	var target uint64
	for _, s := range syms {
		if s.Name == "do_syscall_64" {
			target = s.Value
		}
	}
	if target == 0 {
		t.Fatal("no do_syscall_64 in the teaching kernel")
	}
	const w, h = 160, 48
	s := &tmuxScreen{t: t, name: fmt.Sprintf("sctrace-dbg-%d", os.Getpid())}
	dir, port := t.TempDir(), t.TempDir()
	s.tmux("new-session", "-d", "-s", s.name, "-x", fmt.Sprint(w), "-y", fmt.Sprint(h), "-c", dir,
		"TMPDIR="+port+" "+exe+" run; echo sctrace-exited-$?; sleep 60")
	t.Cleanup(func() { exec.Command("tmux", "-L", s.name, "kill-server").Run() })
	s.waitText(60*time.Second, "CPL 3 user", "step 0 of 0")

	line := func(cmd string) {
		t.Helper()
		s.keys(":")
		s.waitText(5*time.Second, "\n:")
		s.keys("-l", cmd)
		s.keys("Enter")
	}
	// esc closes the output pane; the next key waits for it, else the
	// terminal may send esc and that key as one alt+key.
	esc := func() {
		t.Helper()
		s.keys("Escape")
		s.wait("the output pane to close", 10*time.Second, func(scr string) bool { return !strings.Contains(scr, "esc closes)") })
	}
	// The recording stops before the syscall: do_syscall_64 is ahead.
	line("break do_syscall_64")
	s.waitText(20*time.Second, fmt.Sprintf("Breakpoint 1 at %#x <do_syscall_64>", target))
	esc()
	line("continue")
	s.waitText(60*time.Second, fmt.Sprintf("Breakpoint 1, %#x <do_syscall_64>", target), "CPL 0 kernel", "step 0 of 0")
	esc()
	s.waitText(10*time.Second, fmt.Sprintf("rip %016x do_syscall_64", target))
	// x reads the guest's memory at RSP: the same words the stack pane
	// read with the recorder.
	scr := s.waitText(10*time.Second, "+0x000 ", "+0x008 ")
	w0 := field(t, regexp.MustCompile(`\+0x000 ([0-9a-f]{16})`), scr, 1)
	w1 := field(t, regexp.MustCompile(`\+0x008 ([0-9a-f]{16})`), scr, 1)
	line("x/2xg $rsp")
	scr = s.waitText(20*time.Second, "0x"+w0, "0x"+w1)
	if !regexp.MustCompile(`0x[0-9a-f]+(?: <[^>]*>)?:\s+0x` + w0 + `\s+0x` + w1).MatchString(scr) {
		t.Errorf("x/2xg $rsp does not show the stack pane's words %s %s:\n%s", w0, w1, scr)
	}
	esc()
	// set asks first; y writes, and the registers pane shows it.
	line("set $rax = 5")
	s.waitText(20*time.Second, "Write $rax = 0x5 in the guest", "[y/N]")
	s.keys("y")
	s.waitText(20*time.Second, "$rax = 0x5", "recorded in the trace as a change made by hand")
	esc()
	s.waitText(10*time.Second, "rax 0000000000000005")
	line("info breakpoints")
	s.waitText(20*time.Second, "do_syscall_64")
	esc()
	// Ten s in one burst: ten steps.
	s.keys("s", "s", "s", "s", "s", "s", "s", "s", "s", "s")
	scr = s.wait("ten steps", 60*time.Second, func(scr string) bool {
		return !strings.Contains(scr, "stepping") && reStep.MatchString(scr) && field(t, reStep, scr, 2) != "0"
	})
	if got := field(t, reStep, scr, 0); got != "step 10 of 10" {
		t.Errorf("after ten s: %q, want step 10 of 10:\n%s", got, scr)
	}
	s.keys("q")
	s.waitText(20*time.Second, "sctrace-exited-0")
	deadline := time.Now().Add(10 * time.Second)
	for qemuRunning(port) {
		if time.Now().After(deadline) {
			t.Fatalf("QEMU with its gdbstub socket under %s still running after q", port)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

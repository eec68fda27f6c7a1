package session

import (
	"bufio"
	"context"
	"errors"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/fixtures/linuxinit"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/syscalls"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// startLinuxWith boots a Debian kernel of series with o, after
// ChooseMechanism as the command line calls it, and returns the session and
// the mechanism to trace.
func startLinuxWith(t *testing.T, ctx context.Context, series string, o LinuxOptions, m mechanism.Mechanism, chosen bool) (*Session, mechanism.Mechanism) {
	t.Helper()
	o.Kernel = testenv.LinuxKernel(t, series)
	o.Accel = "tcg"
	m, err := o.ChooseMechanism(m, chosen)
	if err != nil {
		t.Fatal(err)
	}
	s, err := StartLinux(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, m
}

// checkSyscallTable checks the kernel's sys_call_table, as the session
// read it, against the x86-64 ABI list, an independent source: every
// number both name has the same name, and the kernel's last entry is a
// call the ABI list has.
func checkSyscallTable(t *testing.T, s *Session) {
	t.Helper()
	abi := syscalls.ABI()
	tab := s.Syscalls()
	if !strings.Contains(tab.Source, "sys_call_table") {
		t.Fatalf("names come from %s, not the kernel's table (notes: %q)", tab.Source, s.Notes)
	}
	named := 0
	for nr := range tab.Size {
		k, kok := tab.ByNumber(nr)
		a, aok := abi.ByNumber(nr)
		if !kok {
			t.Errorf("entry %d is missing", nr)
			continue
		}
		if k.Name == "" {
			continue // sys_ni_syscall: not built into this kernel
		}
		named++
		if aok && a.Name != "" && k.Name != a.Name {
			t.Errorf("number %d is %s (%s) in the kernel, %s in %s", nr, k.Name, k.Entry, a.Name, abi.Source)
		}
	}
	last, _ := tab.ByNumber(tab.Size - 1)
	if a, ok := abi.ByNumber(tab.Size - 1); !ok || a.Name != last.Name {
		t.Errorf("the kernel's last entry, %d, is %q; the ABI list has %q there", tab.Size-1, last.Name, a.Name)
	}
	if named < 300 {
		t.Errorf("only %d of %d entries named", named, tab.Size)
	}
	t.Logf("%s: %d entries, %d implemented", tab.Source, tab.Size, named)
}

// unistd32 reads an i386 system call's number from the C header Debian's
// linux-libc-dev generates from Linux's syscall_32.tbl.
func unistd32(t *testing.T, name string) uint64 {
	t.Helper()
	const header = "/usr/include/x86_64-linux-gnu/asm/unistd_32.h"
	f, err := os.Open(header)
	if err != nil {
		t.Skipf("no %s to take i386 numbers from: %v", header, err)
	}
	defer f.Close()
	re := regexp.MustCompile(`^#define __NR_` + name + ` (\d+)$`)
	for sc := bufio.NewScanner(f); sc.Scan(); {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			n, _ := strconv.ParseUint(m[1], 10, 64)
			return n
		}
	}
	t.Fatalf("%s has no __NR_%s", header, name)
	return 0
}

// TestLinuxExec packs test programs into the initramfs with --exec: a
// static x86-64 program traced at its getppid (--syscall), which /init
// never makes, named from the kernel's own table (checked against the ABI
// list first), and a static i386 one traced at its first int $0x80.
func TestLinuxExec(t *testing.T) {
	abi := syscalls.ABI()
	getppid, _ := abi.ByName("getppid")
	for _, series := range []string{"6.1", "6.12"} {
		t.Run(series+"/x86-64", func(t *testing.T) {
			prog, err := linuxinit.LoadProgram(testenv.BuildHello(t), []string{"one", "two"})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
			defer cancel()
			s, m := startLinuxWith(t, ctx, series, LinuxOptions{Options: Options{Syscall: "getppid"}, Program: prog}, mechanism.Syscall, false)
			checkSyscallTable(t, s)
			tr, err := s.RoundTrip(ctx, m)
			if err != nil {
				t.Fatal(err)
			}
			h := tr.Header.Syscall
			if h == nil || h.Nr != getppid.Nr || h.Name != "getppid" || h.Entry != "__x64_sys_getppid" {
				t.Fatalf("header names the call %+v, want getppid (%d, __x64_sys_getppid)", h, getppid.Nr)
			}
			first := tr.Step(0)
			if first.Op != x86asm.SYSCALL || first.CPL != 3 || !slices.Contains(prog.Sites, uint64(first.RIP)) {
				t.Errorf("step 0 is %s at %#x (CPL %d), want one of the program's syscall instructions", first.Mnemonic, uint64(first.RIP), first.CPL)
			}
			for i, a := range h.Args {
				if r := syscalls.Args[i]; a.Reg != r.String() || uint64(a.Value) != first.Regs.Val(r) {
					t.Errorf("argument %d: %s=%#x, want %s=%#x", i+1, a.Reg, uint64(a.Value), r, first.Regs.Val(r))
				}
			}
			if tr.Header.Stop != string(trace.StopUser) {
				t.Errorf("stopped: %s", tr.Header.Stop)
			}
			if got, want := tr.Final.Val(x86.RIP), uint64(first.RIP)+2; got != want {
				t.Errorf("back in user mode at %#x, want %#x", got, want)
			}
			if out := s.Serial.String(); !strings.Contains(out, "hello: one two\r\n") {
				t.Errorf("the console does not show the program's output:\n%s", lastLines(out, 10))
			}
			t.Logf("getppid of the program: %d instructions", tr.Len())
		})
		t.Run(series+"/i386", func(t *testing.T) {
			prog, err := linuxinit.LoadProgram(testenv.BuildHello32(t), nil)
			if err != nil {
				t.Fatal(err)
			}
			write := unistd32(t, "write")
			ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
			defer cancel()
			s, m := startLinuxWith(t, ctx, series, LinuxOptions{Program: prog}, mechanism.Syscall, false)
			if m != mechanism.Int80 {
				t.Fatalf("an i386 program is traced by %s, want int80", m)
			}
			tr, err := s.RoundTrip(ctx, m)
			if err != nil {
				t.Fatal(err)
			}
			first := tr.Step(0)
			if first.Op != x86asm.INT || first.CPL != 3 || first.Regs.Val(x86.CS)&3 != 3 {
				t.Errorf("step 0 is %s at CPL %d, want the program's int $0x80", first.Mnemonic, first.CPL)
			}
			// Its first call is write; the trace starts at it.
			if got := first.Regs.Val(x86.RAX); got != write {
				t.Errorf("EAX = %d at the int $0x80, want write's i386 number %d", got, write)
			}
			if tr.Header.Stop != string(trace.StopUser) {
				t.Errorf("stopped: %s", tr.Header.Stop)
			}
			if out := s.Serial.String(); !strings.Contains(out, "hello from i386\r\n") {
				t.Errorf("the console does not show the program's output:\n%s", lastLines(out, 10))
			}
		})
	}
}

// TestLinuxSyscallNeverMade waits for a call the program never makes:
// the budget of other calls ends the wait with a sentence naming the call,
// and so does ctrl-c; the guest is left without breakpoints, so that the
// next round trip works.
func TestLinuxSyscallNeverMade(t *testing.T) {
	prog, err := linuxinit.LoadProgram(testenv.BuildHello(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	mount, _ := syscalls.ABI().ByName("mount")
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	s, m := startLinuxWith(t, ctx, "6.1", LinuxOptions{Options: Options{Syscall: "mount", Budget: 30}, Program: prog}, mechanism.Syscall, false)

	_, err = s.RoundTrip(ctx, m)
	want := "gave up waiting for mount (system call " + strconv.Itoa(mount.Nr) + "): the guest made 30 other system calls first"
	if !errors.Is(err, trace.ErrSyscallBudget) || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want %q", err, want)
	}

	s.Recorder.Budget = 1 << 30
	cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
	defer ccancel()
	_, err = s.RoundTrip(cctx, m)
	want = "interrupted before the mount (system call " + strconv.Itoa(mount.Nr) + ") was reached"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("after the deadline: err = %v, want %q", err, want)
	}

	// Nothing was left behind: a plain round trip runs as usual.
	s.syscall = nil
	tr, err := s.RoundTrip(ctx, m)
	if err != nil {
		t.Fatalf("the next round trip: %v", err)
	}
	if tr.Header.Stop != string(trace.StopUser) || tr.Header.Syscall == nil {
		t.Errorf("the next round trip stopped %q, call %v", tr.Header.Stop, tr.Header.Syscall)
	}
}

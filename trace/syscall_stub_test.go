package trace

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/target"
	"github.com/sctrace/sctrace/x86"
)

// The fake guest of the ToSyscall tests: Linux's entry point where
// Debian's 6.1 has it with nokaslr, and a user program with two syscall
// instructions.
const (
	stubEntry = 0xffffffff81c00080
	siteA     = 0x401000 // makes getpid (39)
	siteB     = 0x401010 // makes read (0)
)

// entryStop is a stop on entry_SYSCALL_64 after the user's syscall at
// site with RAX = nr, as QEMU reports it: kernel CS, RCX = the return
// address. stepOff is the single step ToSyscall takes off the breakpoint
// before continuing.
func entryStop(site, nr uint64) []gdbstubtest.Stop {
	return []gdbstubtest.Stop{
		{Regs: map[string]uint64{"rip": stubEntry, "rax": nr, "rcx": site + 2, "cs": 0x10, "ss": 0x18}},
		{Regs: map[string]uint64{"rip": stubEntry + 3}},
	}
}

// userStop is a stop at the user syscall at site with RAX = nr.
func userStop(site, nr uint64) gdbstubtest.Stop {
	return gdbstubtest.Stop{Regs: map[string]uint64{"rip": site, "rax": nr, "cs": 0x33, "ss": 0x2b}}
}

func syscallStubRecorder(t *testing.T, stops ...gdbstubtest.Stop) (context.Context, *Recorder, *gdbstubtest.Stub) {
	t.Helper()
	stub := gdbstubtest.New(t)
	stub.SetRegister("cs", 0x33)
	stub.SetRegister("rip", 0x401100)
	stub.Map(0x401000, []byte{0x0f, 0x05, 0x90, 0x90})
	stub.Map(0x401010, []byte{0x0f, 0x05, 0x90, 0x90})
	ctx, conn := testenv.DialStub(t, stub)
	syms := symbols.New("test", []symbols.Symbol{{Name: "entry_SYSCALL_64", Addr: stubEntry, Type: 'T'}})
	r := NewRecorder(target.New(conn), syms, nil, Header{})
	if err := r.Init(ctx); err != nil {
		t.Fatal(err)
	}
	stub.Script(stops...)
	return ctx, r, stub
}

// TestToSyscallLearnsTheSite plays a guest that makes getpid, then read
// (entering the kernel each time), then read again: ToSyscall lets getpid
// through, learns read's instruction from RCX at the entry, and stops at
// it before the kernel runs the second read; no breakpoint is left.
func TestToSyscallLearnsTheSite(t *testing.T) {
	var stops []gdbstubtest.Stop
	stops = append(stops, entryStop(siteA, 39)...)
	stops = append(stops, entryStop(siteB, 0)...)
	stops = append(stops, userStop(siteB, 0))
	ctx, r, stub := syscallStubRecorder(t, stops...)
	if err := r.ToSyscall(ctx, 0, "read (system call 0)", nil); err != nil {
		t.Fatal(err)
	}
	if got := r.Current().Val(x86.RIP); got != siteB {
		t.Errorf("stopped at %#x, want the read's syscall at %#x", got, siteB)
	}
	if left := stub.Breakpoints(); len(left) != 0 {
		t.Errorf("breakpoints left: %v", left)
	}
	if n := stub.Scripted(); n != 0 {
		t.Errorf("%d scripted stops not reached", n)
	}
	var set []string
	for _, req := range stub.Requests() {
		if strings.HasPrefix(req, "Z1,") {
			set = append(set, req)
		}
	}
	want := []string{fmt.Sprintf("Z1,%x,1", uint64(stubEntry)), fmt.Sprintf("Z1,%x,1", siteB)}
	if strings.Join(set, " ") != strings.Join(want, " ") {
		t.Errorf("breakpoints set: %v, want %v", set, want)
	}
}

// TestToSyscallKnownSites catches a call at a site given beforehand (the
// syscall instructions of an --exec program) before the kernel runs it,
// the first time, breaking on those sites alone; with a negative number,
// any call from them.
func TestToSyscallKnownSites(t *testing.T) {
	for _, tt := range []struct {
		nr   int
		want uint64
	}{{0, siteB}, {-1, siteA}} {
		t.Run(fmt.Sprint(tt.nr), func(t *testing.T) {
			// The program makes getpid, then read, each the first time;
			// the step between is ToSyscall's step off the breakpoint.
			ctx, r, stub := syscallStubRecorder(t, userStop(siteA, 39), gdbstubtest.Stop{Regs: map[string]uint64{"rip": siteA + 2}}, userStop(siteB, 0))
			if err := r.ToSyscall(ctx, tt.nr, "", []uint64{siteA, siteB}); err != nil {
				t.Fatal(err)
			}
			if got := r.Current().Val(x86.RIP); got != tt.want {
				t.Errorf("stopped at %#x, want %#x", got, tt.want)
			}
			if left := stub.Breakpoints(); len(left) != 0 {
				t.Errorf("breakpoints left: %v", left)
			}
			for _, req := range stub.Requests() {
				if req == fmt.Sprintf("Z1,%x,1", uint64(stubEntry)) {
					t.Error("broke on the kernel's entry, where another program's calls would stop too")
				}
			}
		})
	}
}

// TestToSyscallBudget gives up after the budget of other calls, saying
// what it waited for, with no breakpoint left.
func TestToSyscallBudget(t *testing.T) {
	var stops []gdbstubtest.Stop
	for range 3 {
		stops = append(stops, entryStop(siteA, 39)...)
	}
	ctx, r, stub := syscallStubRecorder(t, stops...)
	r.Budget = 3
	err := r.ToSyscall(ctx, 165, "mount (system call 165)", nil)
	if !errors.Is(err, ErrSyscallBudget) || !strings.Contains(err.Error(), "gave up waiting for mount (system call 165): the guest made 3 other system calls first") {
		t.Fatalf("err = %v", err)
	}
	if left := stub.Breakpoints(); len(left) != 0 {
		t.Errorf("breakpoints left: %v", left)
	}
	if err := r.ToSyscall(ctx, -1, "", nil); err == nil || !strings.Contains(err.Error(), "no syscall instruction is known to break on") {
		t.Errorf("any call with no sites: %v", err)
	}
}

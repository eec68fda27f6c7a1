package session

import (
	"context"
	"fmt"

	"github.com/sctrace/sctrace/linux"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/syscalls"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// syscallFinder is a Recorder that can run to a given system call
// (trace.Recorder.ToSyscall), which Options.Syscall asks for.
type syscallFinder interface {
	ToSyscall(ctx context.Context, nr int, what string, sites []uint64) error
}

// currentState is a Recorder that says where the guest stopped.
type currentState interface {
	Current() *x86.State
}

// Syscalls returns the system-call table the session names calls with: the
// kernel's own sys_call_table on a Linux guest whose kallsyms has it,
// otherwise the x86-64 ABI list.
func (s *Session) Syscalls() *syscalls.Table {
	if s.sysTable == nil {
		return syscalls.ABI()
	}
	return s.sysTable
}

// Syscall returns the system call the session waits for (Options.Syscall),
// or nil when it waits for any.
func (s *Session) Syscall() *syscalls.Call { return s.syscall }

// setupSyscalls reads the kernel's system-call table on a Linux guest and
// resolves o.Syscall against it (or against the ABI list), so that a name
// or number the kernel does not have is refused before anything runs.
func (s *Session) setupSyscalls(ctx context.Context, o Options) error {
	abi := syscalls.ABI()
	if s.linux != nil && s.linux.tab != nil {
		tab, err := linux.SyscallTable(ctx, kernelMemory{s.Target}, s.linux.tab, abi)
		if err == nil {
			s.sysTable = tab
		} else {
			s.Notes = append(s.Notes, fmt.Sprintf("system calls are named from %s: %v", abi.Source, err))
		}
	}
	if o.Syscall == "" {
		return nil
	}
	if o.Mechanism != "" && o.Mechanism != mechanism.Syscall {
		return fmt.Errorf("--syscall waits for the syscall instruction; mechanism %s is not it (x86-64 numbers mean nothing to int $0x80, which takes the i386 ones)", o.Mechanism)
	}
	c, err := syscalls.Resolve(o.Syscall, s.Syscalls())
	if err != nil {
		return err
	}
	s.syscall = &c
	return nil
}

// describeCall names the call a ToEntry waits for, for messages: "read
// (system call 0)", or the mechanism.
func (s *Session) describeCall(m mechanism.Mechanism) string {
	switch {
	case s.syscall != nil:
		return fmt.Sprintf("%s (system call %d)", s.Syscalls().Name(s.syscall.Nr), s.syscall.Nr)
	case len(s.syscallSites) > 0 && (m == "" || m == mechanism.Syscall):
		return "system call of the program (--exec)"
	}
	if m == "" {
		return "system call"
	}
	return string(m)
}

// Awaited says what ToEntry waits for with mechanism m: the system call
// Options.Syscall named, or the next entry by m.
func (s *Session) Awaited(m mechanism.Mechanism) string { return s.describeCall(m) }

// toSyscall runs the guest to system call nr (Options.Syscall's), or with
// nr < 0 to the next call the user's program makes.
func (s *Session) toSyscall(ctx context.Context, nr int) error {
	f, ok := s.rec.(syscallFinder)
	if !ok {
		return fmt.Errorf("this recorder cannot wait for a given system call")
	}
	return f.ToSyscall(ctx, nr, s.describeCall(mechanism.Syscall), s.syscallSites)
}

// nameSyscall fills the trace header's Syscall when the trace starts at a
// user syscall instruction on Linux (or when a call was asked for): the
// number in RAX, its name from Syscalls, and the argument registers.
func (s *Session) nameSyscall(ctx context.Context) {
	h := &s.rec.Trace().Header
	h.Syscall = nil
	if s.linux == nil && s.syscall == nil {
		return
	}
	c, ok := s.rec.(currentState)
	if !ok || c.Current() == nil {
		return
	}
	st := c.Current()
	if st.CPL() != 3 || st.Sys.CompatMode() {
		// A 32-bit program's syscall takes the i386 numbers, which the
		// x86-64 tables would misname.
		return
	}
	if s.Recorder != nil {
		inst, _, err := s.Recorder.Decode(ctx, st)
		if err != nil || mechanism.Classify(inst, false) != mechanism.Syscall {
			return
		}
	}
	tab := s.Syscalls()
	nr := int(st.Val(x86.RAX))
	call := &trace.Syscall{Nr: nr, Table: tab.Source}
	if k, ok := tab.ByNumber(nr); ok {
		call.Name, call.Entry = k.Name, k.Entry
	}
	for _, r := range syscalls.Args {
		call.Args = append(call.Args, trace.Arg{Reg: r.String(), Value: trace.Hex(st.Val(r))})
	}
	h.Syscall = call
}

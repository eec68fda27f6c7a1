package trace

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/x86"
)

// Syscall names, in a trace's header, the system call a trace starts at:
// its number (RAX at the user syscall instruction), its name and kernel
// function where a table names them, and its six argument registers.
type Syscall struct {
	Nr    int    `json:"nr"`
	Name  string `json:"name,omitempty"`  // e.g. "read"; "" when the table has no name for Nr
	Entry string `json:"entry,omitempty"` // e.g. "__x64_sys_read"
	Table string `json:"table,omitempty"` // where the name comes from
	Args  []Arg  `json:"args,omitempty"`  // rdi, rsi, rdx, r10, r8, r9
}

// Arg is one argument register's value at the system call.
type Arg struct {
	Reg   string `json:"reg"`
	Value Hex    `json:"value"`
}

// String spells the call as the text header gives it:
// "read (0, __x64_sys_read): rdi=0x3 rsi=0x405000 rdx=0x10000 r10=0 r8=0 r9=0".
func (c *Syscall) String() string {
	var b strings.Builder
	name := c.Name
	if name == "" {
		name = "no name"
	}
	fmt.Fprintf(&b, "%s (%d", name, c.Nr)
	if c.Entry != "" {
		fmt.Fprintf(&b, ", %s", c.Entry)
	}
	b.WriteString(")")
	for i, a := range c.Args {
		if i == 0 {
			b.WriteString(":")
		}
		fmt.Fprintf(&b, " %s=%#x", a.Reg, uint64(a.Value))
	}
	return b.String()
}

// ErrSyscallBudget is returned (wrapped) by ToSyscall when the guest made
// more system calls of other numbers than the budget allows.
var ErrSyscallBudget = errors.New("gave up waiting")

// ToSyscall lets the guest run until a user-mode syscall instruction is
// about to make system call nr (RAX = nr there), and starts a fresh trace
// at that instruction; what names the call in errors.
//
// With no sites it breaks on the kernel's syscall entry (LSTAR) and reads
// RAX at each entry, letting the other calls through; at an entry with the
// number it learns the user instruction that made it (RCX - 2) and breaks
// there too, so that the next call from that instruction is caught before
// the kernel runs, where a trace starts. Without a known entry point it
// single-steps instead.
//
// sites, when given, are the syscall instructions of the one program
// whose calls are wanted (an --exec program's, found in its ELF): it
// breaks on them alone, which catches even a call made once and never one
// of another program's; a negative nr then takes any call. Where the stub
// refuses that many hardware breakpoints (KVM has four) it falls back to
// the entry.
//
// A guest already stopped at a wanted instruction stays put. The budget
// bounds the calls let through (or the steps taken); ctx cancels the
// wait. Breakpoints are removed on every path.
func (r *Recorder) ToSyscall(ctx context.Context, nr int, what string, sites []uint64) (err error) {
	r.Reset()
	if err := r.checkOnCPU(); err != nil {
		return err
	}
	if what == "" {
		what = fmt.Sprintf("system call %d", nr)
	}
	budget := r.Budget
	if budget <= 0 {
		budget = DefaultBudget
	}
	set := map[uint64]bool{}
	defer func() {
		for a := range set {
			r.clearBreakpoint(ctx, a, &err)
		}
	}()
	add := func(a uint64) error {
		if set[a] {
			return nil
		}
		if err := r.T.Conn.SetBreakpoint(ctx, gdbremote.Hardware, a, 1); err != nil {
			return fmt.Errorf("breakpoint at %s: %w", r.name(a), err)
		}
		set[a] = true
		return nil
	}
	// wanted says whether the guest stopped at a call to trace (on the
	// vCPU OnCPU names, when set).
	wanted := func(ctx context.Context, st *x86.State) bool {
		if !r.onWantedCPU() || st.CPL() != 3 || (nr >= 0 && st.Val(x86.RAX) != uint64(nr)) || (len(sites) > 0 && !slices.Contains(sites, st.Val(x86.RIP))) {
			return false
		}
		inst, _, err := r.Decode(ctx, st)
		return err == nil && mechanism.Classify(inst, false) == mechanism.Syscall
	}
	if r.cur != nil && wanted(ctx, r.cur) {
		return r.atStart(ctx)
	}

	var entry uint64 // breaks on the kernel's entry, when not 0
	for _, a := range sites {
		if add(a) != nil {
			for b := range set {
				r.clearBreakpoint(ctx, b, &err)
			}
			if err != nil {
				return err
			}
			clear(set)
			sites = nil
			break
		}
	}
	if len(sites) == 0 {
		if nr < 0 {
			return fmt.Errorf("wait for %s: no syscall instruction is known to break on", what)
		}
		var ok bool
		if entry, ok = r.syscallEntry(); !ok {
			return r.stepToSyscall(ctx, nr, what, budget)
		}
		if err := add(entry); err != nil {
			return err
		}
	}
	for seen := 0; ; seen++ {
		if seen >= budget {
			return fmt.Errorf("%w for %s: the guest made %d other system calls first (the budget; --budget raises it)", ErrSyscallBudget, what, budget)
		}
		if r.cur != nil && set[r.cur.Val(x86.RIP)] {
			// QEMU stops again at once at a breakpoint it is resumed
			// on: step off it first.
			if err := r.stepOff(ctx); err != nil {
				return err
			}
		}
		_, st, err := r.resume(ctx, "wait for "+what)
		if err != nil {
			return err
		}
		switch rip := st.Val(x86.RIP); {
		case entry != 0 && rip == entry:
			if st.Val(x86.RAX) != uint64(nr) {
				continue
			}
			// SYSCALL left the address of the next instruction in RCX.
			site := st.Val(x86.RCX) - 2
			code, err := r.T.ReadMemory(ctx, site, 2)
			if err == nil && code[0] == 0x0f && code[1] == 0x05 {
				if err := add(site); err != nil {
					return err
				}
			}
		case wanted(ctx, st):
			return r.atStart(ctx)
		}
	}
}

// stepToSyscall single-steps until a user syscall instruction with RAX =
// nr, for a guest whose syscall entry point is not known.
func (r *Recorder) stepToSyscall(ctx context.Context, nr int, what string, budget int) error {
	if err := CheckBooted(r.cur); err != nil {
		return fmt.Errorf("find %s: %w", what, err)
	}
	for n := 0; n < budget; n++ {
		if r.cur.CPL() == 3 && r.cur.Val(x86.RAX) == uint64(nr) {
			inst, _, err := r.Decode(ctx, r.cur)
			if err != nil {
				return err
			}
			if mechanism.Classify(inst, false) == mechanism.Syscall {
				return r.atStart(ctx)
			}
		}
		st, err := r.T.Step(ctx)
		if err != nil {
			return err
		}
		st.Sys = r.tables
		r.cur = st
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return fmt.Errorf("%w for %s: no syscall instruction with RAX = %d within %d steps (the budget; --budget raises it, and --symbols lets sctrace break at the kernel's entry instead of stepping)", ErrSyscallBudget, what, nr, budget)
}

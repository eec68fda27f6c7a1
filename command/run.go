package command

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sctrace/sctrace/expr"
	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/x86"
)

// breakCmd sets a hardware breakpoint.
func (e *Engine) breakCmd(ctx context.Context, c Command) error {
	addr, env, err := e.eval(ctx, c.Expr)
	if err != nil {
		return err
	}
	for _, b := range e.bps {
		if b.Addr == addr {
			return fmt.Errorf("breakpoint %d is already at %s", b.ID, e.name(addr))
		}
	}
	note, err := e.checkBreak(ctx, env, addr)
	if err != nil {
		return err
	}
	if err := e.S.Conn.SetBreakpoint(ctx, gdbremote.Hardware, addr, 1); err != nil {
		return fmt.Errorf("the stub refused a hardware breakpoint at %s: %w", e.name(addr), err)
	}
	e.nextBP++
	e.bps = append(e.bps, Breakpoint{ID: e.nextBP, Addr: addr, Spec: c.Expr.String()})
	e.printf("Breakpoint %d at %s (hardware)\n", e.nextBP, e.name(addr))
	if note != "" {
		e.printf("  note: %s\n", note)
	}
	return nil
}

// checkBreak says whether a breakpoint can go at addr, and adds a note
// where it works differently from what one might expect. A hardware
// breakpoint matches a linear address under whatever page tables are in
// force when it is reached, so the address must make sense there:
//   - a non-canonical address is never reached;
//   - a kernel address not mapped under the user page tables now in force
//     (KPTI) is accepted when a symbol names it: the kernel's tables map it;
//   - a user address while the kernel runs is accepted when the CR3 now in
//     force maps it, with a note that it matches in any process; when it
//     does not, the error says why.
func (e *Engine) checkBreak(ctx context.Context, env *expr.Live, addr uint64) (string, error) {
	st := env.State
	if !x86.Canonical(addr) {
		return "", fmt.Errorf("%#x is not a canonical address: the CPU can never run there", addr)
	}
	cr3 := st.Val(x86.CR3)
	_, err := e.S.Conn.ReadMemory(ctx, addr, 1)
	var se *gdbremote.StubError
	unmapped := errors.As(err, &se) && se.NotMapped()
	if err != nil && !unmapped {
		return "", expr.MemoryError(err, addr, st)
	}
	user := !x86.KernelHalf(addr)
	switch {
	case !unmapped && user && st.CPL() == 0:
		return fmt.Sprintf("%#x is a user address and the kernel is running: the breakpoint fires in whichever process next runs at that address", addr), nil
	case !unmapped:
		return "", nil
	case user && st.CPL() == 0:
		return "", fmt.Errorf("%#x is a user address, not mapped under the kernel's CR3 %#x now in force (CPL 0): user memory belongs to a process; stop in that process first (trace to the return to user mode), then set it", addr, cr3)
	case !user && st.CPL() == 3 && e.syms().Symbolize(addr) != "":
		return fmt.Sprintf("%s is not mapped under the user page tables now in force (CR3 %#x); the kernel's are, and the breakpoint fires there", e.name(addr), cr3), nil
	}
	return "", fmt.Errorf("%#x: not mapped under CR3 %#x", addr, cr3)
}

// deleteCmd removes breakpoints by number, or all of them.
func (e *Engine) deleteCmd(ctx context.Context, c Command) error {
	ids := c.IDs
	if len(ids) == 0 {
		for _, b := range e.bps {
			ids = append(ids, b.ID)
		}
		if len(ids) == 0 {
			e.printf("No breakpoints.\n")
			return nil
		}
	}
	for _, id := range ids {
		i := slices.IndexFunc(e.bps, func(b Breakpoint) bool { return b.ID == id })
		if i < 0 {
			return fmt.Errorf("no breakpoint %d (info breakpoints lists them)", id)
		}
		b := e.bps[i]
		if err := e.S.Conn.ClearBreakpoint(context.WithoutCancel(ctx), gdbremote.Hardware, b.Addr, 1); err != nil {
			return fmt.Errorf("breakpoint %d at %s: %w", id, e.name(b.Addr), err)
		}
		e.bps = slices.Delete(e.bps, i, i+1)
		e.printf("Deleted breakpoint %d at %s\n", id, e.name(b.Addr))
	}
	return nil
}

// untilCmd runs to a location with a breakpoint for this run only.
func (e *Engine) untilCmd(ctx context.Context, c Command) (err error) {
	addr, env, err := e.eval(ctx, c.Expr)
	if err != nil {
		return err
	}
	if env.State.Val(x86.RIP) == addr {
		return fmt.Errorf("the CPU is already at %s", e.name(addr))
	}
	temp := !slices.ContainsFunc(e.bps, func(b Breakpoint) bool { return b.Addr == addr })
	if temp {
		if _, err := e.checkBreak(ctx, env, addr); err != nil {
			return err
		}
		if err := e.S.Conn.SetBreakpoint(ctx, gdbremote.Hardware, addr, 1); err != nil {
			return fmt.Errorf("the stub refused a hardware breakpoint at %s: %w", e.name(addr), err)
		}
		defer func() {
			if cerr := e.S.Conn.ClearBreakpoint(context.WithoutCancel(ctx), gdbremote.Hardware, addr, 1); cerr != nil {
				err = errors.Join(err, fmt.Errorf("a hardware breakpoint may be left at %s: %w", e.name(addr), cerr))
			}
		}()
	}
	return e.cont(ctx, addr, temp)
}

// cont lets the guest run until it stops at a breakpoint (or at until,
// when not zero), ctrl-c, or the deadline; it reports where it stopped.
func (e *Engine) cont(ctx context.Context, until uint64, temp bool) error {
	st, err := e.state(ctx)
	if err != nil {
		return err
	}
	e.moved = true
	// Resuming at a breakpoint's own address would stop there again at
	// once: step off it first, as gdb does.
	if rip := st.Val(x86.RIP); e.bpAt(rip) != nil || rip == until {
		if st, err = e.S.Target.Step(ctx); err != nil {
			return err
		}
		if e.reportStop(st, until, temp) {
			return nil
		}
	}
	rctx, cancel := ctx, context.CancelFunc(func() {})
	if e.Deadline > 0 {
		rctx, cancel = context.WithTimeout(ctx, e.Deadline)
	}
	defer cancel()
	start := time.Now()
	// Every vCPU runs; the one that stops is followed from here on.
	sr, err := e.S.Target.ContinueAll(rctx)
	if sr.Kind == 'W' || sr.Kind == 'X' {
		return fmt.Errorf("the guest has exited (%s)", sr)
	}
	if err != nil {
		where := ""
		if st, serr := e.state(context.WithoutCancel(ctx)); serr == nil {
			where = "; the guest is stopped at " + e.name(st.Val(x86.RIP))
		}
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("%w%s", ErrInterrupted, where)
		case rctx.Err() != nil, e.Deadline > 0 && time.Since(start) >= e.Deadline:
			// The stub's read deadline is the context's, and may pass
			// a moment before the context says so.
			return fmt.Errorf("no breakpoint reached within %v%s", e.Deadline, where)
		}
		return err
	}
	if st, err = e.state(ctx); err != nil {
		return err
	}
	if !e.reportStop(st, until, temp) {
		e.printf("Stopped at %s (%s)\n", e.name(st.Val(x86.RIP)), sr)
	}
	return e.showInsn(ctx, st)
}

// reportStop says which breakpoint (or until's location) the CPU is at,
// counting the hit; false when it is at none.
func (e *Engine) reportStop(st *x86.State, until uint64, temp bool) bool {
	rip := st.Val(x86.RIP)
	if b := e.bpAt(rip); b != nil {
		b.Hits++
		e.printf("Breakpoint %d, %s\n", b.ID, e.name(rip))
		return true
	}
	if until != 0 && rip == until && temp {
		e.printf("Stopped at %s\n", e.name(rip))
		return true
	}
	return false
}

func (e *Engine) bpAt(addr uint64) *Breakpoint {
	for i := range e.bps {
		if e.bps[i].Addr == addr {
			return &e.bps[i]
		}
	}
	return nil
}

// lift removes the engine's breakpoints from the stub while something
// else drives the guest (a recording); the function it returns puts them
// back.
func (e *Engine) lift(ctx context.Context) (func() error, error) {
	var lifted []Breakpoint
	restore := func() error {
		var errs []error
		for _, b := range lifted {
			if err := e.S.Conn.SetBreakpoint(context.WithoutCancel(ctx), gdbremote.Hardware, b.Addr, 1); err != nil {
				errs = append(errs, fmt.Errorf("breakpoint %d at %s could not be set again: %w", b.ID, e.name(b.Addr), err))
				e.bps = slices.DeleteFunc(e.bps, func(x Breakpoint) bool { return x.ID == b.ID })
			}
		}
		return errors.Join(errs...)
	}
	for _, b := range e.bps {
		if err := e.S.Conn.ClearBreakpoint(ctx, gdbremote.Hardware, b.Addr, 1); err != nil {
			return nil, errors.Join(fmt.Errorf("lift breakpoint %d: %w", b.ID, err), restore())
		}
		lifted = append(lifted, b)
	}
	return restore, nil
}

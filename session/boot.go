package session

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sctrace/sctrace/target"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// Polling intervals of the wait for a guest to boot: the guest runs this
// long between two looks at its mode, starting short (a guest that is
// nearly there is caught at once) and growing so that a slow boot costs few
// interruptions.
const (
	bootPollFirst = 50 * time.Millisecond
	bootPollMax   = time.Second
)

// DefaultBootWait is how long --boot-wait lets a guest boot when no
// duration is given: Linux under TCG reaches user space in a few seconds.
const DefaultBootWait = 2 * time.Minute

// prepareAttached checks, before anything is read from a guest someone
// else started, that it runs a 64-bit kernel. A CPU in real mode (QEMU's -S
// waits at the reset vector) or in protected mode without long mode has no
// kernel symbols to find nor system calls to trace: with o.BootWait the
// guest is let run until a 64-bit kernel is at work (and its symbols can be
// read); without, the session opens where the CPU is names what it runs
// in Kernel, and ToEntry refuses at once.
func (s *Session) prepareAttached(ctx context.Context, o Options) error {
	st, err := s.Target.State(ctx)
	if err != nil {
		return err
	}
	if trace.KernelRunning(st) {
		return s.prepareLinux(ctx, o)
	}
	if o.BootWait <= 0 {
		if stage := trace.BootStage(st); stage != "" {
			s.Kernel = "no kernel running yet: the CPU is in " + stage
			return nil
		}
		return s.prepareLinux(ctx, o)
	}
	return s.bootWait(ctx, o, st)
}

// bootWait lets the guest run, looking at it now and then, until a 64-bit
// kernel is running and (without a symbol file) its symbols can be found,
// for at most o.BootWait. Stopping at the kernel's entry with a breakpoint
// would be quicker to write down than to make work: Linux first runs its
// entry code at the physical address it was loaded at, not at the linked
// address its symbols give, so the guest is polled instead: continued for
// a moment, interrupted, its CR0 and EFER read.
func (s *Session) bootWait(ctx context.Context, o Options, st *x86.State) error {
	started := time.Now()
	deadline := started.Add(o.BootWait)
	from := st.Val(x86.RIP)
	wait := bootPollFirst
	for {
		if trace.KernelRunning(st) {
			if err := s.prepareLinux(ctx, o); err != nil {
				return err
			}
			if s.recognised() || time.Now().After(deadline) {
				s.Notes = append(s.Notes, fmt.Sprintf("let the guest boot from %#x until a 64-bit kernel was running (%.1fs)", from, time.Since(started).Seconds()))
				return nil
			}
			// Too early in the kernel's start to find its symbols
			// and stacks: let it run on and look again.
			s.Kernel = "unknown kernel"
			wait = bootPollMax
		} else if time.Now().After(deadline) {
			stage := trace.BootStage(st)
			if stage == "" {
				stage = fmt.Sprintf("long mode at %#x, not yet in the kernel", st.Val(x86.RIP))
			}
			return fmt.Errorf("%w: still not running after letting it boot for %s: the CPU is in %s", trace.ErrNotBooted, o.BootWait, stage)
		}
		var err error
		if st, err = s.runFor(ctx, min(wait, time.Until(deadline)+time.Millisecond)); err != nil {
			return err
		}
		wait = min(2*wait, bootPollMax)
	}
}

// recognised says whether the session knows what kernel it is on.
func (s *Session) recognised() bool {
	return s.noSymbols || s.given || s.Symbols != nil || s.linux != nil
}

// runFor lets the guest run for d, stops it and reads its state.
func (s *Session) runFor(ctx context.Context, d time.Duration) (*x86.State, error) {
	rctx, cancel := context.WithTimeout(ctx, d)
	sr, err := s.Conn.Continue(rctx)
	cancel()
	switch {
	case ctx.Err() != nil:
		return nil, fmt.Errorf("waiting for the guest to boot: interrupted: %w", ctx.Err())
	case err != nil && !errors.Is(err, context.DeadlineExceeded):
		return nil, fmt.Errorf("waiting for the guest to boot: %w", err)
	case sr.Kind == 'W' || sr.Kind == 'X':
		return nil, fmt.Errorf("waiting for the guest to boot: %w (%s)", target.ErrExited, sr)
	}
	return s.Target.State(ctx)
}

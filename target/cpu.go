package target

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/x86"
)

// A CPU is one vCPU of the guest: its gdbstub thread and its index, as
// QEMU's -smp and monitor count them (0 is the boot CPU).
type CPU struct {
	Thread string
	Index  int
}

// String names the vCPU as "vCPU 1 (thread p01.02)".
func (c CPU) String() string {
	return fmt.Sprintf("vCPU %d (thread %s)", c.Index, c.Thread)
}

// ListCPUs asks the stub for its threads, one per vCPU in QEMU, and
// remembers them. A stub without the thread list (an empty or error
// reply) is taken as one CPU.
func (t *Target) ListCPUs(ctx context.Context) ([]CPU, error) {
	ids, err := t.Conn.Threads(ctx)
	if err != nil {
		var ue *gdbremote.UnsupportedError
		var se *gdbremote.StubError
		if errors.As(err, &ue) || errors.As(err, &se) {
			t.cpus = []CPU{}
			return nil, nil
		}
		return nil, fmt.Errorf("list vCPUs: %w", err)
	}
	cpus := make([]CPU, 0, len(ids))
	for _, id := range ids {
		i, err := gdbremote.ThreadCPU(id)
		if err != nil {
			return nil, fmt.Errorf("list vCPUs: %w", err)
		}
		cpus = append(cpus, CPU{Thread: id, Index: i})
	}
	t.cpus = cpus
	return cpus, nil
}

// CPUs returns the vCPUs ListCPUs found (nil before it, or for a stub
// with no thread list).
func (t *Target) CPUs() []CPU { return t.cpus }

// SMP reports whether the guest has more than one vCPU.
func (t *Target) SMP() bool { return len(t.cpus) > 1 }

// Followed returns the vCPU that register reads, steps and the monitor
// apply to, when the guest has more than one.
func (t *Target) Followed() (CPU, bool) {
	if !t.SMP() || t.thread == "" {
		return CPU{}, false
	}
	i := slices.IndexFunc(t.cpus, func(c CPU) bool { return c.Thread == t.thread })
	if i < 0 {
		return CPU{}, false
	}
	return t.cpus[i], true
}

// Follow makes thread the vCPU that register reads (Hg), single steps
// (vCont;s:thread, so that the other vCPUs stay stopped), continues within
// a system call and the monitor's `info registers` (monitor `cpu N`; the
// monitor otherwise always shows vCPU 0, whatever Hg says) apply to. A
// thread the stub no longer has gives an error that lists those it has.
func (t *Target) Follow(ctx context.Context, thread string) error {
	if !t.SMP() {
		return nil
	}
	i := slices.IndexFunc(t.cpus, func(c CPU) bool { return c.Thread == thread })
	if i < 0 {
		return fmt.Errorf("follow %s: %w", thread, t.gone(thread))
	}
	if err := t.Conn.SelectThreadID(ctx, 'g', thread); err != nil {
		return fmt.Errorf("follow %s: %w", thread, t.refused(thread, err))
	}
	if _, err := t.Conn.Monitor(ctx, "cpu "+strconv.Itoa(t.cpus[i].Index)); err != nil && !errors.Is(err, gdbremote.ErrUnknownCommand) {
		var ue *gdbremote.UnsupportedError
		if !errors.As(err, &ue) {
			return fmt.Errorf("follow %s: %w", thread, err)
		}
	}
	t.thread = thread
	return nil
}

// FollowStopped lists the vCPUs and, when there are several, follows the
// one the last stop named (the first vCPU when no stop named one). It is
// idempotent.
func (t *Target) FollowStopped(ctx context.Context) error {
	if t.cpus == nil {
		if _, err := t.ListCPUs(ctx); err != nil {
			return err
		}
	}
	if !t.SMP() {
		return nil
	}
	th := t.Conn.StoppedThread()
	if !slices.ContainsFunc(t.cpus, func(c CPU) bool { return c.Thread == th }) {
		th = t.cpus[0].Thread
	}
	if th == t.thread {
		return nil
	}
	return t.Follow(ctx, th)
}

// gone says that thread is not one of the vCPUs.
func (t *Target) gone(thread string) error {
	var have []string
	for _, c := range t.cpus {
		have = append(have, c.Thread)
	}
	return fmt.Errorf("%w: the stub has no thread %s (its vCPUs are %s)", ErrNoCPU, thread, strings.Join(have, ", "))
}

// refused explains the stub's refusal (an error reply) to select a
// thread it listed: the vCPU went away (QEMU answers E22 for a thread it
// does not have). Other errors are returned as they are.
func (t *Target) refused(thread string, err error) error {
	var se *gdbremote.StubError
	if !errors.As(err, &se) {
		return err
	}
	return fmt.Errorf("%w: the stub refused thread %s, which it listed before: the vCPU went away (%w)", ErrNoCPU, thread, err)
}

// ErrNoCPU is returned (wrapped) for a vCPU thread the stub does not have:
// a wrong number given, or a CPU that went away.
var ErrNoCPU = errors.New("no such vCPU")

// Peek reads the registers of another vCPU and selects the followed one
// again, leaving every vCPU where it was.
func (t *Target) Peek(ctx context.Context, thread string) (_ *x86.State, err error) {
	if err := t.Conn.SelectThreadID(ctx, 'g', thread); err != nil {
		return nil, fmt.Errorf("read %s: %w", thread, t.refused(thread, err))
	}
	defer func() {
		if t.thread == "" {
			return
		}
		if serr := t.Conn.SelectThreadID(context.WithoutCancel(ctx), 'g', t.thread); serr != nil && err == nil {
			err = fmt.Errorf("back to %s after reading %s: %w", t.thread, thread, serr)
		}
	}()
	return t.State(ctx)
}

// ContinueAll lets every vCPU run until one stops (a breakpoint, ctrl-c),
// then follows the vCPU that stopped: QEMU stops all of them and names the
// one that hit in its stop reply.
func (t *Target) ContinueAll(ctx context.Context) (gdbremote.StopReply, error) {
	sr, err := t.Conn.Continue(ctx)
	if err != nil || sr.Kind == 'W' || sr.Kind == 'X' {
		return sr, err
	}
	if t.SMP() && sr.Thread != "" && sr.Thread != t.thread {
		if ferr := t.Follow(ctx, sr.Thread); ferr != nil {
			return sr, ferr
		}
	}
	return sr, nil
}

// ContinueFollowed lets only the followed vCPU run (vCont;c:thread) until
// it stops, so that a breakpoint set inside a system call stops the vCPU
// making it and not another running the same code. With one vCPU it is a
// plain continue. A call that waits for another vCPU (a lock it holds, an
// IPI it must answer) then waits until the deadline, as it would while
// single-stepping.
func (t *Target) ContinueFollowed(ctx context.Context) (gdbremote.StopReply, error) {
	if _, ok := t.Followed(); !ok {
		return t.Conn.Continue(ctx)
	}
	sr, err := t.Conn.ContinueVCont(ctx, t.thread)
	var ue *gdbremote.UnsupportedError
	if errors.As(err, &ue) {
		return t.ContinueAll(ctx)
	}
	return sr, err
}

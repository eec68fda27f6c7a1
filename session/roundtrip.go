package session

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/trace"
)

// Recorder is what a round trip needs of a recorder: set up at the current
// stop, run the guest to the next user instruction that enters the kernel,
// record one instruction, record until a condition says stop, and give the
// trace recorded so far. *trace.Recorder, which single-steps QEMU's
// gdbstub, is one; a recorder that reads QEMU's instruction log can be
// another.
type Recorder interface {
	// Init reads the state at the current stop, before the first step.
	Init(ctx context.Context) error
	// ToEntry lets the guest run to the next user instruction that enters
	// the kernel by m, and starts a fresh trace there.
	ToEntry(ctx context.Context, m mechanism.Mechanism) error
	// Step records one instruction and returns it.
	Step(ctx context.Context) (*trace.Step, error)
	// Run records until one of until says stop, the step budget runs out
	// or ctx is cancelled (a stop, not an error), and says why it stopped.
	Run(ctx context.Context, until ...trace.Until) (trace.StopReason, error)
	// Trace returns the trace recorded so far; its Final is the state
	// after the last step.
	Trace() *trace.Trace
}

// siteFinder is a Recorder that can run to one of a few user instructions
// known beforehand (trace.Recorder.ToSites).
type siteFinder interface {
	ToSites(ctx context.Context, m mechanism.Mechanism, sites []uint64, what string) error
}

// msrProber is a Recorder that can read the MSRs in the guest
// (trace.Recorder.ProbeMSRs), which --probe-msrs asks for.
type msrProber interface {
	ProbeMSRs(ctx context.Context) ([]annotate.Effect, error)
}

// errNoProbe is returned when MSRs are to be probed with a recorder that
// cannot run code in the guest.
var errNoProbe = errors.New("this recorder cannot probe the MSRs")

// waitNotice is how long ToEntry waits for the guest before it calls
// Session.Waiting.
const waitNotice = 3 * time.Second

// RoundTrip runs the guest to the next user instruction that enters the
// kernel by m and records from there until one of until says stop
// (trace.BackInUser when none is given): ToEntry, then Record. On ctrl-c it
// returns what was recorded so far with the context's error.
func (s *Session) RoundTrip(ctx context.Context, m mechanism.Mechanism, until ...trace.Until) (*trace.Trace, error) {
	if err := s.ToEntry(ctx, m); err != nil {
		if ctx.Err() != nil {
			return s.rec.Trace(), err
		}
		return nil, err
	}
	return s.Record(ctx, until...)
}

// ToEntry runs the guest to the next user instruction that enters the
// kernel by m and starts a fresh trace there, named after m. On Linux it
// then finds the running task's stack again, since the task may have
// changed. When the guest takes longer than a moment, Waiting (if set) is
// told.
func (s *Session) ToEntry(ctx context.Context, m mechanism.Mechanism) error {
	if s.Waiting != nil {
		wait := time.AfterFunc(waitNotice, func() { s.Waiting(m) })
		defer wait.Stop()
	}
	find := func() error { return s.rec.ToEntry(ctx, m) }
	switch {
	case len(s.compatSites[m]) > 0:
		// An i386 program's own sysenter or syscall, from compatibility
		// mode: known from its ELF, since neither leaves a return address
		// at an entry sctrace breaks on.
		find = func() error {
			f, ok := s.rec.(siteFinder)
			if !ok {
				return fmt.Errorf("this recorder cannot break on the program's %s", m.Instruction())
			}
			return f.ToSites(ctx, m, s.compatSites[m], s.describeCall(m))
		}
	case s.syscall != nil:
		m, find = mechanism.Syscall, func() error { return s.toSyscall(ctx, s.syscall.Nr) }
	case len(s.syscallSites) > 0 && (m == "" || m == mechanism.Syscall):
		// A program of the user's: its own next call, not /init's.
		m, find = mechanism.Syscall, func() error { return s.toSyscall(ctx, -1) }
	}
	if err := find(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted before the %s was reached: %w", s.describeCall(m), ctx.Err())
		}
		return s.explain(err)
	}
	s.refreshLinux(ctx)
	if m != "" {
		s.rec.Trace().Header.Mechanism = string(m)
	}
	s.nameSyscall(ctx)
	return nil
}

// Record records from the current stop until one of until says stop
// (trace.BackInUser when none is given), probing the MSRs on the way in
// when the session was opened with ProbeMSRs. On ctrl-c it returns what was
// recorded so far with the context's error.
func (s *Session) Record(ctx context.Context, until ...trace.Until) (*trace.Trace, error) {
	_, err := record(ctx, s.rec, s.probeMSRs, until)
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return s.rec.Trace(), s.explain(err)
}

// record is the recording half of a round trip: with probe, one step into
// the kernel, the MSRs read there, then on until a condition says stop. A
// ctrl-c is a stop (trace.StopCancel), not an error.
func record(ctx context.Context, rec Recorder, probe bool, until []trace.Until) (trace.StopReason, error) {
	if len(until) == 0 {
		until = []trace.Until{trace.BackInUser()}
	}
	if probe {
		p, ok := rec.(msrProber)
		if !ok {
			return "", errNoProbe
		}
		st, err := rec.Step(ctx)
		if err != nil {
			return "", err
		}
		t := rec.Trace()
		for _, c := range until {
			if why := c(st, t.Final); why != "" {
				t.Header.Stop = string(why)
				return why, nil
			}
		}
		if _, err := p.ProbeMSRs(ctx); err != nil {
			return "", err
		}
	}
	return rec.Run(ctx, until...)
}

// Package tui is sctrace's terminal user interface: a bubbletea program
// that shows a system call's path one instruction at a time, with panes for
// the code, the registers, the system state (CPL, GS bases, CR3, EFER,
// MSRs), the stack and each step's effects.
//
// The model is built on a Driver: a live driver steps a guest through a
// session, a replay driver walks a saved trace. Every guest operation runs
// in a tea.Cmd, never in Update, so the screen stays responsive.
package tui

import (
	"context"
	"errors"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/watch"
	"github.com/sctrace/sctrace/x86"
)

// Line is one instruction disassembled from guest memory ahead of the
// recorded steps.
type Line struct {
	Addr   uint64
	Symbol string // sym+off, or ""
	Bytes  []byte
	Intel  string
	ATT    string
	// Op is the decoded operation, which the model compares (the text
	// is only shown).
	Op x86asm.Op
}

// Asm returns the line's disassembly in the chosen syntax.
func (l Line) Asm(syn trace.Syntax) string {
	if syn == trace.ATT {
		return l.ATT
	}
	return l.Intel
}

// Snapshot is what the model shows: the steps recorded so far and the live
// state after the last of them. The model only reads it, and may do so
// while the driver runs the next operation: nothing a snapshot reaches is
// changed after the driver has handed it out (the recorder only appends
// steps and probes past the snapshot's length).
type Snapshot struct {
	Header trace.Header
	// Trace holds the steps recorded so far: a view (trace.Trace.View)
	// that the steps the recorder appends later do not change. Nil when
	// nothing has been recorded.
	Trace *trace.Trace
	// Probes are the MSR probes run so far (see trace.Probe).
	Probes []trace.Probe
	// Current is the state after the last step (before the first one when
	// no step has been recorded); nil when unknown.
	Current *x86.State
	// Stack holds words at Current's RSP when they could be read.
	Stack []uint64
	// Upcoming are the instructions at Current's RIP, when live.
	Upcoming []Line
	// Watches are the watches evaluated at Current in the live guest.
	Watches []watch.Value
}

// Len returns the number of steps in the snapshot.
func (s Snapshot) Len() int {
	if s.Trace == nil {
		return 0
	}
	return s.Trace.Len()
}

// Step returns step i, 0 <= i < Len().
func (s Snapshot) Step(i int) *trace.Step { return s.Trace.Step(i) }

// Driver is what the model steps and reads. Step, Run and NextEntry may
// block on the guest; the model calls them from a tea.Cmd, one at a time.
type Driver interface {
	// Live reports whether a guest is attached (false for a replay).
	Live() bool
	// Snapshot returns the data to show. It is called only while no
	// operation is running.
	Snapshot() Snapshot
	// Step executes one instruction in the guest, or, when over is set and
	// the instruction is a call, the whole call.
	Step(ctx context.Context, over bool) error
	// Run steps until cond says stop, the step budget runs out or ctx is
	// cancelled.
	Run(ctx context.Context, cond trace.Until) (trace.StopReason, error)
	// NextEntry lets the guest run to the next user instruction that enters
	// the kernel, and starts a fresh recording there.
	NextEntry(ctx context.Context) error
	// RoundTrip records a round trip back to user mode: from the next
	// user instruction that enters the kernel when entry is set (a fresh
	// recording), else on from the current stop. A ctrl-c is a stop
	// (trace.StopCancel), not an error, once recording has begun.
	RoundTrip(ctx context.Context, entry bool) (trace.StopReason, error)
	// ProbeMSRs reads the MSRs with rdmsr in the guest at the current stop,
	// which must be at CPL 0, and adds what it learnt to the recording
	// (trace.Recorder.ProbeMSRs). It returns how many were read.
	ProbeMSRs(ctx context.Context) (int, error)
	// Trace returns the recording so far, for saving.
	Trace() *trace.Trace
	// Close releases the guest: breakpoints removed, QEMU ended when
	// sctrace started it.
	Close() error
}

// ErrReplay is returned by a replay driver's guest operations.
var ErrReplay = errors.New("replay: no guest attached, only the recorded steps can be shown")

// Replay is a Driver over a saved trace.
type Replay struct{ T *trace.Trace }

// NewReplay returns a driver that shows t.
func NewReplay(t *trace.Trace) *Replay { return &Replay{T: t} }

// Live reports false.
func (r *Replay) Live() bool { return false }

// Snapshot returns the whole trace; the current state is its final one.
func (r *Replay) Snapshot() Snapshot {
	return Snapshot{Header: r.T.Header, Trace: r.T, Probes: r.T.Probes, Current: r.T.Final}
}

// Step fails: a replay has no guest.
func (r *Replay) Step(context.Context, bool) error { return ErrReplay }

// Run fails: a replay has no guest.
func (r *Replay) Run(context.Context, trace.Until) (trace.StopReason, error) { return "", ErrReplay }

// NextEntry fails: a replay has no guest.
func (r *Replay) NextEntry(context.Context) error { return ErrReplay }

// RoundTrip fails: a replay has no guest.
func (r *Replay) RoundTrip(context.Context, bool) (trace.StopReason, error) { return "", ErrReplay }

// ProbeMSRs returns ErrReplay.
func (r *Replay) ProbeMSRs(context.Context) (int, error) { return 0, ErrReplay }

// Trace returns the trace.
func (r *Replay) Trace() *trace.Trace { return r.T }

// Close does nothing.
func (r *Replay) Close() error { return nil }

package tui

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/command"
	"github.com/sctrace/sctrace/expr"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/session"
	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/watch"
	"github.com/sctrace/sctrace/x86"
)

// StackWords is how many words at RSP the live driver reads for the stack
// pane, and asks the recorder to keep with each step.
const StackWords = 24

// refreshTimeout bounds the reads after an interrupted operation.
const refreshTimeout = 2 * time.Second

// upcomingBytes is how much code the live driver reads ahead of RIP.
const upcomingBytes = 96

// Live is a Driver over an attached session. Its methods must not be
// called concurrently; the model runs one at a time.
type Live struct {
	S         *session.Session
	Mechanism mechanism.Mechanism
	snap      Snapshot
	eng       *command.Engine
	watches   *watch.List
	ahead     []Line // the answer of the last /> search
	// recorded counts the steps of the recording in flight (Recorded):
	// the model reads it while the recorder appends.
	recorded atomic.Int64
}

// Recorded returns how many steps the operation in flight (Run,
// RoundTrip) has recorded so far. It may be called while it runs.
func (d *Live) Recorded() int { return int(d.recorded.Load()) }

// counting returns cond that also counts the steps it is asked about.
func (d *Live) counting(cond trace.Until) trace.Until {
	d.recorded.Store(0)
	return func(s *trace.Step, now *x86.State) trace.StopReason {
		d.recorded.Add(1)
		if cond == nil {
			return ""
		}
		return cond(s, now)
	}
}

// engine returns the command engine on the driver's session, made on
// first use.
func (d *Live) engine() *command.Engine {
	if d.eng == nil {
		d.eng = command.New(d.S, nil)
		d.eng.Mechanism = d.Mechanism
		// The TUI steps the recorder itself: it is at the current stop.
		d.eng.Following()
	}
	return d.eng
}

func (d *Live) symbols() *symbols.Table { return d.S.Symbols }

// setWatches sets the watches the next refresh evaluates.
func (d *Live) setWatches(l *watch.List) { d.watches = l }

// NewLive returns a driver over s that enters the kernel by m. It reads
// the current state so that Snapshot has something to show at once.
func NewLive(ctx context.Context, s *session.Session, m mechanism.Mechanism) *Live {
	if s.Recorder.StackWords == 0 {
		s.Recorder.StackWords = StackWords
	}
	d := &Live{S: s, Mechanism: m}
	d.refresh(ctx)
	return d
}

// Live reports true.
func (d *Live) Live() bool { return true }

// Snapshot returns what the last operation left.
func (d *Live) Snapshot() Snapshot { return d.snap }

// Step executes one instruction, or a whole call when over is set; the
// call runs to its return with the command line's breakpoints out of the
// stub, as in Run.
func (d *Live) Step(ctx context.Context, over bool) (err error) {
	defer d.refresh(ctx)
	r := d.S.Recorder
	if over {
		saved := r.Over
		r.Over = 1
		defer func() { r.Over = saved }()
		restore, err := d.lift(ctx)
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, restore()) }()
	}
	_, err = r.Step(ctx)
	return err
}

// Run steps until cond says stop. The command line's breakpoints are
// out of the stub meanwhile, as for a run to an entry: the recorder lets
// the guest run to a call's return or an interrupt's, and a breakpoint of
// the user's would stop it there instead.
func (d *Live) Run(ctx context.Context, cond trace.Until) (_ trace.StopReason, err error) {
	defer d.refresh(ctx)
	restore, err := d.lift(ctx)
	if err != nil {
		return "", err
	}
	defer func() { err = errors.Join(err, restore()) }()
	return d.S.Recorder.Run(ctx, d.counting(cond))
}

// NextEntry runs the guest to the next user instruction that enters the
// kernel by the driver's mechanism and starts a fresh recording there.
func (d *Live) NextEntry(ctx context.Context) (err error) {
	defer d.refresh(ctx)
	restore, err := d.lift(ctx)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, restore()) }()
	return d.S.ToEntry(ctx, d.Mechanism)
}

// lift takes the command line's breakpoints out of the stub while the
// driver lets the guest run to an entry: they are the user's stops, not
// the entry's.
func (d *Live) lift(ctx context.Context) (func() error, error) {
	if d.eng == nil || len(d.eng.Breakpoints()) == 0 {
		return func() error { return nil }, nil
	}
	return d.eng.Lift(ctx)
}

// RoundTrip records a round trip through the session (Session.ToEntry,
// then Session.Record back to user mode), from the next entry by the
// driver's mechanism when entry is set.
func (d *Live) RoundTrip(ctx context.Context, entry bool) (trace.StopReason, error) {
	defer d.refresh(ctx)
	if entry {
		restore, err := d.lift(ctx)
		if err != nil {
			return "", err
		}
		err = d.S.ToEntry(ctx, d.Mechanism)
		if err = errors.Join(err, restore()); err != nil {
			return "", err
		}
	}
	t, err := d.S.Record(ctx, d.counting(nil), trace.BackInUser())
	why := trace.StopReason(t.Header.Stop)
	if why == trace.StopCancel && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		// Interrupted while recording: what was recorded is the result.
		return why, nil
	}
	return why, err
}

// ProbeMSRs reads the MSRs with rdmsr in the guest at the current stop.
func (d *Live) ProbeMSRs(ctx context.Context) (int, error) {
	defer d.refresh(ctx)
	effs, err := d.S.Recorder.ProbeMSRs(ctx)
	return len(effs), err
}

// Trace returns the recording so far.
func (d *Live) Trace() *trace.Trace { return d.S.Recorder.Trace() }

// Close removes the breakpoints commands set and ends the session.
func (d *Live) Close() error {
	var err error
	if d.eng != nil {
		err = d.eng.Close(context.Background())
	}
	return errors.Join(err, d.S.Close())
}

// refresh rebuilds the snapshot from the recorder and the guest: the steps,
// the current state, the words at RSP and the code ahead of RIP. Errors
// reading memory leave those parts empty. The context may already be
// cancelled (ctrl-c); the reads then use a fresh short one so the screen
// still shows where the guest stopped.
func (d *Live) refresh(ctx context.Context) {
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), refreshTimeout)
		defer cancel()
	}
	r := d.S.Recorder
	t := r.Trace()
	hdr := t.Header
	hdr.Regions = append([]annotate.Region(nil), hdr.Regions...)
	snap := Snapshot{Header: hdr, Trace: t.View(t.Len()), Probes: t.Probes, Current: r.Current()}
	if cur := snap.Current; cur != nil {
		for _, w := range r.ReadStack(ctx, cur.Val(x86.RSP), StackWords) {
			snap.Stack = append(snap.Stack, uint64(w))
		}
		snap.Upcoming = d.upcoming(ctx, cur)
		if d.watches != nil && d.watches.Len() > 0 {
			env := &expr.Live{Ctx: ctx, T: d.S.Target, State: cur, Symbols: d.S.Symbols, Regions: hdr.Regions}
			snap.Watches = d.watches.Eval(env)
		}
	}
	d.snap = snap
}

// upcoming disassembles the code at the current RIP, to the first
// instruction after which the bytes that follow are not the next to run.
func (d *Live) upcoming(ctx context.Context, st *x86.State) []Line {
	return d.decode(ctx, st, upcomingBytes, true)
}

// decode disassembles size bytes at st's RIP, stopping at the end of the
// straight-line code when flow is set.
func (d *Live) decode(ctx context.Context, st *x86.State, size int, flow bool) []Line {
	rip := st.Val(x86.RIP)
	code, err := d.S.Target.ReadCode(ctx, st.Val(x86.CR3), rip, size)
	if err != nil {
		return nil
	}
	syms := d.S.Symbols
	var out []Line
	for off := 0; off < len(code); {
		inst, n, err := annotate.Decode(code[off:])
		if err != nil || n == 0 || off+n > len(code) {
			break
		}
		pc := rip + uint64(off)
		b := code[off : off+n]
		out = append(out, Line{
			Addr: pc, Symbol: syms.Symbolize(pc), Bytes: b,
			Intel: trace.Disasm(inst, b, pc, annotate.OperandSymbols(inst, syms), trace.Intel),
			ATT:   trace.Disasm(inst, b, pc, annotate.OperandSymbols(inst, syms), trace.ATT),
			Op:    inst.Op,
		})
		off += n
		if flow && endsFlow(inst.Op) {
			break
		}
	}
	return out
}

// endsFlow reports instructions after which the bytes that follow are not
// the next to run.
func endsFlow(op x86asm.Op) bool {
	switch op {
	case x86asm.JMP, x86asm.RET, x86asm.LRET, x86asm.SYSRET, x86asm.SYSEXIT, x86asm.IRETQ, x86asm.IRETD, x86asm.IRET, x86asm.UD2, x86asm.HLT:
		return true
	}
	return false
}

// StartLive returns a Config.Start function: it opens a session (booting
// QEMU or attaching), sets up a live driver that enters the kernel by m, and,
// when toEntry is set, runs the guest to the next such entry so the TUI
// opens stopped before it. On failure the session is closed.
func StartLive(open func(ctx context.Context) (*session.Session, error), m mechanism.Mechanism, toEntry bool) func(ctx context.Context) (Driver, error) {
	return func(ctx context.Context) (Driver, error) {
		s, err := open(ctx)
		if err != nil {
			return nil, err
		}
		d := NewLive(ctx, s, m)
		if toEntry {
			if err := d.NextEntry(ctx); err != nil {
				s.Close()
				return nil, fmt.Errorf("run to the next %s: %w", cmp.Or(string(m), "system call"), err)
			}
		}
		return d, nil
	}
}

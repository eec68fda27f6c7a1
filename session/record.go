package session

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/qemulog"
	"github.com/sctrace/sctrace/trace"
)

// The recorders a session can record with (Options.Record).
const (
	// RecordStep single-steps every instruction through the gdbstub.
	RecordStep = "step"
	// RecordLog records every instruction from QEMU's instruction log
	// (trace.LogRecorder); it needs TCG.
	RecordLog = "log"
	// RecordAuto single-steps the first LogAfter instructions of a round
	// trip and hands the rest over to the log, where the log can be
	// switched on; elsewhere it single-steps throughout.
	RecordAuto = "auto"
)

// Recorders lists the recorders Options.Record names.
var Recorders = []string{RecordStep, RecordLog, RecordAuto}

// DefaultLogAfter is how many instructions RecordAuto single-steps before
// it hands over to the log.
const DefaultLogAfter = 2000

// DefaultLogBudget is the instruction budget of a round trip recorded
// with the log when none is given: enough for the long calls (an execve
// of Linux is about 2×10⁵ instructions) and bounded, so that a guest that
// never comes back stops.
const DefaultLogBudget = 2_000_000

// ICountArgs are the QEMU arguments sctrace adds when it starts a TCG guest
// whose round trips may be recorded from the log: guest time follows the
// instructions executed (one per nanosecond) and not the host's clock, so
// that the slower, logged run takes no more timer interrupts than a free
// one would (see trace.LogRecorder).
var ICountArgs = []string{"-icount", "shift=0,sleep=off"}

// noICountSMP is what a Linux guest with several vCPUs started for the log
// or auto recorder runs without, and why: under `-icount shift=0` QEMU
// runs the vCPUs in turn on guest time, and Linux's secondary-CPU
// bring-up never completes (6.1 stops after "x86: Booting SMP
// configuration:"), whereas it boots without it.
const noICountSMP = "QEMU runs without -icount: Linux with several vCPUs never brings its secondary CPUs up under -icount shift=0, so guest time follows the host's clock and a call recorded from the log may take more timer interrupts than a free one"

// CheckRecord checks Options.Record and LogAfter as a user gave them:
// a known recorder ("" is RecordStep), and a hand-over point only where
// there is a hand-over (auto), or with log meaning steps before the log.
func CheckRecord(record string, logAfter int, logAfterGiven bool) error {
	switch record {
	case "", RecordStep, RecordLog, RecordAuto:
	default:
		return fmt.Errorf("unknown recorder %q (want %s)", record, strings.Join(Recorders, ", "))
	}
	if logAfterGiven && (record == "" || record == RecordStep) {
		return fmt.Errorf("--log-after hands a round trip over to the log recorder: it goes with --record auto or log, not %s", cmp.Or(record, RecordStep))
	}
	if logAfter < 0 {
		return fmt.Errorf("--log-after must be 0 or more, not %d", logAfter)
	}
	return nil
}

// mayLog says whether round trips of a session with these options may be
// recorded from QEMU's log.
func (o Options) mayLog() bool { return o.Record == RecordLog || o.Record == RecordAuto }

// qemuExtra returns the arguments a QEMU sctrace starts under accelerator
// name gets for o's recorder.
func (o Options) qemuExtra(name string) []string {
	if o.mayLog() && name != "kvm" {
		return ICountArgs
	}
	return nil
}

// linuxQEMUExtra is qemuExtra for a Linux guest: nothing on a guest with
// several vCPUs (see noICountSMP).
func (o Options) linuxQEMUExtra(name string) []string {
	if o.SMP > 1 {
		return nil
	}
	return o.qemuExtra(name)
}

// checkAccel refuses the log recorder on a guest sctrace would start under
// KVM, before it boots.
func (o Options) checkAccel(name string) error {
	if o.Record == RecordLog && name == "kvm" {
		return fmt.Errorf("--record log: %w; use --accel tcg, or --record auto or step", qemulog.ErrNotTCG)
	}
	return nil
}

// logRecorder records with QEMU's log and, for RecordAuto, goes on by
// single steps where the log cannot be switched on, saying why once.
type logRecorder struct {
	*trace.LogRecorder
	auto bool
	// stepBudget is the budget single-stepping keeps after a fall-back.
	stepBudget int
	// unavailable is why the log could not be switched on, once it was
	// tried.
	unavailable error
	// kvm is set for a guest sctrace started under KVM: the log is known
	// to be unavailable before it is tried.
	kvm    bool
	notice func(string)
	// runLog records with the log: LogRecorder.Run, or a stand-in in
	// tests.
	runLog func(context.Context, ...trace.Until) (trace.StopReason, error)
	// note, when set, is said once, at the first Run that may use the
	// log: how the guest's QEMU differs from what the log expects.
	note string
}

// Run records with the log, or, when the log is unavailable and the
// recorder is auto, by single steps; the steps already recorded stay.
func (l *logRecorder) Run(ctx context.Context, until ...trace.Until) (trace.StopReason, error) {
	if l.unavailable == nil && l.kvm {
		l.fallBack(qemulog.ErrNotTCG)
	}
	r := l.LogRecorder.Recorder
	if l.unavailable == nil {
		if l.note != "" && l.notice != nil {
			l.notice(l.note)
			l.note = ""
		}
		run := l.runLog
		if run == nil {
			run = l.LogRecorder.Run
		}
		why, err := run(ctx, until...)
		var ue *trace.LogUnavailableError
		switch l.afterLog(err) {
		case logStepOn:
			errors.As(err, &ue)
			l.fallBack(ue.Err)
		case logLost:
			// The guest ran on to its return, past the code the log
			// left out: stepping from there would record other code.
			// The steps recorded stay, the round ends here, and the
			// rounds after it are single-stepped.
			l.unavailable = err
			if l.notice != nil {
				l.notice(fmt.Sprintf("--record auto: %v; this round trip ends after the %d steps recorded before the hand-over, and the ones after it are single-stepped throughout", err, r.Trace().Len()))
			}
			why = StopLogLost
			r.Trace().Header.Stop = string(why)
			return why, nil
		default:
			return why, err
		}
	}
	saved := r.Budget
	r.Budget = l.stepBudget
	defer func() { r.Budget = saved }()
	why, err := r.Run(ctx, until...)
	if h := &r.Trace().Header; len(h.Recorders) == 0 {
		// Say in the trace why it was not handed over to the log.
		h.Recorders = []trace.RecorderSpan{{From: 0, To: r.Trace().Len(), Recorder: trace.RecorderStep,
			Detail: fmt.Sprintf("single steps throughout: --record auto could not use QEMU's instruction log (%v)", l.unavailable)}}
	}
	return why, err
}

// StopLogLost ends a round trip --record auto handed over to a log that
// turned out to hold none of the traced code (trace.ErrNothingTraced).
const StopLogLost trace.StopReason = "the instruction log held none of the traced code after the hand-over; the steps before it are kept"

// What the auto recorder does after the log recorder's error.
const (
	logFail   = iota // report the error (--record log, or any other error)
	logStepOn        // the log could not be switched on: single-step from where the guest is
	logLost          // the log held none of the traced code: end the round, step the next ones
)

// afterLog decides what Run does after the log recorder returned err.
func (l *logRecorder) afterLog(err error) int {
	var ue *trace.LogUnavailableError
	switch {
	case !l.auto || err == nil:
		return logFail
	case errors.As(err, &ue):
		return logStepOn
	case errors.Is(err, trace.ErrNothingTraced):
		return logLost
	}
	return logFail
}

// fallBack makes the recorder single-step from now on, and says why.
func (l *logRecorder) fallBack(why error) {
	l.unavailable = why
	if l.notice != nil {
		l.notice(fmt.Sprintf("--record auto single-steps throughout: %v", why))
	}
}

// useRecorder sets up the recorder o.Record asks for around r.
func (s *Session) useRecorder(r *trace.Recorder, o Options) {
	s.Recorder, s.rec = r, r
	if !o.mayLog() {
		return
	}
	l := &logRecorder{LogRecorder: trace.NewLogRecorder(r), auto: o.Record == RecordAuto, stepBudget: r.Budget}
	l.notice = func(msg string) {
		if s.Notice != nil {
			s.Notice(msg)
		}
	}
	l.After = o.LogAfter
	if o.Budget <= 0 {
		r.Budget = DefaultLogBudget
	}
	// Known before anything is tried: said at the first round trip
	// rather than asked of the monitor.
	l.kvm = s.QEMU != nil && s.QEMU.Accel == "kvm"
	if s.linux != nil && s.linux.boot != nil && o.SMP > 1 && !l.kvm {
		l.note = noICountSMP
	}
	s.rec, s.log = l, l
}

// LogUnavailable says why the session's auto recorder single-steps
// throughout, once it knows; nil while the log is usable or untried, and
// for the other recorders.
func (s *Session) LogUnavailable() error {
	if s.log == nil {
		return nil
	}
	return s.log.unavailable
}

// RecordFast records the rest of the round trip from the current stop with
// QEMU's log, whatever recorder the session was opened with, until one of
// until says stop (trace.BackInUser when none is given). It is what a
// viewer offers where the stepping is too slow for what is left.
func (s *Session) RecordFast(ctx context.Context, until ...trace.Until) (*trace.Trace, error) {
	if len(until) == 0 {
		until = []trace.Until{trace.BackInUser()}
	}
	if m := mechanism.Mechanism(s.Recorder.Trace().Header.Mechanism); m.Event() {
		return s.Recorder.Trace(), fmt.Errorf("the log recorder follows a system call to the instruction after it; %s enters by an exception or an interrupt, which it does not follow: record it by single steps", m.A())
	}
	if c := s.Recorder.Current(); c != nil && c.CPL() == 3 && c.Sys.CompatMode() {
		return s.Recorder.Trace(), errors.New("the log recorder starts in 64-bit code: QEMU's instruction log dumps 32-bit code (compatibility mode, here) without the 64-bit registers; single-step into the kernel first")
	}
	l := trace.NewLogRecorder(s.Recorder)
	saved := s.Recorder.Budget
	s.Recorder.Budget = max(saved, DefaultLogBudget)
	defer func() { s.Recorder.Budget = saved }()
	_, err := l.Run(ctx, until...)
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	return l.Trace(), s.explain(err)
}

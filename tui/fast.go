package tui

import (
	"context"

	tea "charm.land/bubbletea/v2"

	"github.com/sctrace/sctrace/trace"
)

// opFast records the rest of the round trip with QEMU's instruction log.
const opFast opKind = 100

// fastRecorder is a Driver that can record the rest of a round trip from
// QEMU's instruction log.
type fastRecorder interface {
	RecordFast(ctx context.Context) (trace.StopReason, error)
}

// RecordFast records from the current stop back to user mode with QEMU's
// instruction log (session.Session.RecordFast).
func (d *Live) RecordFast(ctx context.Context) (trace.StopReason, error) {
	defer d.refresh(ctx)
	t, err := d.S.RecordFast(ctx)
	return trace.StopReason(t.Header.Stop), err
}

// recordFast starts opFast: from a stop in the kernel, the rest of its
// round trip; from the user instruction that enters it, the whole round
// trip.
func (m *Model) recordFast() (tea.Model, tea.Cmd) {
	if _, ok := m.drv.(fastRecorder); !ok && m.drv.Live() {
		m.say("this guest cannot record from QEMU's log")
		return m, nil
	}
	return m.guest(op{kind: opFast, label: "recording the rest of the round trip from QEMU's log"})
}

// runFast is opFast's work, in the guest operation's tea.Cmd.
func runFast(ctx context.Context, d Driver) (trace.StopReason, error) {
	return d.(fastRecorder).RecordFast(ctx)
}

// recorderLabel says which recorder made the step at the cursor, for the
// status line: "" for a trace single-stepped throughout.
func (m *Model) recorderLabel() string {
	n := m.snap.Len()
	if n == 0 || len(m.snap.Header.Recorders) == 0 {
		return ""
	}
	if m.snap.Header.RecorderOf(min(m.pos, n-1)) == trace.RecorderLog {
		return "logged"
	}
	return "stepped"
}

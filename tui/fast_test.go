package tui

import (
	"context"
	"strings"
	"testing"

	"github.com/sctrace/sctrace/trace"
)

// fakeFast is a live driver that can also record the rest of a round trip
// from the log: RecordFast hands out every remaining step at once and
// marks them logged, as the session's log recorder does in the header.
type fakeFast struct{ *fakeLive }

func (f fakeFast) RecordFast(ctx context.Context) (trace.StopReason, error) {
	from := f.n
	if err := f.op(ctx, f.src.Len()); err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.src.Header.Recorders = []trace.RecorderSpan{
		{From: 0, To: from, Recorder: trace.RecorderStep},
		{From: from, To: f.src.Len(), Recorder: trace.RecorderLog},
	}
	return trace.StopUser, nil
}

// TestRecordFastKey presses L: with a driver that records from the log,
// the rest of the round trip arrives in one operation and the status line
// says which recorder made the step at the cursor; a live driver that
// cannot, and a replay, say why nothing happens.
func TestRecordFastKey(t *testing.T) {
	src := loadTrace(t)
	f := fakeFast{&fakeLive{src: src, release: make(chan struct{}, 10)}}
	m := New(Config{Driver: f})
	// One step by single-stepping, then the rest from the log.
	_, cmd := m.Update(press("s"))
	f.release <- struct{}{}
	m.Update(cmd())
	_, cmd = m.Update(press("L"))
	if cmd == nil || m.busy == nil || m.busy.kind != opFast {
		t.Fatalf("%s did not start recording from the log", "L")
	}
	f.release <- struct{}{}
	m.Update(opMsg(cmd))
	if m.Steps() != src.Len() {
		t.Errorf("%d steps after %s, want all %d", m.Steps(), "L", src.Len())
	}
	if !strings.Contains(m.status, "after") || !strings.Contains(m.status, string(trace.StopUser)) {
		t.Errorf("status %q", m.status)
	}
	m.move(0)
	if got := m.recorderLabel(); got != "stepped" {
		t.Errorf("at step 0 the status says %q, want stepped", got)
	}
	if !strings.Contains(m.statusLine(), "stepped") {
		t.Errorf("status line %q does not say stepped", m.statusLine())
	}
	m.move(src.Len() - 1)
	if got := m.recorderLabel(); got != "logged" {
		t.Errorf("at the last step the status says %q, want logged", got)
	}

	plain := New(Config{Driver: &fakeLive{src: src, release: make(chan struct{})}})
	if _, cmd := plain.Update(press("L")); cmd != nil || !strings.Contains(plain.status, "cannot record from QEMU's log") {
		t.Errorf("a driver without the log: command %v, status %q", cmd != nil, plain.status)
	}
	replay := New(Config{Driver: NewReplay(src)})
	if _, cmd := replay.Update(press("L")); cmd != nil || !strings.Contains(replay.status, "no guest attached") {
		t.Errorf("a replay: command %v, status %q", cmd != nil, replay.status)
	}
	if got := replay.recorderLabel(); got != "" && len(src.Header.Recorders) == 0 {
		t.Errorf("a trace stepped throughout says %q", got)
	}
}

// TestStatusLineOtherCPUs checks that the status line names the vCPU
// followed and says where the other one was held.
func TestStatusLineOtherCPUs(t *testing.T) {
	src := loadTrace(t)
	src.Header.CPU = &trace.CPU{Index: 1, Thread: "p01.02", Count: 2}
	held := trace.CPUPlace{RIP: 0x400011, Symbol: "user_syscall_insn", CPL: 3}
	src.Header.OtherCPUs = []trace.OtherCPU{{Index: 0, Thread: "p01.01", Start: held, End: held}}
	m := New(Config{Driver: NewReplay(src)})
	m.width = 400
	line := m.statusLine()
	for _, want := range []string{"vCPU 1/2", src.Header.OtherCPUsLabel()} {
		if !strings.Contains(line, want) {
			t.Errorf("status line %q lacks %q", line, want)
		}
	}
}

package tui

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// nopTrace is a trace of n nops at CPL 0, ending back in user mode.
func nopTrace(t *testing.T, n int) *trace.Trace {
	t.Helper()
	b := []byte{0x90}
	in, _, err := annotate.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	steps := make([]trace.Step, n)
	for i := range steps {
		rip := uint64(0xffffffff81000000) + uint64(i)
		st := &x86.State{}
		st.Set(x86.RIP, rip)
		st.Set(x86.CS, 0x10)
		steps[i] = trace.Step{Index: i, RIP: trace.Hex(rip), Symbol: "nops", Bytes: b, Regs: st, Op: in.Op,
			Intel: trace.Disasm(in, b, rip, nil, trace.Intel), ATT: trace.Disasm(in, b, rip, nil, trace.ATT)}
	}
	tr := trace.New(steps...)
	tr.Header.Mechanism = "syscall"
	return tr
}

// longLive is a live driver whose round trip records `upTo` steps at
// once, then runs on until its context is cancelled, as a long recording
// (an execve of tens of thousands of steps) does; what it recorded is
// kept, as Live.RoundTrip keeps it.
type longLive struct {
	src     *trace.Trace
	upTo    int
	n       atomic.Int64
	started chan struct{}
	entries atomic.Int64
}

func (f *longLive) Live() bool { return true }
func (f *longLive) Snapshot() Snapshot {
	n := int(f.n.Load())
	cur := &x86.State{}
	cur.Set(x86.CS, 0x33) // back in user mode
	return Snapshot{Header: f.src.Header, Trace: f.src.View(n), Current: cur}
}
func (f *longLive) Step(context.Context, bool) error { return nil }
func (f *longLive) Run(context.Context, trace.Until) (trace.StopReason, error) {
	return trace.StopEvent, nil
}
func (f *longLive) NextEntry(context.Context) error { f.entries.Add(1); f.n.Store(0); return nil }
func (f *longLive) RoundTrip(ctx context.Context, entry bool) (trace.StopReason, error) {
	f.n.Store(int64(f.upTo))
	f.started <- struct{}{}
	<-ctx.Done()
	return trace.StopCancel, nil
}
func (f *longLive) Recorded() int                          { return int(f.n.Load()) }
func (f *longLive) ProbeMSRs(context.Context) (int, error) { return 0, nil }
func (f *longLive) Trace() *trace.Trace                    { return f.src.View(int(f.n.Load())) }
func (f *longLive) Close() error                           { return nil }

// startRecording presses R and runs the recording off the update loop; the
// returned channel gives its opDoneMsg.
func startRecording(t *testing.T, m *Model, f *longLive) chan tea.Msg {
	t.Helper()
	_, cmd := m.Update(press("R"))
	if cmd == nil || m.busy == nil || m.busy.kind != opRoundTrip {
		t.Fatal("R did not start a recording")
	}
	batch, ok := cmd().(tea.BatchMsg)
	if !ok || len(batch) != 2 {
		t.Fatalf("R returned %T, want the progress tick and the recording", cmd())
	}
	done := make(chan tea.Msg, 1)
	go func() { done <- batch[1]() }()
	<-f.started
	return done
}

// TestRecordingStop: while R records, the status shows the steps recorded
// so far and that esc stops it; esc stops it, the steps are kept and the
// status says so; esc is listed in the help.
func TestRecordingStop(t *testing.T) {
	f := &longLive{src: nopTrace(t, 3000), upTo: 1234, started: make(chan struct{}, 1)}
	m := New(Config{Driver: f})
	m.Update(tea.WindowSizeMsg{Width: 160, Height: 48})
	done := startRecording(t, m, f)
	m.Update(progressMsg{seq: m.busySeq})
	if scr := ansi.Strip(m.Render()); !strings.Contains(scr, "1234 steps so far (esc stops)") {
		t.Errorf("no progress on the screen while recording:\n%s", scr)
	}
	m.Update(press("esc"))
	select {
	case msg := <-done:
		m.Update(msg)
	case <-time.After(time.Minute):
		t.Fatal("esc did not stop the recording")
	}
	if m.busy != nil || m.Steps() != 1234 || !strings.Contains(m.status, "stopped by you at step 1234") {
		t.Errorf("after esc: busy %v, %d steps, status %q; want 1234 steps kept, stopped by you", m.busy, m.Steps(), m.status)
	}
	m.Update(press("?"))
	if scr := ansi.Strip(m.Render()); !strings.Contains(scr, "stop the recording in flight") {
		t.Errorf("help does not list esc:\n%s", scr)
	}
}

// TestReplaceAsks: c (and R from user mode) would replace an unsaved
// recording longer than keepAfter steps: they ask first; n keeps it, y
// goes on. Once saved, c asks nothing.
func TestReplaceAsks(t *testing.T) {
	f := &longLive{src: nopTrace(t, 3000), upTo: keepAfter + 1, started: make(chan struct{}, 1)}
	m := New(Config{Driver: f, SaveDir: t.TempDir()})
	m.Update(tea.WindowSizeMsg{Width: 160, Height: 48})
	done := startRecording(t, m, f)
	m.Update(press("esc"))
	m.Update(<-done)
	for _, k := range []string{"c", "R"} {
		m.Update(press(k))
		if m.input != inputConfirm || m.busy != nil {
			t.Fatalf("%s over %d unsaved steps: input %d, busy %v; want a question", k, m.Steps(), m.input, m.busy)
		}
		m.Update(press("n"))
		if m.busy != nil || m.Steps() != keepAfter+1 || !strings.Contains(m.status, "not replaced") {
			t.Errorf("%s, n: busy %v, %d steps, status %q", k, m.busy, m.Steps(), m.status)
		}
	}
	m.Update(press("c"))
	if _, cmd := m.Update(press("y")); cmd == nil || m.busy == nil || m.busy.kind != opEntry {
		t.Fatalf("c, y: busy %v, want the run to the next entry", m.busy)
	}
	m.busy, m.stop = nil, nil // the run is not needed: only that it started
	m.save("")
	run(m, tea.Batch(m.later...))
	m.later = nil
	if m.warn {
		t.Fatalf("save: %s", m.status)
	}
	m.Update(press("c"))
	if m.input == inputConfirm || m.busy == nil {
		t.Errorf("c after saving: input %d, busy %v; want no question", m.input, m.busy)
	}
}

// TestQuitKeepsRecording: q with an unsaved recording longer than
// keepAfter writes it to a new private file in the temporary directory,
// which Kept names; it reads back whole.
func TestQuitKeepsRecording(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	// q after esc stopped the recording; ctrl-c while it runs, which
	// stops it and quits once it has returned.
	for _, quit := range []string{"q", "ctrl+c"} {
		f := &longLive{src: nopTrace(t, 3000), upTo: 2000, started: make(chan struct{}, 1)}
		m := New(Config{Driver: f})
		done := startRecording(t, m, f)
		if quit == "q" {
			m.Update(press("esc"))
			m.Update(<-done)
			do(m, press(quit))
		} else {
			m.Update(press(quit))
			do(m, <-done)
		}
		name, steps, err := m.Kept()
		if err != nil || name == "" || steps != 2000 {
			t.Fatalf("%s: kept %q, %d steps, %v; want 2000 steps kept", quit, name, steps, err)
		}
		if filepath.Dir(name) != tmp {
			t.Errorf("%s: kept in %s, want the temporary directory %s", quit, name, tmp)
		}
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %s has mode %v, want 0600", quit, name, fi.Mode().Perm())
		}
		r, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		back, err := trace.Read(r)
		r.Close()
		if err != nil || back.Len() != 2000 {
			t.Errorf("%s: the kept file reads back as %d steps, %v", quit, back.Len(), err)
		}
	}
}

// TestLiveRecordingStop runs `e` over nops in the live driver on the fake
// stub (whose single step adds one to RIP, as QEMU's does over a nop), so
// that no event ever stops it: the progress counts the steps the recorder
// appends while it runs (go test -race checks the reads), esc stops it, and
// the steps recorded are the ones the screen then shows, as many as
// counted.
func TestLiveRecordingStop(t *testing.T) {
	stub := gdbstubtest.New(t)
	const rip, rsp = 0xffffffff81000000, 0xffffc90000004000
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d := stubLive(ctx, t, stub, rip, rsp, bytes.Repeat([]byte{0x90}, 1<<16))
	m := New(Config{Driver: d})
	defer d.Close()
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
	_, cmd := m.Update(press("e"))
	if cmd == nil || m.busy == nil || !m.busy.records() {
		t.Fatal("e did not start a recording run")
	}
	batch, ok := cmd().(tea.BatchMsg)
	if !ok || len(batch) != 2 {
		t.Fatalf("e returned %T, want the progress tick and the run", cmd())
	}
	done := make(chan tea.Msg, 1)
	go func() { done <- batch[1]() }()
	for m.recorded < 20 {
		select {
		case <-ctx.Done():
			t.Fatalf("the progress stayed at %d steps", m.recorded)
		case <-time.After(10 * time.Millisecond):
		}
		m.Update(progressMsg{seq: m.busySeq})
		_ = m.Render()
	}
	m.Update(press("esc"))
	select {
	case msg := <-done:
		m.Update(msg)
	case <-ctx.Done():
		t.Fatal("esc did not stop the run")
	}
	n := m.Steps()
	if n < 20 || d.Recorded() != n || !strings.Contains(m.status, fmt.Sprintf("stopped by you at step %d", n)) {
		t.Errorf("after esc: %d steps shown, %d counted, status %q", n, d.Recorded(), m.status)
	}
}

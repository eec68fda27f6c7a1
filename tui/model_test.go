package tui

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"
	"github.com/charmbracelet/x/exp/golden"
	"github.com/charmbracelet/x/exp/teatest/v2"

	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// press makes a key press message for a key name as bubbletea spells it.
func press(k string) tea.KeyPressMsg {
	switch k {
	case "tab":
		return tea.KeyPressMsg{Code: tea.KeyTab}
	case "enter":
		return tea.KeyPressMsg{Code: tea.KeyEnter}
	case "esc":
		return tea.KeyPressMsg{Code: tea.KeyEscape}
	case "ctrl+c":
		return tea.KeyPressMsg{Code: 'c', Mod: tea.ModCtrl}
	}
	r := []rune(k)[0]
	return tea.KeyPressMsg{Code: r, Text: k}
}

// keys splits "e e g 4 0 enter" into key presses.
func keys(s string) []tea.KeyPressMsg {
	var out []tea.KeyPressMsg
	for _, k := range strings.Fields(s) {
		out = append(out, press(k))
	}
	return out
}

// do sends msg to m and runs the commands it returns, feeding their
// messages back, as the program would: the file writes that Update hands
// out as commands are done when do returns. Only for models whose
// commands return at once (a replay, not a live guest).
func do(m *Model, msg tea.Msg) {
	_, cmd := m.Update(msg)
	run(m, cmd)
}

func run(m *Model, cmd tea.Cmd) {
	if cmd == nil {
		return
	}
	switch msg := cmd().(type) {
	case nil, tea.QuitMsg:
	case tea.BatchMsg:
		for _, c := range msg {
			run(m, c)
		}
	default:
		do(m, msg)
	}
}

func replayModel(t *testing.T, w, h int) *Model {
	t.Helper()
	m := New(Config{Driver: NewReplay(loadTrace(t)), Syntax: trace.ATT})
	m.Update(tea.WindowSizeMsg{Width: w, Height: h})
	return m
}

// TestGolden drives the replay TUI through teatest and compares the final
// screen (styles stripped) with testdata/TestGolden/*.golden; regenerate
// with `go test ./tui -run TestGolden -update`.
func TestGolden(t *testing.T) {
	tests := []struct {
		name string
		w, h int
		keys string
	}{
		{"start_80x24", 80, 24, ""},
		{"after_syscall_80x24", 80, 24, "e"},
		{"after_swapgs_80x24", 80, 24, "e e"},
		{"stack_switch_stack_pane_80x24", 80, 24, "e e e e f f f f f f tab tab"},
		{"system_pane_80x24", 80, 24, "e e tab"},
		{"help_80x24", 80, 24, "?"},
		{"intel_after_cr3_160x48", 160, 48, "t e e e"},
		{"pt_regs_built_160x48", 160, 48, "g 4 2 enter"},
		{"back_in_user_160x48", 160, 48, "r"},
		{"search_sysret_120x30", 120, 30, "/ s y s r e t q enter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(Config{Driver: NewReplay(loadTrace(t)), Syntax: trace.ATT})
			tm := teatest.NewTestModel(t, m, teatest.WithInitialTermSize(tt.w, tt.h))
			for _, k := range keys(tt.keys) {
				tm.Send(k)
			}
			if err := tm.Quit(); err != nil {
				t.Fatal(err)
			}
			fm := tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).(*Model)
			screen := ansi.Strip(fm.Render())
			if got := len(strings.Split(screen, "\n")); got != tt.h {
				t.Errorf("screen has %d lines, want %d", got, tt.h)
			}
			for i, l := range strings.Split(screen, "\n") {
				if w := ansi.StringWidth(l); w > tt.w {
					t.Errorf("line %d is %d columns wide, more than %d: %q", i, w, tt.w, l)
				}
			}
			golden.RequireEqual(t, screen)
		})
	}
}

// TestReplayKeys checks where each key leaves the replay.
func TestReplayKeys(t *testing.T) {
	tests := []struct {
		keys    string
		pos     int
		status  string // a substring of the status line
		warning bool
	}{
		{"", 0, "replay of 87 steps", false},
		{"f f f", 3, "", false},
		{"f f b", 1, "", false},
		{"b", 0, "first recorded step", false},
		{"e", 1, "syscall, cpl-change", false},
		{"e e", 2, "swapgs", false},
		{"e e e", 6, "cr3-write", false},
		{"e e e e", 7, "stack-switch", false},
		{"e e e e e", 78, "stack-switch", false},
		{"r", 87, "back in user mode after step 86", false},
		{"r r", 87, "does not return", false},
		{"end s", 87, "needs `sctrace run`", false},
		{"c", 0, "needs `sctrace run`", false},
		{"g 4 2 enter o", 51, "", false},
		{"g 5 enter o", 6, "", false},
		{"g 9 9 9 enter", 0, "has not been recorded", true},
		{"g x enter", 0, "not a step number", true},
		{"/ d o _ s y s c a l l enter", 42, "step 42", false},
		{"/ n o p e enter", 0, "not in the 87 recorded steps", true},
		{"/ s w a p g s enter / s w a p g s enter", 54, "step 54", false},
		{"g 1 esc", 0, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.keys, func(t *testing.T) {
			m := replayModel(t, 80, 24)
			for _, k := range keys(tt.keys) {
				prompting := m.input != inputNone
				if _, cmd := m.Update(k); cmd != nil && !prompting && k.String() != "/" && k.String() != "g" {
					t.Errorf("key %q started a command in a replay", k)
				}
			}
			if m.Pos() != tt.pos {
				t.Errorf("position %d, want %d (status %q)", m.Pos(), tt.pos, m.status)
			}
			if !strings.Contains(m.status, tt.status) || m.warn != tt.warning {
				t.Errorf("status %q (warning %v), want it to contain %q (warning %v)", m.status, m.warn, tt.status, tt.warning)
			}
		})
	}
}

func TestSave(t *testing.T) {
	dir := t.TempDir()
	m := New(Config{Driver: NewReplay(loadTrace(t)), SaveDir: dir,
		Now: func() time.Time { return time.Date(2026, 11, 22, 10, 30, 0, 0, time.UTC) }})
	do(m, press("w"))
	name := filepath.Join(dir, "sctrace-syscall-20261122-103000"+SaveExt)
	if m.input != inputSave || m.prompt.Value() != name {
		t.Fatalf("w: prompt %v with %q, want the save prompt offering %s", m.input, m.prompt.Value(), name)
	}
	do(m, press("enter"))
	if !strings.Contains(m.status, name) {
		t.Errorf("status %q does not name %s", m.status, name)
	}
	tr, err := trace.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Len() != 87 {
		t.Errorf("saved %d steps, want 87", tr.Len())
	}
}

// fakeLive is a live Driver that hands out the steps of a recorded trace,
// one per Step, blocking each operation until the test releases it.
type fakeLive struct {
	src     *trace.Trace
	release chan struct{}
	mu      sync.Mutex
	n       int // steps handed out
	calls   int // guest operations run
	closed  bool
}

func (f *fakeLive) Live() bool { return true }

func (f *fakeLive) Snapshot() Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Snapshot{Header: f.src.Header, Trace: f.src.View(f.n), Current: f.src.After(f.n - 1)}
}

func (f *fakeLive) op(ctx context.Context, steps int) error {
	select {
	case <-f.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.n = min(f.n+steps, f.src.Len())
	return nil
}

func (f *fakeLive) Step(ctx context.Context, _ bool) error { return f.op(ctx, 1) }

func (f *fakeLive) Run(ctx context.Context, _ trace.Until) (trace.StopReason, error) {
	return trace.StopEvent, f.op(ctx, 5)
}

func (f *fakeLive) NextEntry(ctx context.Context) error {
	err := f.op(ctx, 0)
	f.mu.Lock()
	f.n = 0
	f.mu.Unlock()
	return err
}

func (f *fakeLive) RoundTrip(ctx context.Context, entry bool) (trace.StopReason, error) {
	if entry {
		if err := f.NextEntry(ctx); err != nil {
			return "", err
		}
	}
	return f.Run(ctx, nil)
}

func (f *fakeLive) ProbeMSRs(ctx context.Context) (int, error) { return 11, f.op(ctx, 0) }

func (f *fakeLive) Trace() *trace.Trace { return f.src }
func (f *fakeLive) Close() error        { f.closed = true; return nil }

// TestLiveCoalescing holds `s` down while a step is in flight: every press
// counts, and the steps queued behind the one in flight run as one more
// operation, drawn once.
func TestLiveCoalescing(t *testing.T) {
	f := &fakeLive{src: loadTrace(t), release: make(chan struct{}, 100), n: 0}
	m := New(Config{Driver: f})
	m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
	_, cmd := m.Update(press("s"))
	if cmd == nil || m.busy == nil {
		t.Fatal("s at the end of the record did not start a guest step")
	}
	for range 10 {
		if _, c := m.Update(press("s")); c != nil {
			t.Fatal("a step key while busy started another operation")
		}
	}
	for range 11 {
		f.release <- struct{}{}
	}
	ops := 0
	for cmd != nil {
		msg := cmd()
		ops++
		_, cmd = m.Update(msg)
		m.Render()
	}
	if ops != 2 || f.calls != 11 || m.Pos() != 11 || m.Steps() != 11 {
		t.Errorf("after 11 presses: %d operations, %d guest steps, position %d of %d; want 2, 11, 11 of 11", ops, f.calls, m.Pos(), m.Steps())
	}
	// Time travel never touches the guest, and s replays the record first.
	for _, k := range keys("b b s") {
		if _, c := m.Update(k); c != nil {
			t.Errorf("%q with recorded steps ahead started a guest operation", k)
		}
	}
	if m.Pos() != 10 || f.calls != 11 {
		t.Errorf("b b s: position %d, %d guest calls; want 10, 11", m.Pos(), f.calls)
	}
}

// opMsg runs the guest operation cmd starts and returns its message: an
// operation that records comes batched with its progress tick, which is
// left out.
func opMsg(cmd tea.Cmd) tea.Msg {
	msg := cmd()
	if b, ok := msg.(tea.BatchMsg); ok {
		return b[len(b)-1]()
	}
	return msg
}

// TestLiveQuitWhileBusy cancels the operation in flight and quits when it
// has returned.
func TestLiveQuitWhileBusy(t *testing.T) {
	f := &fakeLive{src: loadTrace(t), release: make(chan struct{})}
	m := New(Config{Driver: f})
	_, cmd := m.Update(press("e"))
	if cmd == nil {
		t.Fatal("e did not start a guest run")
	}
	_, qcmd := m.Update(press("ctrl+c"))
	if qcmd == nil || !m.quitting {
		t.Fatal("ctrl-c while busy did not start quitting")
	}
	done := opMsg(cmd) // returns because ctrl-c cancelled its context
	_, last := m.Update(done)
	if last == nil {
		t.Fatal("no quit after the cancelled operation returned")
	}
	if _, ok := last().(tea.QuitMsg); !ok {
		t.Errorf("after the cancelled operation: %T, want tea.QuitMsg", last())
	}
}

// TestLiveKeysStartOperations checks which guest operation each key asks for.
func TestLiveKeysStartOperations(t *testing.T) {
	tests := []struct {
		key  string
		kind opKind
	}{
		{"s", opStep},
		{"o", opStep},
		{"e", opRun},
		{"r", opRun},
		{"c", opEntry},
		{"R", opRoundTrip},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			f := &fakeLive{src: loadTrace(t), release: make(chan struct{}, 1), n: 1}
			m := New(Config{Driver: f})
			_, cmd := m.Update(press(tt.key))
			if cmd == nil || m.busy == nil {
				t.Fatalf("%s started nothing", tt.key)
			}
			if m.busy.kind != tt.kind {
				t.Errorf("%s started operation %d, want %d", tt.key, m.busy.kind, tt.kind)
			}
			f.release <- struct{}{}
			m.Update(opMsg(cmd))
			if m.busy != nil {
				t.Errorf("still busy after the operation returned")
			}
		})
	}
}

// TestResizeKeepsCurrentStepVisible draws at 160x48 near the start of the
// trace, where the code pane cannot centre the current step, then at 80x24:
// the current step must still be on screen.
func TestResizeKeepsCurrentStepVisible(t *testing.T) {
	m := replayModel(t, 160, 48)
	for _, k := range keys("f f f f f") {
		m.Update(k)
	}
	m.Render()
	m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
	screen := m.Render()
	if !strings.Contains(screen, "▶") {
		t.Fatalf("after resizing to 80x24 the current step is not on screen:\n%s", screen)
	}
}

// TestProbeKey: p is refused in user mode, and at CPL 0 runs the probe as
// a guest operation and says what it read.
func TestProbeKey(t *testing.T) {
	f := &fakeLive{src: loadTrace(t), release: make(chan struct{}, 10)}
	m := New(Config{Driver: f})
	m.Update(tea.WindowSizeMsg{Width: 160, Height: 48})
	if _, cmd := m.Update(press("p")); cmd != nil || !strings.Contains(m.status, "needs CPL 0") {
		t.Fatalf("p at CPL 3: status %q, started an operation: %v", m.status, cmd != nil)
	}
	run := func(k string) {
		t.Helper()
		_, cmd := m.Update(press(k))
		if cmd == nil {
			t.Fatalf("%s started no operation (status %q)", k, m.status)
		}
		f.release <- struct{}{}
		m.Update(cmd())
	}
	run("s") // the syscall: now at CPL 0
	run("p")
	if f.calls != 2 || !strings.Contains(m.status, "read 11 MSRs") {
		t.Errorf("after p at CPL 0: %d guest calls, status %q", f.calls, m.status)
	}
	r := replayModel(t, 160, 48)
	r.Update(press("f"))
	if _, cmd := r.Update(press("p")); cmd != nil || !strings.Contains(r.status, "replay") ||
		!strings.Contains(r.status, "live guest") || !strings.Contains(r.status, "CPL 0") {
		t.Errorf("p on a replayed CPL-0 step: status %q, want it to say the probe needs the live guest at CPL 0", r.status)
	}
	// Live, on a recorded step behind the guest: the probe is of the
	// guest where it is, which that step is not.
	m.Update(press("b"))
	if _, cmd := m.Update(press("p")); cmd != nil || !strings.Contains(m.status, "live guest") {
		t.Errorf("p on a recorded step of a live session: status %q", m.status)
	}
}

// TestStackPaneTrampoline: in the recorded syscall round trip, steps 78-84
// run on the teaching kernel's entry_stack after syscall_return_via_sysret
// moved there from kernel_stack (mov %gs:0x4,%rsp, TSS.RSP0): the words it
// pushes there are the user RSP and RDI, copied, so the stack pane labels
// no pt_regs field there, while the kernel stack's frame keeps its labels.
func TestStackPaneTrampoline(t *testing.T) {
	stackLabel := regexp.MustCompile(`\+0x[0-9a-f]+ [0-9a-f]{16} pt_regs->`)
	tests := []struct {
		pos   int
		tramp bool
	}{
		{20, false}, // pushing pt_regs on kernel_stack
		{79, true},  // after pushq 0x28(%rdi)
		{84, true},  // before pop %rsp
		{86, false}, // back on the user stack before sysretq
	}
	for _, tt := range tests {
		m := replayModel(t, 160, 48)
		for _, k := range keys("g " + strings.Join(strings.Split(fmt.Sprint(tt.pos), ""), " ") + " enter") {
			m.Update(k)
		}
		if m.Pos() != tt.pos {
			t.Fatalf("at %d, want %d", m.Pos(), tt.pos)
		}
		rsp := m.state().Val(x86.RSP)
		if got := m.onExitTrampoline(rsp); got != tt.tramp {
			t.Errorf("step %d (rsp %#x): onExitTrampoline = %v, want %v", tt.pos, rsp, got, tt.tramp)
		}
		screen := ansi.Strip(m.Render())
		labelled := stackLabel.MatchString(screen)
		if tt.tramp && (!strings.Contains(screen, "the exit trampoline: copies, not a pt_regs frame") || labelled) {
			t.Errorf("step %d: stack pane:\n%s", tt.pos, screen)
		}
		if tt.pos == 20 && !labelled {
			t.Errorf("step 20: the kernel stack's pt_regs frame lost its labels:\n%s", screen)
		}
	}
}

// TestSaveOffUpdate checks that w writes nothing in Update: the save is a
// command, and q waits for it to finish before quitting.
func TestSaveOffUpdate(t *testing.T) {
	dir := t.TempDir()
	m := New(Config{Driver: NewReplay(loadTrace(t)), SaveDir: dir,
		Now: func() time.Time { return time.Date(2026, 11, 22, 10, 30, 0, 0, time.UTC) }})
	name := filepath.Join(dir, "sctrace-syscall-20261122-103000"+SaveExt)
	m.Update(press("w"))
	_, save := m.Update(press("enter"))
	if save == nil {
		t.Fatal("w returned no command")
	}
	if _, err := os.Stat(name); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Update wrote %s itself (stat: %v)", name, err)
	}
	if _, quit := m.Update(press("q")); isQuit(quit) {
		t.Fatal("q quit with the save still being written")
	}
	var msgs []tea.Msg
	collect(save, &msgs)
	if len(msgs) != 1 {
		t.Fatalf("the save command gave %d messages, want 1: %#v", len(msgs), msgs)
	}
	if _, quit := m.Update(msgs[0]); !isQuit(quit) {
		t.Error("no quit once the save was done")
	}
	if !strings.Contains(m.status, "saved 87 steps to "+name) {
		t.Errorf("status %q", m.status)
	}
	if _, err := trace.ReadFile(name); err != nil {
		t.Fatal(err)
	}
}

// isQuit reports whether cmd is tea.Quit.
func isQuit(cmd tea.Cmd) bool {
	return cmd != nil && reflect.ValueOf(cmd).Pointer() == reflect.ValueOf(tea.Quit).Pointer()
}

// collect runs cmd and appends the messages it gives to msgs, those of a
// batch one by one.
func collect(cmd tea.Cmd, msgs *[]tea.Msg) {
	if cmd == nil {
		return
	}
	switch msg := cmd().(type) {
	case nil:
	case tea.BatchMsg:
		for _, c := range msg {
			collect(c, msgs)
		}
	default:
		*msgs = append(*msgs, msg)
	}
}

package tui

import (
	"fmt"
	"strings"
	"testing"

	"charm.land/bubbles/v2/key"
	"github.com/charmbracelet/x/ansi"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/x86"
)

// typeLine types text into an open prompt, a key per character.
func typeLine(m *Model, text string) {
	for _, r := range text {
		do(m, press(string(r)))
	}
}

// runLine opens the command line, types line and runs it.
func runLine(m *Model, line string) {
	do(m, press(":"))
	typeLine(m, line)
	do(m, press("enter"))
}

// TestCommandLineReplay runs commands in a replay: help shows its text in
// the output pane, a command that needs the guest says so on one line,
// bad input gets a one-line error, and none of them touch the position.
func TestCommandLineReplay(t *testing.T) {
	tests := []struct {
		line   string
		status string
		warn   bool
		output string // a substring of the output pane, "" for none
	}{
		{"help", "", false, "break SYM[+OFF]"},
		{"help x", "done", false, "examine memory"},
		{"break do_syscall_64", "needs a live guest", true, ""},
		{"x/2xg $rsp", "needs a live guest", true, ""},
		{"frobnicate", "frobnicate", true, ""},
		{"watch", "watch EXPR", true, ""},
		{"watch *(u64*)(", "watch:", true, ""},
		{"unwatch 7", "no watch 7", true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			m := replayModel(t, 80, 24)
			do(m, press("f"))
			runLine(m, tt.line)
			if m.Pos() != 1 {
				t.Errorf("position %d after :%s, want 1", m.Pos(), tt.line)
			}
			if !strings.Contains(m.status, tt.status) || m.warn != tt.warn || strings.Contains(m.status, "\n") {
				t.Errorf("status %q (warning %v), want one line containing %q (warning %v)", m.status, m.warn, tt.status, tt.warn)
			}
			got := ""
			if m.out != nil {
				got = strings.Join(m.out.lines, "\n")
			}
			if tt.output == "" && got != "" || !strings.Contains(got, tt.output) {
				t.Errorf("output %q, want %q", got, tt.output)
			}
			if tt.output != "" && !strings.Contains(ansi.Strip(m.Render()), tt.output) {
				t.Errorf("the output is not on the screen")
			}
		})
	}
}

// TestCommandHistoryAndCompletion: ↑ and ↓ walk the history, tab
// completes command names, info's subjects and registers.
func TestCommandHistoryAndCompletion(t *testing.T) {
	m := replayModel(t, 80, 24)
	runLine(m, "help x")
	runLine(m, "help info")
	do(m, press(":"))
	do(m, press("up"))
	if v := m.prompt.Value(); v != "help info" {
		t.Errorf("↑ once: %q, want the last line", v)
	}
	do(m, press("up"))
	do(m, press("up"))
	if v := m.prompt.Value(); v != "help x" {
		t.Errorf("↑ three times: %q, want the first line", v)
	}
	do(m, press("down"))
	do(m, press("down"))
	if v := m.prompt.Value(); v != "" {
		t.Errorf("↓ past the end: %q, want the draft (empty)", v)
	}
	do(m, press("esc"))
	for _, tt := range []struct{ typed, want string }{
		{"unw", "unwatch "},
		{"info br", "info breakpoints "},
		{"print $rs", "print $rs"}, // rsi, rsp: the shared part, listed
		{"print $rsp", "print $rsp"},
	} {
		do(m, press(":"))
		typeLine(m, tt.typed)
		do(m, press("tab"))
		if v := m.prompt.Value(); v != tt.want {
			t.Errorf("tab after %q: %q, want %q", tt.typed, v, tt.want)
		}
		if tt.typed == "print $rs" && len(m.cmd.completions) < 2 {
			t.Errorf("tab after %q listed %v", tt.typed, m.cmd.completions)
		}
		do(m, press("esc"))
	}
}

// TestWatchPaneReplay evaluates watches from the recorded state at each
// position: registers the steps kept, memory only where the recording
// read it.
func TestWatchPaneReplay(t *testing.T) {
	m := replayModel(t, 80, 24)
	tr := loadTrace(t)
	runLine(m, "watch $rsp")
	runLine(m, "watch *(u64*)0x10")
	if m.cmd.watches.Len() != 2 || m.lower != paneWatch {
		t.Fatalf("%d watches, lower pane %d: want 2 and the watch pane", m.cmd.watches.Len(), m.lower)
	}
	for _, pos := range []int{0, 7, 42} {
		do(m, press("g"))
		typeLine(m, fmt.Sprint(pos))
		do(m, press("enter"))
		screen := ansi.Strip(m.Render())
		want := fmt.Sprintf("1 $rsp = %#x", tr.Step(pos).Regs.Val(x86.RSP))
		if !strings.Contains(screen, want) {
			t.Errorf("step %d: %q not on the screen:\n%s", pos, want, screen)
		}
		if !strings.Contains(screen, "2 *(u64*)0x10: unknown in replay") {
			t.Errorf("step %d: the unread memory is not said to be unknown:\n%s", pos, screen)
		}
	}
	runLine(m, "unwatch 1")
	if ws := m.cmd.watches.Watches(); len(ws) != 1 || ws[0].ID != 2 {
		t.Errorf("after unwatch 1: %v", ws)
	}
}

// TestSearchSyntax checks each kind of search and n/N against the trace
// itself: the step found is the first (or last) one that matches.
func TestSearchSyntax(t *testing.T) {
	tr := loadTrace(t)
	first := func(ok func(i int) bool, from int, back bool) int {
		n := tr.Len()
		for i := 1; i <= n; i++ {
			k := (from + i) % n
			if back {
				k = ((from-i)%n + n) % n
			}
			if ok(k) {
				return k
			}
		}
		return -1
	}
	hasEvent := func(e annotate.Event) func(int) bool {
		return func(i int) bool {
			for _, x := range tr.Step(i).Events {
				if x == e {
					return true
				}
			}
			return false
		}
	}
	rsp := tr.Step(60).Regs.Val(x86.RSP)
	inSym := func(i int) bool { return strings.HasPrefix(tr.Step(i).Where(), "do_syscall_64") }
	tests := []struct {
		query string
		keys  string
		want  int
	}{
		{"!swapgs", "", first(hasEvent(annotate.EventSwapgs), 0, false)},
		{"!swapgs", "n", first(hasEvent(annotate.EventSwapgs), first(hasEvent(annotate.EventSwapgs), 0, false), false)},
		{"!cr3-write", "N", first(hasEvent(annotate.EventCR3Write), first(hasEvent(annotate.EventCR3Write), 0, false), true)},
		{"@do_syscall_64", "", first(inSym, 0, false)},
		{fmt.Sprintf("rsp=%#x", rsp), "", first(func(i int) bool { return tr.Step(i).Regs.Val(x86.RSP) == rsp }, 0, false)},
		{"sysretq", "N", first(func(i int) bool { return strings.Contains(tr.Step(i).ATT, "sysretq") }, first(func(i int) bool { return strings.Contains(tr.Step(i).ATT, "sysretq") }, 0, false), true)},
	}
	for _, tt := range tests {
		t.Run(tt.query+" "+tt.keys, func(t *testing.T) {
			if tt.want < 0 {
				t.Fatalf("nothing in the trace matches %q", tt.query)
			}
			m := replayModel(t, 80, 24)
			do(m, press("/"))
			typeLine(m, tt.query)
			do(m, press("enter"))
			for _, k := range keys(tt.keys) {
				do(m, k)
			}
			if m.Pos() != tt.want {
				t.Errorf("position %d, want %d (status %q)", m.Pos(), tt.want, m.status)
			}
		})
	}
	m := replayModel(t, 80, 24)
	do(m, press("/"))
	typeLine(m, ">call")
	do(m, press("enter"))
	if !m.warn || !strings.Contains(m.status, "live guest") {
		t.Errorf("/> in a replay: %q", m.status)
	}
}

// TestPromptsShowNothingTyped: a prompt opens empty, whatever key opened
// it: the screen shows only the prompt's own text.
func TestPromptsShowNothingTyped(t *testing.T) {
	for _, k := range []string{"/", "g", ":"} {
		m := replayModel(t, 80, 24)
		do(m, press(k))
		lines := strings.Split(ansi.Strip(m.Render()), "\n")
		last := strings.TrimRight(lines[len(lines)-1], " ")
		if !strings.HasSuffix(last, ":") || m.prompt.Value() != "" {
			t.Errorf("%s: the prompt line is %q (value %q), want it to end at its colon", k, last, m.prompt.Value())
		}
	}
}

// TestKeyMapIsTheHelp: every key of the KeyMap is in the help overlay,
// and the key bar always ends with help and quit, whatever the width.
func TestKeyMapIsTheHelp(t *testing.T) {
	m := replayModel(t, 200, 80)
	do(m, press("?"))
	help := ansi.Strip(m.Render())
	for _, e := range m.keys.entries() {
		h := e.b.Help()
		if !strings.Contains(help, h.Key) || !strings.Contains(help, firstWords(h.Desc)) {
			t.Errorf("help lacks %q: %s", h.Key, h.Desc)
		}
		for _, k := range e.b.Keys() {
			if !key.Matches(press1(k), *e.b) {
				t.Errorf("key %q does not match its own binding", k)
			}
		}
	}
	for _, w := range []int{40, 80, 120, 200} {
		bar := m.keys.bar(w)
		if !strings.HasSuffix(bar, "? help  q quit") || ansi.StringWidth(bar) > w {
			t.Errorf("key bar at %d columns: %q", w, bar)
		}
	}
}

func firstWords(s string) string {
	f := strings.Fields(s)
	return strings.Join(f[:min(3, len(f))], " ")
}

// press1 is press for the multi-letter key names the KeyMap uses.
func press1(k string) interface{ String() string } {
	switch k {
	case "up", "down", "home", "end", "pgup", "pgdown", "ctrl+c":
		return stringer(k)
	}
	return press(k)
}

type stringer string

func (s stringer) String() string { return string(s) }

// TestEffectsScroll: the effects pane says how many lines it hides, and
// J/K scroll it.
func TestEffectsScroll(t *testing.T) {
	m := replayModel(t, 80, 24)
	do(m, press("e"))
	screen := ansi.Strip(m.Render())
	if !strings.Contains(screen, "more lines") {
		t.Fatalf("no overflow line at 80x24 after the syscall:\n%s", screen)
	}
	do(m, press("J"))
	if m.effTop == 0 {
		t.Error("J did not scroll the effects pane")
	}
	do(m, press("K"))
	if m.effTop != 0 {
		t.Errorf("K left the effects pane at line %d", m.effTop)
	}
}

// TestStatusClearsWhenLeft: a status about a step goes when another step
// is shown.
func TestStatusClearsWhenLeft(t *testing.T) {
	m := replayModel(t, 80, 24)
	do(m, press("e"))
	if !strings.Contains(m.status, "after step 0") {
		t.Fatalf("status %q", m.status)
	}
	do(m, press("f"))
	if m.status != "" {
		t.Errorf("status %q still shown at step %d", m.status, m.Pos())
	}
}

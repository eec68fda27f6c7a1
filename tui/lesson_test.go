package tui

import (
	"slices"
	"strings"
	"testing"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/walkthrough"
)

// lessonModel is lesson n over the recorded syscall trace, replayed.
func lessonModel(t *testing.T, n, w, h int, saved *[]walkthrough.Progress) *Model {
	t.Helper()
	l, err := walkthrough.Get(n, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := New(Config{Driver: NewReplay(loadTrace(t)), Syntax: trace.ATT, Lesson: &LessonConfig{Lesson: l,
		OnProgress: func(p walkthrough.Progress) error { *saved = append(*saved, p); return nil }}})
	m.Update(tea.WindowSizeMsg{Width: w, Height: h})
	return m
}

func send(m *Model, ks ...string) {
	for _, k := range ks {
		if k == "space" {
			do(m, tea.KeyPressMsg{Code: tea.KeySpace, Text: " "})
			continue
		}
		for _, p := range keys(k) {
			do(m, p)
		}
	}
}

// TestLessonReplay walks lesson 2 over a recorded trace: space moves to
// each paragraph's event, questions block until answered, answers are
// checked against the state on screen, and progress is reported.
func TestLessonReplay(t *testing.T) {
	for _, size := range [][2]int{{160, 48}, {80, 24}} {
		var saved []walkthrough.Progress
		m := lessonModel(t, 2, size[0], size[1], &saved)
		if m.Lesson() != -1 {
			t.Fatalf("%v: paragraph %d before any event, want the introduction", size, m.Lesson())
		}
		send(m, "space")
		if m.Lesson() != 0 || m.Pos() != 1 {
			t.Fatalf("%v: after space: paragraph %d at step %d, want 0 at 1", size, m.Lesson(), m.Pos())
		}
		scr := ansi.Strip(m.Render())
		for _, want := range []string{"— 1 of 14", "look at: the system pane", "? What is CR3 now", "a: answer"} {
			if !strings.Contains(scr, want) {
				t.Errorf("%v: screen lacks %q:\n%s", size, want, scr)
			}
		}
		// Until the question is answered, the value it asks about is not
		// pointed at, and space, which is refused, is not offered.
		for _, bad := range []string{"system pane, cr3", "space: go on"} {
			if strings.Contains(scr, bad) {
				t.Errorf("%v: screen shows %q before the question is answered:\n%s", size, bad, scr)
			}
		}
		if size[0] >= wideMinW && !strings.Contains(scr, "System ◀ look here") {
			t.Errorf("%v: the system pane is not marked:\n%s", size, scr)
		}
		send(m, "space")
		if m.Lesson() != 0 || !strings.Contains(m.status, "answer the question first") {
			t.Errorf("%v: space went on past an unanswered question: paragraph %d, %q", size, m.Lesson(), m.status)
		}
		send(m, "a k e r n e l enter")
		if scr := ansi.Strip(m.Render()); !strings.Contains(scr, `✗ not "kernel": CR3 is 0x211000:`) {
			t.Errorf("%v: no explanation of the wrong answer:\n%s", size, scr)
		}
		send(m, "a u s e r enter")
		scr = ansi.Strip(m.Render())
		for _, want := range []string{"look at: the system pane, cr3", "space: go on"} {
			if !strings.Contains(scr, want) {
				t.Errorf("%v: once answered, screen lacks %q:\n%s", size, want, scr)
			}
		}
		send(m, "space")
		if m.Lesson() != 1 || m.Pos() != 2 {
			t.Errorf("%v: after the answer: paragraph %d at step %d, want 1 at 2", size, m.Lesson(), m.Pos())
		}
		// Time travel takes the paragraph along.
		send(m, "b")
		if m.Lesson() != 0 {
			t.Errorf("%v: after b: paragraph %d, want 0", size, m.Lesson())
		}
		send(m, "end")
		if m.Lesson() != 13 {
			t.Errorf("%v: at the end of the trace: paragraph %d, want the last (13)", size, m.Lesson())
		}
		if len(saved) == 0 || saved[len(saved)-1].Reached != 14 || len(saved[len(saved)-1].Answered) != 1 {
			t.Errorf("%v: progress reported %+v", size, saved)
		}
		send(m, "l")
		if scr := ansi.Strip(m.Render()); strings.Contains(scr, "Lesson 2") {
			t.Errorf("%v: l did not hide the lesson", size)
		}
		for i, l := range strings.Split(ansi.Strip(m.Render()), "\n") {
			if w := ansi.StringWidth(l); w > size[0] {
				t.Errorf("%v: line %d is %d columns wide", size, i, w)
			}
		}
	}
}

// TestLessonReplayLimits checks what a replay cannot do for a lesson:
// start the next round trip, or reach an event its trace lacks.
func TestLessonReplayLimits(t *testing.T) {
	tests := []struct {
		lesson int
		keys   []string
		para   int
		status string
	}{
		{3, []string{"space", "a u s e r enter", "space"}, 1, "only `sctrace learn` can run it"},
		{5, []string{"a u s e r enter", "space", "space", "space", "space"}, 3, "the trace does not reach a finding event"},
	}
	for _, tt := range tests {
		var saved []walkthrough.Progress
		m := lessonModel(t, tt.lesson, 160, 48, &saved)
		send(m, tt.keys...)
		if m.Lesson() != tt.para || !strings.Contains(m.status, tt.status) {
			t.Errorf("lesson %d: paragraph %d, status %q; want %d and %q", tt.lesson, m.Lesson(), m.status, tt.para, tt.status)
		}
	}
}

// TestLookLines: the paragraph that points at the system pane's cr3
// highlights the line drawn with that name, whatever the text of the
// lines; other panes and other names are left as drawn.
func TestLookLines(t *testing.T) {
	var saved []walkthrough.Progress
	m := lessonModel(t, 2, 160, 48, &saved)
	send(m, "space") // paragraph 0: look at the system pane, cr3
	if got := m.lookLines("system", []paneLine{{"cr3 0x211000", []string{"cr3"}}}); got[0] != "cr3 0x211000" {
		t.Errorf("cr3 highlighted before the question about it is answered: %q", got[0])
	}
	send(m, "a u s e r enter")
	if stLook.Render("x") == "x" {
		t.Fatal("the highlight style renders as plain text: this test cannot tell a highlighted line")
	}
	lines := []paneLine{
		{"cr3 0x211000: pgd 0x210000", []string{"cr3"}},
		{"cr3 drawn without the name", nil},
		{"the value is CR3: 0x211000", []string{"cr3"}},
		{"gs_base   0x0 user GS (null)", []string{"gs_base"}},
		{"cs 0x33  ss 0x2b", []string{"cs", "ss"}},
	}
	got := m.lookLines("system", lines)
	for i, l := range lines {
		want := l.text
		if slices.Contains(l.names, "cr3") {
			want = stLook.Render(l.text)
		}
		if got[i] != want {
			t.Errorf("line %d %q: got %q, want %q", i, l.text, got[i], want)
		}
	}
	for i, s := range m.lookLines("stack", lines) {
		if s != lines[i].text {
			t.Errorf("stack pane line %d highlighted: %q", i, s)
		}
	}
}

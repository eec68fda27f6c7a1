package tui

import (
	"strings"
	"testing"

	"github.com/charmbracelet/x/ansi"

	"github.com/sctrace/sctrace/walkthrough"
)

// TestLessonLayoutSmall: at 80x24 the lesson pane is as wide as the
// screen, so its prose is readable, and tab brings back the registers.
func TestLessonLayoutSmall(t *testing.T) {
	var saved []walkthrough.Progress
	m := lessonModel(t, 2, 80, 24, &saved)
	l := m.layout()
	if l.lesson.w != 80 || l.lesson.h < 8 {
		t.Fatalf("lesson pane %+v at 80x24, want the full width and at least 8 rows", l.lesson)
	}
	screen := ansi.Strip(m.Render())
	if !strings.Contains(screen, "Lesson 2") {
		t.Errorf("no lesson pane on the screen:\n%s", screen)
	}
	send(m, "tab")
	if l := m.layout(); l.lesson.w != 0 || l.regs.w == 0 {
		t.Errorf("after tab: lesson %+v, registers %+v; want the registers back", l.lesson, l.regs)
	}
}

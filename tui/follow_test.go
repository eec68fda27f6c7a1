package tui

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/sctrace/sctrace/internal/outfile"
	"github.com/sctrace/sctrace/trace"
)

// saveFirst writes the first n steps of src to path, replacing the file
// whole, as sctrace proxy --out does while gdb steps.
func saveFirst(t *testing.T, src *trace.Trace, n int, path string) {
	t.Helper()
	if err := outfile.Write(path, src.View(n).Write); err != nil {
		t.Fatal(err)
	}
}

// follow runs the model's next look at the followed file.
func follow(t *testing.T, m *Model) {
	t.Helper()
	cmd := m.followTick()
	if cmd == nil {
		t.Fatal("no look at the followed file scheduled")
	}
	m.Update(cmd())
}

// TestFollow opens a trace file that grows while it is viewed: a view on
// the last step follows the new last step, a view elsewhere stays where it
// is, an unchanged file is not read again, and a file that goes away is
// said, with the view kept.
func TestFollow(t *testing.T) {
	src := loadTrace(t)
	path := filepath.Join(t.TempDir(), "live.sctrace")
	saveFirst(t, src, 10, path)
	f, err := NewFollow(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	m := New(Config{Driver: f, Syntax: trace.ATT})
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
	if m.Steps() != 10 || !strings.Contains(m.status, "following live.sctrace: 10 steps") {
		t.Fatalf("opened with %d steps, status %q", m.Steps(), m.status)
	}
	m.Update(press("G"))
	if m.Pos() != 10 {
		t.Fatalf("G: at %d, want 10", m.Pos())
	}

	saveFirst(t, src, 20, path)
	follow(t, m)
	if m.Steps() != 20 || m.Pos() != 20 {
		t.Errorf("after the file grew to 20 steps: %d steps, at %d; want 20, at the new end", m.Steps(), m.Pos())
	}
	if got, want := m.snap.Step(19).RIP, src.Step(19).RIP; got != want {
		t.Errorf("step 19 at %#x, want %#x", got, want)
	}

	m.Update(press("b"))
	m.Update(press("b"))
	saveFirst(t, src, src.Len(), path)
	follow(t, m)
	if m.Steps() != src.Len() || m.Pos() != 18 {
		t.Errorf("after the file grew with the view on step 18: %d steps, at %d; want %d, at 18", m.Steps(), m.Pos(), src.Len())
	}

	if changed, err := f.Reload(context.Background()); changed || err != nil {
		t.Errorf("Reload of an unchanged file: changed %v, %v", changed, err)
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	follow(t, m)
	if m.Steps() != src.Len() || !strings.Contains(m.status, "following live.sctrace") || !m.warn {
		t.Errorf("after the file went away: %d steps, status %q (warn %v)", m.Steps(), m.status, m.warn)
	}
}

// TestFollowNotATrace refuses a file that is no trace at once.
func TestFollowNotATrace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.sctrace")
	if err := os.WriteFile(path, []byte("not a trace\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewFollow(context.Background(), path); err == nil {
		t.Fatal("NewFollow of a file that is no trace: no error")
	}
}

// TestUserWritesInReplay: a change made by hand with :set shows in the
// effects pane at the stop where it was made, marked as not the guest's
// doing, and nowhere else.
func TestUserWritesInReplay(t *testing.T) {
	tr := loadTrace(t)
	tr.UserWrites = []trace.UserWrite{{Step: 3, What: "rax", Size: 8, Old: 0x27, OldKnown: true, New: 5}}
	m := New(Config{Driver: NewReplay(tr), Syntax: trace.ATT})
	m.Update(tea.WindowSizeMsg{Width: 160, Height: 50})
	want := "rax changed by hand from 0x27 to 0x5 (not by the guest)"
	for _, pos := range []int{2, 3, 4} {
		m.move(pos)
		got := strings.Contains(ansi.Strip(m.Render()), want)
		if got != (pos == 3) {
			t.Errorf("at step %d: the write by hand shown %v, want %v", pos, got, pos == 3)
		}
	}
}

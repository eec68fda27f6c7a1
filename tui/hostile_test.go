package tui

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/sctrace/sctrace/trace"
)

// TestHostileTraceRender replays ../trace/testdata/hostile.json, whose
// every string starts with an OSC sequence that retitles the terminal, and
// checks that no screen carries it: the TUI's own styles are CSI
// sequences, so the raw screen must hold no OSC introducer and no BEL,
// and once styles are stripped, no ESC at all.
func TestHostileTraceRender(t *testing.T) {
	tr, err := trace.ReadFile(filepath.Join("..", "trace", "testdata", "hostile.json"))
	if err != nil {
		t.Fatal(err)
	}
	m := New(Config{Driver: NewReplay(tr), Syntax: trace.ATT})
	m.Update(tea.WindowSizeMsg{Width: 160, Height: 50})
	shown := false
	check := func(when string) {
		raw := m.Render()
		if strings.Contains(raw, "\x1b]") || strings.Contains(raw, "\x07") {
			t.Errorf("%s: the screen holds an OSC sequence or a BEL", when)
		}
		if i := strings.IndexByte(ansi.Strip(raw), 0x1b); i >= 0 {
			t.Errorf("%s: the screen holds an ESC besides its styles", when)
		}
		shown = shown || strings.Contains(raw, "pwned")
	}
	check("start")
	for _, k := range []string{"f", "f", "f", "e", "o", "t", "tab", "?", "esc"} {
		m.Update(press(k))
		check("after " + k)
	}
	if !shown {
		t.Error("no screen showed the (escaped) text: the check above proves nothing")
	}
}

func TestSaveKeepsElsewhere(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	m := New(Config{Driver: NewReplay(loadTrace(t)), SaveDir: "/nonexistent/dir",
		Now: func() time.Time { return time.Date(2026, 11, 22, 10, 30, 0, 0, time.UTC) }})
	do(m, press("w"))
	do(m, press("enter"))
	kept, _ := filepath.Glob(filepath.Join(tmp, "sctrace-syscall-*"+SaveExt))
	if len(kept) != 1 {
		t.Fatalf("kept %v in %s, status %q", kept, tmp, m.status)
	}
	if !m.warn || !strings.Contains(m.status, "/nonexistent/dir/sctrace-syscall-20261122-103000"+SaveExt) ||
		!strings.Contains(m.status, "written to "+kept[0]+" instead") {
		t.Errorf("status %q does not say what failed and where the trace went", m.status)
	}
	tr, err := trace.ReadFile(kept[0])
	if err != nil || tr.Len() != 87 {
		t.Fatalf("kept trace: %v", err)
	}
	if _, err := os.Stat("/nonexistent/dir"); err == nil {
		t.Fatal("/nonexistent/dir exists on this machine")
	}
}

// TestDamagedChunkRender opens ../trace/testdata/damaged-chunk0.sctrace
// (its only chunk's checksum flipped) as sctrace view does and checks that
// the view comes up, walks, and shows the steps as not decodable.
func TestDamagedChunkRender(t *testing.T) {
	tr, err := trace.Open(t.Context(), filepath.Join("..", "trace", "testdata", "damaged-chunk0.sctrace"))
	if err != nil {
		t.Fatal(err)
	}
	m := New(Config{Driver: NewReplay(tr), Syntax: trace.ATT})
	m.Update(tea.WindowSizeMsg{Width: 160, Height: 50})
	for _, k := range []string{"n", "n", "G", "g"} {
		m.Update(press(k))
	}
	screen := ansi.Strip(m.Render())
	for _, want := range []string{"(undecodable)", "could not be decoded"} {
		if !strings.Contains(screen, want) {
			t.Errorf("the screen lacks %q:\n%s", want, screen)
		}
	}
}

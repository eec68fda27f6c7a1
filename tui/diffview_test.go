package tui

import (
	"strings"
	"testing"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"
	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/diff"
	"github.com/sctrace/sctrace/trace"
)

// diffPair builds two traces from the recorded int $0x80 round trip in
// trace/testdata: A as recorded, B with the CR3 switch on entry left out
// and the exit swapgs patched into a NOP of its length, as the teaching
// kernel's bug=int80-noswapgs does.
func diffPair(t *testing.T) *diff.Result {
	t.Helper()
	a, err := trace.ReadFile("../trace/testdata/int80.json")
	if err != nil {
		t.Fatal(err)
	}
	b := &trace.Trace{Header: a.Header}
	for i := range a.Len() {
		s := *a.Step(i)
		if s.Symbol == "entry_INT80+0x5" || s.Symbol == "entry_INT80+0x8" {
			continue
		}
		if s.Op == x86asm.SWAPGS && i > a.Len()/2 {
			s.Bytes, s.Op, s.Mnemonic, s.ATT = trace.Bytes{0x0f, 0x1f, 0x00}, x86asm.NOP, "nop", "nopl (%rax)"
		}
		b.Append(s)
	}
	return diff.Compare(a, b)
}

func diffKeys(m *DiffModel, keys ...string) tea.Cmd {
	var cmd tea.Cmd
	for _, k := range keys {
		var msg tea.KeyPressMsg
		switch k {
		case "down":
			msg = tea.KeyPressMsg{Code: tea.KeyDown}
		default:
			msg = tea.KeyPressMsg{Code: rune(k[0]), Text: k}
		}
		_, cmd = m.Update(msg)
	}
	return cmd
}

// TestDiffView checks the side-by-side view: both panes at the screen's
// width, the rows of the two panes the same pairs (they scroll
// together), e and E landing on the first pair of each run of
// differences, in both directions, and q quitting.
func TestDiffView(t *testing.T) {
	r := diffPair(t)
	var starts []int // the first pair of each run of differences
	for i, p := range r.Pairs {
		if p.Op != diff.Equal && (i == 0 || r.Pairs[i-1].Op == diff.Equal) {
			starts = append(starts, i)
		}
	}
	if len(starts) != 2 {
		t.Fatalf("runs of differences start at %v, want 2", starts)
	}
	m := NewDiff(r, diff.Options{NameA: "a.json", NameB: "b.json"})
	const w, h = 120, 30
	m.Update(tea.WindowSizeMsg{Width: w, Height: h})
	check := func(when string) []string {
		t.Helper()
		lines := strings.Split(ansi.Strip(m.Render()), "\n")
		if len(lines) != h {
			t.Fatalf("%s: %d lines, want %d", when, len(lines), h)
		}
		for i, l := range lines {
			if n := ansi.StringWidth(l); n != w {
				t.Fatalf("%s: line %d is %d columns wide: %q", when, i, n, l)
			}
		}
		if !strings.Contains(lines[2], "A a.json") || !strings.Contains(lines[2], "B b.json") {
			t.Fatalf("%s: pane titles %q", when, lines[2])
		}
		// Each row: the same pair in both panes.
		for _, l := range lines[3 : h-2] {
			left, right := []rune(l)[1:w/2-1], []rune(l)[w/2+1:w-1]
			lo, ro := strings.TrimSpace(string(left[:1])), strings.TrimSpace(string(right[:1]))
			if lo != ro && lo != "-" && ro != "+" {
				t.Fatalf("%s: a row shows %q on the left and %q on the right: %q", when, lo, ro, l)
			}
		}
		return lines
	}
	check("start")
	for k, want := range starts {
		diffKeys(m, "e")
		if m.Cur() != want {
			t.Fatalf("e #%d: at pair %d, want %d", k+1, m.Cur(), want)
		}
		lines := check("after e")
		p := r.Pairs[want]
		found := false
		for _, l := range lines {
			if strings.HasPrefix(l, "│"+p.Op.String()) {
				found = true
			}
		}
		if !found {
			t.Errorf("after e #%d the %s pair is not on the screen", k+1, p.Op)
		}
	}
	diffKeys(m, "e")
	if m.Cur() != starts[1] {
		t.Errorf("e past the last difference moved to %d", m.Cur())
	}
	diffKeys(m, "E")
	if m.Cur() != starts[0] {
		t.Errorf("E: at pair %d, want %d", m.Cur(), starts[0])
	}
	diffKeys(m, "E")
	if m.Cur() != starts[0] {
		t.Errorf("E before the first difference moved to %d", m.Cur())
	}
	diffKeys(m, "down", "down")
	if m.Cur() != starts[0]+2 {
		t.Errorf("two rows down: at %d, want %d", m.Cur(), starts[0]+2)
	}
	check("after moving")
	diffKeys(m, "G")
	if m.Cur() != len(r.Pairs)-1 {
		t.Errorf("G: at %d of %d", m.Cur(), len(r.Pairs))
	}
	check("at the end")
	if cmd := diffKeys(m, "q"); cmd == nil {
		t.Fatal("q: no command")
	} else if _, ok := cmd().(tea.QuitMsg); !ok {
		t.Errorf("q: %T, want tea.QuitMsg", cmd())
	}
}

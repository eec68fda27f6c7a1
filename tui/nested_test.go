package tui

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/session"
	"github.com/sctrace/sctrace/trace"
)

// TestStackPaneNestedFrame replays lesson 5's defect: the teaching kernel
// booted with bug=int80-noswapgs returns from the first int $0x80 without
// swapgs, so the second entry's mov %gs:0x1000,%rsp page-faults at CPL 0.
// The CPU pushes the #PF frame (error code, RIP, CS, RFLAGS, RSP, SS:
// SDM vol. 3, 6.14) on the stack the kernel was on, below the int $0x80
// frame; the stack pane must name those words as that frame, not as the
// pt_regs fields their positions below the stack's top would give. Here
// the interrupted RSP (0x...fc8) was not 16-byte aligned, so the CPU left
// one word of padding above the frame (SDM vol. 3, 6.14.2).
func TestStackPaneNestedFrame(t *testing.T) {
	testenv.NeedQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s, err := session.StartFixture(ctx, session.Options{Accel: "tcg", Mechanism: mechanism.Int80, Append: "bug=int80-noswapgs", StackWords: StackWords})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.RoundTrip(ctx, mechanism.Int80); err != nil {
		t.Fatal(err)
	}
	tr, err := s.RoundTrip(ctx, mechanism.Int80)
	if tr == nil || tr.Len() == 0 {
		t.Fatalf("second round trip: %v", err)
	}
	fault := -1
	for i, st := range tr.All() {
		if st.CPL == 0 && slices.Contains(st.Events, annotate.EventException) {
			fault = i
			break
		}
	}
	if fault < 0 || fault+1 >= tr.Len() {
		t.Fatalf("no kernel-mode exception with a step after it in %d steps (%v)", tr.Len(), err)
	}
	m := New(Config{Driver: NewReplay(tr), Syntax: trace.ATT})
	m.Update(tea.WindowSizeMsg{Width: 160, Height: 48})
	for _, k := range keys("g " + strings.Join(strings.Split(fmt.Sprint(fault+1), ""), " ") + " enter") {
		m.Update(k)
	}
	if m.Pos() != fault+1 {
		t.Fatalf("at step %d, want %d", m.Pos(), fault+1)
	}
	screen := ansi.Strip(m.Render())
	for _, want := range []string{"a kernel-mode exception's frame at", "nested frame: error code", "nested frame: ip", "nested frame: ss", "+0x030 0000000000000000 alignment padding"} {
		if !strings.Contains(screen, want) {
			t.Errorf("stack pane at step %d lacks %q:\n%s", fault+1, want, screen)
		}
	}
	// The first six words at RSP are the #PF frame: none is a pt_regs slot.
	for _, l := range strings.Split(screen, "\n") {
		if regexp.MustCompile(`\+0x0[0-2][0-9a-f] [0-9a-f]{16} pt_regs->`).MatchString(l) {
			t.Errorf("a word of the #PF frame is labelled as pt_regs: %s", l)
		}
	}

	// A round trip with no kernel-mode exception shows no nested frame.
	r := replayModel(t, 160, 48)
	for _, k := range keys("g 2 0 enter") {
		r.Update(k)
	}
	if screen := ansi.Strip(r.Render()); strings.Contains(screen, "nested frame") {
		t.Errorf("a nested frame on the plain syscall trace:\n%s", screen)
	}
}

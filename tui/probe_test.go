package tui

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
)

// TestProbeWhileRendering presses `p` in a live TUI over the fake stub and
// keeps rendering while the probe runs, as bubbletea does: the snapshot the
// screen shows must not change under it (go test -race reports it if it
// does), the snapshot taken before the probe must read as it did, and the
// snapshot after it must show the probe's effects where `p` said they
// would be.
func TestProbeWhileRendering(t *testing.T) {
	stub := gdbstubtest.New(t)
	const rip, rsp = 0xffffffff81000000, 0xffffc90000004000
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m := New(Config{Driver: stubLive(ctx, t, stub, rip, rsp, bytes.Repeat([]byte{0x90}, 4096))}) // nop; the fake stub's step adds one to RIP
	defer m.drv.Close()
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})

	// One step into the "kernel", so that the effects pane shows step 0.
	_, cmd := m.Update(press("s"))
	if cmd == nil {
		t.Fatal("s did not start a guest step")
	}
	m.Update(cmd())
	if m.Steps() != 1 || m.Pos() != 1 {
		t.Fatalf("after s: position %d of %d, want 1 of 1", m.Pos(), m.Steps())
	}
	before := m.snap
	effects := slices.Clone(before.Step(0).Effects)

	_, cmd = m.Update(press("p"))
	if cmd == nil {
		t.Fatal("p at CPL 0 did not start the probe")
	}
	done := make(chan tea.Msg)
	go func() { done <- cmd() }()
	var msg tea.Msg
	for msg == nil {
		m.Render()
		select {
		case msg = <-done:
		default:
		}
	}
	if got := before.Step(0).Effects; !slices.Equal(got, effects) {
		t.Errorf("the snapshot shown while probing changed: step 0 had %d effects, now %d", len(effects), len(got))
	}
	m.Update(msg)
	if !strings.Contains(m.status, "read 11 MSRs") {
		t.Errorf("status after p: %q", m.status)
	}
	// The fake stub's step does not run rdmsr, so every MSR reads as not
	// readable; the effects pane of the step the probe followed says so.
	screen := m.Render()
	if !strings.Contains(screen, "IA32_LSTAR: not readable") {
		t.Errorf("the effects pane does not show the probe:\n%s", screen)
	}
}

package tui

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/sctrace/sctrace/trace"
)

// notBooted is what attaching to a QEMU started with -S gives.
var notBooted = fmt.Errorf("run to the next syscall: %w: the CPU is in real mode at 0xfff0", trace.ErrNotBooted)

// startMsg runs the start-up command cmd returns and hands its result
// to m, skipping the spinner's ticks that come with it.
func startMsg(t *testing.T, m *Model, cmd tea.Cmd) {
	t.Helper()
	if cmd == nil {
		t.Fatal("no start-up command")
	}
	msg := cmd()
	if b, ok := msg.(tea.BatchMsg); ok {
		for _, c := range b {
			if c == nil {
				continue
			}
			if sm, ok := c().(startedMsg); ok {
				m.Update(sm)
				return
			}
		}
		t.Fatal("no start-up in the batch")
	}
	m.Update(msg)
}

// TestBootOffer: a guest found not booted is offered the boot wait; y
// runs it and opens the view, n quits with the error.
func TestBootOffer(t *testing.T) {
	tr := loadTrace(t)
	for _, tt := range []struct {
		key    string
		booted bool
	}{{"y", true}, {"n", false}} {
		t.Run(tt.key, func(t *testing.T) {
			waited := 0
			m := New(Config{
				Start: func(context.Context) (Driver, error) { return nil, notBooted },
				BootWait: func(context.Context) (Driver, error) {
					waited++
					return NewReplay(tr), nil
				},
				BootWaitFor: 2 * time.Minute,
			})
			m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
			startMsg(t, m, m.Init())
			scr := ansi.Strip(m.Render())
			for _, want := range []string{"the guest has not booted", "0xfff0", "let it run until a 64-bit kernel is running (at most 2m0s)", "n quit"} {
				if !strings.Contains(scr, want) {
					t.Errorf("offer screen lacks %q:\n%s", want, scr)
				}
			}
			if m.Err() != nil {
				t.Fatalf("start-up failed before an answer: %v", m.Err())
			}
			_, cmd := m.Update(press(tt.key))
			if !tt.booted {
				if !errors.Is(m.Err(), trace.ErrNotBooted) || cmd == nil || waited != 0 {
					t.Errorf("after n: err %v, waited %d", m.Err(), waited)
				}
				return
			}
			startMsg(t, m, cmd)
			if waited != 1 || m.Driver() == nil || m.Steps() != tr.Len() {
				t.Errorf("after y: waited %d times, driver %v, %d steps", waited, m.Driver(), m.Steps())
			}
		})
	}
}

// TestBootOfferOnlyOnce: when the boot wait itself fails, start-up fails
// with its error instead of asking again.
func TestBootOfferOnlyOnce(t *testing.T) {
	m := New(Config{
		Start:    func(context.Context) (Driver, error) { return nil, notBooted },
		BootWait: func(context.Context) (Driver, error) { return nil, notBooted },
	})
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	startMsg(t, m, m.Init())
	_, cmd := m.Update(press("y"))
	startMsg(t, m, cmd)
	if !errors.Is(m.Err(), trace.ErrNotBooted) {
		t.Errorf("after a failed boot wait: %v, want the error", m.Err())
	}
}

package trace

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/x86"
)

// Gap is a stretch the guest ran without being recorded: a debugger the
// recording watches (sctrace proxy) continued it rather than stepping. Like
// a probe, a gap is kept beside the steps, so that a step, once recorded,
// never changes.
type Gap struct {
	// Step is the index of the first step recorded after the gap: the
	// gap follows step Step-1 (and 0 means before the first step).
	Step int `json:"step"`
	// What says what ran the guest and where it stopped.
	What string `json:"what"`
	// Before is the state when the gap began, after step Step-1 (nil for
	// a gap before the first step): the state that followed that step,
	// which the next step's Regs no longer are.
	Before *x86.State `json:"before,omitempty"`
}

// GapAt returns the gap recorded before step i, if there is one.
func (t *Trace) GapAt(i int) (*Gap, bool) {
	for k := range t.Gaps {
		if t.Gaps[k].Step == i {
			return &t.Gaps[k], true
		}
	}
	return nil, false
}

// checkGaps checks the gaps read from a file of n steps: each before a
// step of the trace (or after the last), in order.
func checkGaps(gaps []Gap, n int) error {
	for i, g := range gaps {
		if g.Step < 0 || g.Step > n || i > 0 && g.Step <= gaps[i-1].Step {
			return fmt.Errorf("corrupt trace: gap %d before step %d of %d, out of order", i, g.Step, n)
		}
	}
	return nil
}

// NoteGap records that the guest ran unrecorded after the last step, for
// the reason what: the next step appended follows the gap. Two gaps with
// no step between them are one, which says each different reason once. It
// returns the gap.
func (r *Recorder) NoteGap(what string) *Gap {
	t := r.trace
	n := t.Len()
	if g, ok := t.GapAt(n); ok {
		if slices.Contains(strings.Split(g.What, "; "), what) {
			return g
		}
		// A copy, so that views taken before (Trace.View) keep the
		// gap as it was.
		k := len(t.Gaps) - 1
		t.Gaps = slices.Clone(t.Gaps)
		t.Gaps[k].What += "; " + what
		return &t.Gaps[k]
	}
	var before *x86.State
	if n > 0 {
		before = r.cur
	}
	t.Gaps = append(t.Gaps, Gap{Step: n, What: what, Before: before})
	return &t.Gaps[len(t.Gaps)-1]
}

// Observe prepares a recorder that watches another debugger step the CPU
// rather than stepping it: unlike Init it changes nothing in the stub. It
// reads the single-step flags in force (said in the header as Init says
// the ones it sets), the current state and the system registers.
func (r *Recorder) Observe(ctx context.Context, who string) error {
	flags, err := r.T.Conn.StepFlags(ctx)
	if err != nil {
		var ue *gdbremote.UnsupportedError
		if !errors.As(err, &ue) {
			return fmt.Errorf("read single-step flags: %w", err)
		}
		flags = -1
	}
	r.flags = flags
	r.describeStepping()
	r.trace.Header.Stepping = "stepped by " + who + ": " + r.trace.Header.Stepping
	st, err := r.T.State(ctx)
	if err != nil {
		return err
	}
	r.cur = st
	return r.readSys(ctx)
}

// UseSymbols gives the recorder names and regions found after it was made
// (a proxy finds a Linux guest's kallsyms once the kernel runs): the steps
// recorded from then on are named with them. kernel, when not empty,
// describes the kernel in the header.
func (r *Recorder) UseSymbols(tab *symbols.Table, regions []annotate.Region, kernel string) {
	r.Symbols = tab
	r.Ctx.Symbols = tab
	r.Ctx.Regions = regions
	h := &r.trace.Header
	h.Symbols, h.Regions = tab.Source, regions
	if kernel != "" {
		h.Kernel = kernel
	}
}

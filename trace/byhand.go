package trace

import (
	"context"
	"fmt"
)

// UserWrite is a change a person made to the guest by hand (from sctrace's
// command line: `set $rax = 5`, `set *(u64*)ADDR = 0`) while it was
// stopped. It is kept beside the steps, like a Probe, so that a replay
// says the state that follows was changed by hand and not by the guest.
type UserWrite struct {
	// Step is the index of the step the write was made before: it changed
	// the state after step Step-1, and 0 means before the first step.
	Step int `json:"step"`
	// What names what was written: a register ("rax") or memory
	// ("*(u64*)0xffffffff81e0a000").
	What string `json:"what"`
	// Addr is the address of a memory write (0 for a register), and
	// Physical says it was a physical address.
	Addr     Hex  `json:"addr,omitempty"`
	Physical bool `json:"physical,omitempty"`
	// Size is the width of the write in bytes.
	Size int `json:"size"`
	// Old is the value before, when it was read (OldKnown), New the value
	// written.
	Old      Hex  `json:"old"`
	OldKnown bool `json:"old_known"`
	New      Hex  `json:"new"`
}

// String says what was changed, e.g. "rax changed by hand from 0x27 to
// 0x5".
func (w UserWrite) String() string {
	if w.OldKnown {
		return fmt.Sprintf("%s changed by hand from %#x to %#x (not by the guest)", w.What, uint64(w.Old), uint64(w.New))
	}
	return fmt.Sprintf("%s set by hand to %#x (not by the guest; the old value was not read)", w.What, uint64(w.New))
}

// UserWritesBefore returns the writes made at the stop before step i
// (after step i-1), in the order they were made.
func UserWritesBefore(ws []UserWrite, i int) []UserWrite {
	var out []UserWrite
	for _, w := range ws {
		if w.Step == i {
			out = append(out, w)
		}
	}
	return out
}

// AddUserWrite records w, made at the current stop, as made before the
// next step, and reads the state again so that the next step starts from
// what was written. A memory write may have changed code: the cached
// instruction bytes are dropped.
func (r *Recorder) AddUserWrite(ctx context.Context, w UserWrite) error {
	w.Step = r.trace.Len()
	r.trace.UserWrites = append(r.trace.UserWrites, w)
	if w.Addr != 0 || w.Physical {
		r.T.InvalidateCode()
	}
	return r.Refresh(ctx)
}

// Refresh reads the registers at the current stop again, for a guest that
// was changed or moved by something other than the recorder.
func (r *Recorder) Refresh(ctx context.Context) error {
	st, err := r.T.State(ctx)
	if err != nil {
		return err
	}
	st.Sys = r.tables
	r.cur = st
	return nil
}

// Restart starts a fresh trace at the current stop, for a guest that ran
// on outside the recorder (a continue to a breakpoint, say), where the
// steps recorded so far no longer lead to. It reads the registers and
// system registers again and returns the trace recorded so far, which it
// leaves as it was.
func (r *Recorder) Restart(ctx context.Context) (*Trace, error) {
	old := r.Trace()
	h := old.Header
	h.Stop, h.SpuriousStops, h.IRQs, h.Seconds, h.StepRate = "", 0, 0, 0, 0
	r.trace = &Trace{Format: Format, Version: Version, Header: h}
	r.busy, r.depth = 0, 0
	if err := r.Refresh(ctx); err != nil {
		return old, err
	}
	return old, r.readSys(ctx)
}

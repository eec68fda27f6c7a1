package trace

import (
	"context"
	"errors"
	"fmt"

	"github.com/sctrace/sctrace/gdbremote"
)

// clearBreakpoint removes the hardware breakpoint at addr, even when ctx
// is done. It is deferred where the breakpoint was set; when the removal
// fails it joins to *errp an error saying that a breakpoint may be left at
// addr, so the failure is never silent.
func (r *Recorder) clearBreakpoint(ctx context.Context, addr uint64, errp *error) {
	if err := r.T.Conn.ClearBreakpoint(context.WithoutCancel(ctx), gdbremote.Hardware, addr, 1); err != nil {
		*errp = errors.Join(*errp, fmt.Errorf("a hardware breakpoint may be left at %s (0x%x): removing it: %w", r.name(addr), addr, err))
	}
}

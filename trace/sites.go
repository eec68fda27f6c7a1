package trace

import (
	"context"
	"fmt"
	"slices"

	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/x86"
)

// MaxSites is how many user instructions ToSites breaks on at once: the
// four debug-address registers (DR0-DR3) QEMU's hardware breakpoints use.
const MaxSites = 4

// ToSites lets the guest run until it stops at one of sites, a user
// instruction known beforehand (from the program's ELF) that enters the
// kernel by m, and starts a fresh trace there. It is how an instruction
// without an interrupt vector or a learnable return address is caught:
// sysenter saves no return address at all, and a 64-bit kernel's
// compatibility-mode SYSCALL entry (CSTAR) has no symbol ToEntry breaks
// on. The vCPU that stops is followed, and with OnCPU set only a stop on
// that vCPU counts. A site whose bytes turn out to be part of another instruction is
// never hit; at most MaxSites are used. what names the wait in errors.
// Breakpoints are removed on every path, ctrl-c included.
func (r *Recorder) ToSites(ctx context.Context, m mechanism.Mechanism, sites []uint64, what string) (err error) {
	r.Reset()
	if len(sites) == 0 {
		return fmt.Errorf("wait for %s: no %s instruction is known to break on", what, m.Instruction())
	}
	sites = sites[:min(len(sites), MaxSites)]
	wanted := func(ctx context.Context, st *x86.State) bool {
		if !r.onWantedCPU() || st.CPL() != 3 || !slices.Contains(sites, st.Val(x86.RIP)) {
			return false
		}
		inst, _, err := r.Decode(ctx, st)
		return err == nil && mechanism.Classify(inst, false) == m
	}
	if r.cur != nil && wanted(ctx, r.cur) {
		return r.readSys(ctx)
	}
	var set []uint64
	defer func() {
		for _, a := range set {
			r.clearBreakpoint(ctx, a, &err)
		}
	}()
	for _, a := range sites {
		if err := r.T.Conn.SetBreakpoint(ctx, gdbremote.Hardware, a, 1); err != nil {
			return fmt.Errorf("breakpoint at %s: %w", r.name(a), err)
		}
		set = append(set, a)
	}
	budget := r.Budget
	if budget <= 0 {
		budget = DefaultBudget
	}
	for n := 0; n < budget; n++ {
		if r.cur != nil && slices.Contains(set, r.cur.Val(x86.RIP)) {
			// QEMU stops again at once at a breakpoint it is resumed
			// on: step off it first.
			if err := r.stepOff(ctx); err != nil {
				return err
			}
		}
		_, st, err := r.resume(ctx, "wait for "+what)
		if err != nil {
			return err
		}
		if wanted(ctx, st) {
			return r.readSys(ctx)
		}
	}
	return fmt.Errorf("wait for %s: stopped %d times elsewhere (the budget; --budget raises it)", what, budget)
}

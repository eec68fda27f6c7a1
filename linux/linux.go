// Package linux knows what sctrace needs of a running Linux kernel that it
// can find out through QEMU's gdbstub alone: where the kernel's text is (an
// IDT handler), how to stop the CPU where kernel memory is mapped (with page
// table isolation on, user page tables hide it), the symbols (read from
// kallsyms in guest memory), the per-CPU symbols placed at the CPU's GS
// base, and the memory regions the system-call path uses — the TSS, the
// entry stack and the IST stacks found from TR's base in the
// cpu_entry_area, and the task stack from the per-CPU top-of-stack.
//
// Nothing here is a constant of one kernel build: every address is read
// from the guest or decoded from its tables.
package linux

import (
	"context"
	"errors"
	"fmt"

	"github.com/sctrace/sctrace/kallsyms"
	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/x86"
)

// Memory reads guest virtual memory; *target.Target is one.
type Memory = kallsyms.Memory

// Stepper is the live target EnterKernel drives.
type Stepper interface {
	Memory
	State(ctx context.Context) (*x86.State, error)
	Step(ctx context.Context) (*x86.State, error)
}

// Gate returns the handler address of IDT vector vec, read from the IDT at
// idtBase (a 16-byte long-mode gate).
func Gate(ctx context.Context, mem Memory, idtBase uint64, vec int) (uint64, error) {
	b, err := mem.ReadMemory(ctx, idtBase+x86.GateSize*uint64(vec), x86.GateSize)
	if err != nil {
		return 0, fmt.Errorf("IDT gate %#x: %w", vec, err)
	}
	g, ok := x86.DecodeGate(b)
	if !ok {
		return 0, fmt.Errorf("IDT gate %#x: %d bytes read, want %d", vec, len(b), x86.GateSize)
	}
	if !g.Present {
		return 0, fmt.Errorf("IDT gate %#x is not present", vec)
	}
	return g.Offset, nil
}

// Anchor returns an address in the kernel's text to search for its tables
// from: the divide-error handler of the IDT at idtBase, which Linux keeps in
// its entry text.
func Anchor(ctx context.Context, mem Memory, idtBase uint64) (uint64, error) {
	a, err := Gate(ctx, mem, idtBase, 0)
	if err != nil {
		return 0, err
	}
	if !x86.CanonicalKernel(a) {
		return 0, fmt.Errorf("IDT gate 0 points to %#x, not a kernel-half address: is this Linux?", a)
	}
	return a, nil
}

// ErrNoKernelContext is returned when EnterKernel cannot bring the CPU to
// a point where kernel memory is mapped.
var ErrNoKernelContext = errors.New("the CPU did not reach a point where kernel memory is mapped")

// settleSteps is how many instructions the CPU must run at CPL 0 without a
// KPTI switch before its page tables are taken for kernel ones: Linux's
// entry code switches CR3 within its first few instructions.
const settleSteps = 64

// EnterKernel single-steps the stopped guest, at most max instructions,
// until the CPU runs at CPL 0 under the kernel's page tables, with kernel
// memory readable at probe. With page table isolation, user page tables
// map the entry text and the cpu_entry_area but not the kernel's data, and
// the CPU enters the kernel under them: the kernel tables are in place once
// CR3 has switched from the user half (bit 12 set) to the kernel half, or,
// for a kernel without isolation, after a few dozen instructions at CPL 0
// without such a switch. A user program that makes system calls soon
// enters the kernel. It returns the state reached.
func EnterKernel(ctx context.Context, t Stepper, probe uint64, max int) (*x86.State, error) {
	st, err := t.State(ctx)
	if err != nil {
		return nil, err
	}
	switched, atZero := false, 0
	for n := 0; ; n++ {
		if st.CPL() == 0 && (switched || atZero >= settleSteps) {
			if _, err := t.ReadMemory(ctx, probe, 8); err == nil {
				return st, nil
			}
		}
		if n >= max {
			return st, fmt.Errorf("%w within %d steps (at CPL %d, rip %#x)", ErrNoKernelContext, max, st.CPL(), st.Val(x86.RIP))
		}
		next, err := t.Step(ctx)
		if err != nil {
			return nil, err
		}
		old, nw := st.Val(x86.CR3), next.Val(x86.CR3)
		switch {
		case next.CPL() != 0:
			switched, atZero = false, 0
		case old != nw && old&x86.KPTIUserBit != 0 && nw&x86.KPTIUserBit == 0:
			switched = true
		case old != nw:
			switched, atZero = false, 0
		default:
			atZero++
		}
		st = next
	}
}

// KernelGSBase returns the kernel's per-CPU base from a state: whichever of
// GS base and the parked IA32_KERNEL_GS_BASE is a kernel-half address.
func KernelGSBase(st *x86.State) (uint64, bool) { return st.KernelGS() }

// Symbols reads the kernel's kallsyms tables, searching from anchor, and
// returns them as a table.
func Symbols(ctx context.Context, mem Memory, anchor uint64) (*symbols.Table, *kallsyms.Result, error) {
	res, err := kallsyms.Read(ctx, mem, anchor, kallsyms.ReadOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("kallsyms: %w", err)
	}
	src := fmt.Sprintf("kallsyms read from guest memory (%d symbols, tables at %#x)", res.Layout.Count, res.Layout.TokenTable)
	return res.Table(src), res, nil
}

// perCPULimit bounds the addresses taken for per-CPU offsets: Linux links
// x86-64 per-CPU variables at small offsets from zero.
const perCPULimit = 1 << 24

// IsPerCPU reports whether s is a per-CPU variable (an offset from the GS
// base rather than an address).
func IsPerCPU(s symbols.Symbol) bool { return s.Addr < perCPULimit }

// PerCPU returns the per-CPU symbols of tab placed at gsBase, so that the
// linear address of a gs-relative operand has a name: cpu_tss_rw,
// cpu_current_top_of_stack, pcpu_hot and every other per-CPU variable of
// the CPU whose GS base it is.
func PerCPU(tab *symbols.Table, gsBase uint64) []symbols.Symbol {
	var out []symbols.Symbol
	for _, s := range tab.Symbols() {
		if IsPerCPU(s) && s.Name != "" {
			s.Addr += gsBase
			out = append(out, s)
		}
	}
	return out
}

// WithPerCPU returns tab with its per-CPU symbols moved to gsBase: left at
// their small link-time offsets they would name every small constant.
func WithPerCPU(tab *symbols.Table, gsBase uint64) *symbols.Table {
	pc := PerCPU(tab, gsBase)
	if len(pc) == 0 {
		return tab
	}
	all := make([]symbols.Symbol, 0, tab.Len())
	for _, s := range tab.Symbols() {
		if !IsPerCPU(s) {
			all = append(all, s)
		}
	}
	all = append(all, pc...)
	return symbols.New(fmt.Sprintf("%s; per-CPU symbols at GS base %#x", tab.Source, gsBase), all)
}

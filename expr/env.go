package expr

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/agnivade/levenshtein"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/target"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// UnknownSymbolError is a name the symbol table does not have, with the
// closest names it does have.
type UnknownSymbolError struct {
	Name    string
	Similar []string
	NoTable bool // there are no symbols at all
}

func (e *UnknownSymbolError) Error() string {
	switch {
	case e.NoTable:
		return fmt.Sprintf("no symbol %q: no symbols are loaded (give --symbols)", e.Name)
	case len(e.Similar) > 0:
		return fmt.Sprintf("no symbol %q; did you mean %s?", e.Name, strings.Join(e.Similar, ", "))
	}
	return fmt.Sprintf("no symbol %q", e.Name)
}

// maxSimilar is how many close names an unknown symbol's error offers.
const maxSimilar = 3

// LookupSymbol returns the address of the named symbol in tab, or an
// *UnknownSymbolError that suggests the closest names: those that start
// with or contain the name, then those a few edits away.
func LookupSymbol(tab *symbols.Table, name string) (uint64, error) {
	if a, ok := tab.Addr(name); ok {
		return a, nil
	}
	if tab.Len() == 0 {
		return 0, &UnknownSymbolError{Name: name, NoTable: true}
	}
	return 0, &UnknownSymbolError{Name: name, Similar: Similar(tab, name, maxSimilar)}
}

// Similar returns up to n names of tab close to name, best first: names
// that contain it (shortest first), then names within a third of its
// length in edits.
func Similar(tab *symbols.Table, name string, n int) []string {
	type cand struct {
		name string
		rank int
	}
	var cs []cand
	lower := strings.ToLower(name)
	limit := max(1, len(name)/3)
	seen := map[string]bool{}
	for _, s := range tab.Symbols() {
		if seen[s.Name] || symbols.IsMarker(s.Name) {
			continue
		}
		l := strings.ToLower(s.Name)
		switch {
		case strings.Contains(l, lower):
			cs = append(cs, cand{s.Name, len(s.Name) - len(name)})
		case abs(len(l)-len(lower)) <= limit:
			if d := levenshtein.ComputeDistance(l, lower); d <= limit {
				cs = append(cs, cand{s.Name, 1000 + d})
			} else {
				continue
			}
		default:
			continue
		}
		seen[s.Name] = true
	}
	slices.SortStableFunc(cs, func(a, b cand) int {
		if a.rank != b.rank {
			return a.rank - b.rank
		}
		return strings.Compare(a.name, b.name)
	})
	var out []string
	for _, c := range cs[:min(n, len(cs))] {
		out = append(out, c.name)
	}
	return out
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// FrameTop returns the top of the pt_regs frame among regions: the frame
// top of the task's kernel stack.
func FrameTop(regions []annotate.Region) (uint64, error) {
	for _, r := range regions {
		if r.Kind == annotate.RegionKernelStack && r.FrameTop != 0 {
			return r.FrameTop, nil
		}
	}
	return 0, errors.New("the task's kernel stack is not known, so neither is its pt_regs frame")
}

// Live evaluates against a stopped guest: registers from State, memory
// read through the stub under the current CR3 (or physical addresses,
// with Physical).
type Live struct {
	Ctx      context.Context
	T        *target.Target
	State    *x86.State
	Symbols  *symbols.Table
	Regions  []annotate.Region
	Physical bool
}

// Reg returns the register from the state read at the stop.
func (l *Live) Reg(r x86.Reg) (uint64, error) {
	v, ok := l.State.Get(r)
	if !ok {
		return 0, fmt.Errorf("$%s: the stub does not give this register", r)
	}
	return v, nil
}

// Symbol looks the name up, suggesting close names when it is unknown.
func (l *Live) Symbol(name string) (uint64, error) { return LookupSymbol(l.Symbols, name) }

// Read reads guest memory. An address the page tables do not map gives an
// error that says so, with the CR3 in force.
func (l *Live) Read(addr uint64, size int) ([]byte, error) {
	if l.Physical {
		return l.T.ReadPhysical(l.Ctx, addr, size)
	}
	b, err := l.T.ReadMemory(l.Ctx, addr, size)
	if err != nil {
		return nil, MemoryError(err, addr, l.State)
	}
	return b, nil
}

// FrameTop is the top of the task stack's pt_regs frame.
func (l *Live) FrameTop() (uint64, error) { return FrameTop(l.Regions) }

// MemoryError turns a failed memory access at addr into a one-line error:
// "0x…: not mapped under CR3 0x…" for an address the page tables do not
// map.
func MemoryError(err error, addr uint64, st *x86.State) error {
	var se interface{ NotMapped() bool }
	if errors.As(err, &se) && se.NotMapped() {
		if cr3, ok := st.Get(x86.CR3); ok {
			return fmt.Errorf("%#x: not mapped under CR3 %#x", addr, cr3)
		}
		return fmt.Errorf("%#x: not mapped under the current CR3", addr)
	}
	return fmt.Errorf("%#x: %w", addr, err)
}

// Replay evaluates against the state before step Index of a recorded
// trace: the registers the step kept, and the memory the recording read
// around it (the operands it read before the step, what the step before it
// wrote, the words at RSP). Anything else is ErrUnknown.
type Replay struct {
	Trace   *trace.Trace
	Index   int
	Symbols *symbols.Table
}

func (r *Replay) state() *x86.State {
	if r.Index < r.Trace.Len() {
		return r.Trace.Step(r.Index).Regs
	}
	return r.Trace.Final
}

// Reg returns the register as the step recorded it.
func (r *Replay) Reg(reg x86.Reg) (uint64, error) {
	st := r.state()
	if st == nil {
		return 0, fmt.Errorf("$%s: %w (no state recorded at step %d)", reg, ErrUnknown, r.Index)
	}
	v, ok := st.Get(reg)
	if !ok {
		return 0, fmt.Errorf("$%s: %w (the recording did not read it)", reg, ErrUnknown)
	}
	return v, nil
}

// Symbol looks the name up.
func (r *Replay) Symbol(name string) (uint64, error) { return LookupSymbol(r.Symbols, name) }

// Read returns memory the recording kept at this point.
func (r *Replay) Read(addr uint64, size int) ([]byte, error) {
	var pieces []annotate.Memory
	if r.Index < r.Trace.Len() {
		s := r.Trace.Step(r.Index)
		for _, m := range s.Mem {
			if !m.After {
				pieces = append(pieces, m)
			}
		}
		if len(s.Stack) > 0 && s.Regs != nil && s.Regs.Has(x86.RSP) {
			b := make([]byte, 8*len(s.Stack))
			for i, w := range s.Stack {
				for j := range 8 {
					b[8*i+j] = byte(uint64(w) >> (8 * j))
				}
			}
			pieces = append(pieces, annotate.Memory{Addr: s.Regs.Val(x86.RSP), Data: b})
		}
	}
	for _, w := range trace.UserWritesBefore(r.Trace.UserWrites, r.Index) {
		if w.Addr != 0 && !w.Physical {
			b := make([]byte, w.Size)
			for j := range b {
				b[j] = byte(uint64(w.New) >> (8 * j))
			}
			pieces = append(pieces, annotate.Memory{Addr: uint64(w.Addr), Data: b})
		}
	}
	if r.Index > 0 && r.Index-1 < r.Trace.Len() {
		for _, m := range r.Trace.Step(r.Index - 1).Mem {
			if m.After {
				pieces = append(pieces, m)
			}
		}
	}
	for _, m := range pieces {
		if addr >= m.Addr && addr-m.Addr+uint64(size) <= uint64(len(m.Data)) {
			off := addr - m.Addr
			return m.Data[off : off+uint64(size)], nil
		}
	}
	return nil, fmt.Errorf("%#x: %w (the recording did not read this memory here)", addr, ErrUnknown)
}

// FrameTop is the pt_regs frame top of the trace's kernel stack region.
func (r *Replay) FrameTop() (uint64, error) { return FrameTop(r.Trace.Header.Regions) }

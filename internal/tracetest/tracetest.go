// Package tracetest makes long traces for benchmarks and tests out of
// short recorded ones.
package tracetest

import (
	"fmt"
	"strings"

	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// Repeat returns a trace of n steps made by repeating the steps of src,
// with src's header, probes and final state. So that it compresses no
// better than a long recording, each repetition differs from the last:
// RAX holds the step's number and RDI the repetition's, the first stack
// words change, the code moves to one of 512 other pages with its own
// symbol names, and the first effect of each step names its repetition,
// so that no two steps share that text.
func Repeat(src *trace.Trace, n int) *trace.Trace {
	t := trace.New()
	t.Header, t.Probes, t.UserWrites, t.Final = src.Header, src.Probes, src.UserWrites, src.Final
	m := src.Len()
	for i := range n {
		r, s := i/m, *src.Step(i % m)
		shift := uint64(r%512) << 12
		regs := *s.Regs
		regs.Set(x86.RAX, uint64(i))
		regs.Set(x86.RDI, uint64(r))
		regs.R[x86.RIP] += shift
		s.Regs = &regs
		s.RIP += trace.Hex(shift)
		if name, off, ok := strings.Cut(s.Symbol, "+"); ok {
			s.Symbol = fmt.Sprintf("%s_%d+%s", name, r%512, off)
		} else if s.Symbol != "" {
			s.Symbol = fmt.Sprintf("%s_%d", s.Symbol, r%512)
		}
		if len(s.Stack) > 2 {
			s.Stack = append([]trace.Hex{trace.Hex(r), trace.Hex(i)}, s.Stack[2:]...)
		}
		if len(s.Effects) > 0 {
			s.Effects = append(s.Effects[:0:0], s.Effects...)
			s.Effects[0].Text += fmt.Sprintf(" (pass %d)", r)
		}
		t.Append(s)
	}
	return t
}

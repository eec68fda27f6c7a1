package command

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/expr"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// examine is x/NFU: memory as numbers, or instructions.
func (e *Engine) examine(ctx context.Context, c Command) error {
	env, err := e.env(ctx, c.Fmt.Physical)
	if err != nil {
		return err
	}
	addr, err := expr.Eval(c.Expr, env)
	if err != nil {
		return err
	}
	if c.Fmt.Letter == 'i' {
		return e.disasm(env, addr, c.Count, c.Fmt.Physical)
	}
	size := c.Fmt.Size
	b, err := env.Read(addr, c.Count*size)
	if err != nil {
		return err
	}
	perLine := 16 / size
	if size == 8 {
		perLine = 2
	}
	for i := 0; i < c.Count; i++ {
		a := addr + uint64(i*size)
		if i%perLine == 0 {
			if i > 0 {
				e.printf("\n")
			}
			e.printf("%s:", e.where(a, c.Fmt.Physical))
		}
		var v uint64
		for j := size - 1; j >= 0; j-- {
			v = v<<8 | uint64(b[i*size+j])
		}
		switch c.Fmt.Letter {
		case 'd':
			shift := 64 - 8*uint(size)
			e.printf("\t%d", int64(v<<shift)>>shift)
		case 'u':
			e.printf("\t%d", v)
		default:
			e.printf("\t0x%0*x", 2*size, v)
		}
	}
	e.printf("\n")
	return nil
}

// where names an address for x's output: "0x… <sym+off>", or "phys 0x…".
func (e *Engine) where(a uint64, physical bool) string {
	if physical {
		return fmt.Sprintf("phys %#x", a)
	}
	return e.name(a)
}

// disasm prints n instructions at addr, marking the one at RIP.
func (e *Engine) disasm(env *expr.Live, addr uint64, n int, physical bool) error {
	want := n * 15
	b, err := env.Read(addr, want)
	if err != nil {
		// The last instructions may end before an unmapped page: read
		// to the end of this one.
		if rest := int(4096 - addr%4096); rest < want {
			b, err = env.Read(addr, rest)
		}
		if err != nil {
			return err
		}
	}
	rip := env.State.Val(x86.RIP)
	for i, off := 0, 0; i < n && off < len(b); i++ {
		pc := addr + uint64(off)
		mark := "  "
		if pc == rip && !physical {
			mark = "=>"
		}
		inst, size, err := annotate.Decode(b[off:])
		if err != nil {
			e.printf("%s %s:\t(bad: % x)\n", mark, e.where(pc, physical), b[off:min(off+8, len(b))])
			return nil
		}
		code := b[off : off+size]
		e.printf("%s %s:\t%s\n", mark, e.where(pc, physical), trace.Disasm(inst, code, pc, annotate.OperandSymbols(inst, e.syms()), e.Syntax))
		off += size
	}
	return nil
}

// showInsn prints the instruction at the current stop.
func (e *Engine) showInsn(ctx context.Context, st *x86.State) error {
	env := &expr.Live{Ctx: ctx, T: e.S.Target, State: st, Symbols: e.syms(), Regions: e.S.Regions}
	return e.disasm(env, st.Val(x86.RIP), 1, false)
}

// print evaluates an expression.
func (e *Engine) print(ctx context.Context, c Command) error {
	v, _, err := e.eval(ctx, c.Expr)
	if err != nil {
		return err
	}
	e.printf("%s = %#x (%d)", c.Expr, v, int64(v))
	if s := e.syms().Symbolize(v); s != "" {
		e.printf(" <%s>", s)
	}
	e.printf("\n")
	return nil
}

// info shows registers, MSRs, breakpoints, regions or symbols.
func (e *Engine) info(ctx context.Context, c Command) error {
	switch c.Topic {
	case "registers":
		return e.infoRegisters(ctx, c.Arg)
	case "msrs":
		return e.infoMSRs(ctx)
	case "breakpoints":
		if len(e.bps) == 0 {
			e.printf("No breakpoints.\n")
			return nil
		}
		e.printf("%-4s %-18s %-6s %s\n", "Num", "Address", "Hits", "What")
		for _, b := range e.bps {
			e.printf("%-4d 0x%016x %-6d hardware breakpoint at %s\n", b.ID, b.Addr, b.Hits, b.Spec)
		}
	case "regions":
		if len(e.S.Regions) == 0 {
			e.printf("No regions known (no symbols name the stacks, and the guest is not recognised as Linux).\n")
			return nil
		}
		rs := slices.Clone(e.S.Regions)
		slices.SortFunc(rs, func(a, b annotate.Region) int { return compareU64(a.Start, b.Start) })
		for _, r := range rs {
			e.printf("0x%016x-0x%016x %-13s %s", r.Start, r.End, r.Kind, r.Name)
			if r.FrameTop != 0 {
				e.printf(" (pt_regs frame below %#x)", r.FrameTop)
			}
			e.printf("\n")
		}
	case "symbols":
		return e.infoSymbols(c.Arg)
	}
	return nil
}

func compareU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (e *Engine) infoRegisters(ctx context.Context, names string) error {
	st, err := e.state(ctx)
	if err != nil {
		return err
	}
	var regs []x86.Reg
	for _, n := range strings.Fields(names) {
		r, _ := expr.ParseReg(strings.TrimPrefix(n, "$"))
		regs = append(regs, r)
	}
	if len(regs) == 0 {
		for r := x86.Reg(0); r < x86.NumRegs; r++ {
			regs = append(regs, r)
		}
	}
	for _, r := range regs {
		v, ok := st.Get(r)
		if !ok {
			e.printf("%-10s %s\n", r, "<unavailable: the stub does not give it>")
			continue
		}
		var extra string
		switch {
		case r == x86.RIP:
			if s := e.syms().Symbolize(v); s != "" {
				extra = "<" + s + ">"
			}
		case r == x86.RFLAGS:
			extra = "[ " + x86.Flags(v).String() + " ]"
		case r == x86.CS:
			extra = fmt.Sprintf("CPL %d", st.CPL())
		case r < x86.RIP:
			extra = fmt.Sprintf("%d", int64(v))
		}
		e.printf("%s\n", strings.TrimRight(fmt.Sprintf("%-10s %-20s %s", r, fmt.Sprintf("%#x", v), extra), " "))
	}
	return nil
}

func (e *Engine) infoMSRs(ctx context.Context) error {
	known := e.S.Recorder.Ctx.Knowledge.Sorted()
	if len(known) == 0 {
		// Nothing learnt yet: what the stub gives as registers.
		st, err := e.state(ctx)
		if err != nil {
			return err
		}
		for _, r := range []x86.Reg{x86.EFER, x86.FSBase, x86.GSBase, x86.KernelGSBase} {
			if v, ok := st.Get(r); ok {
				e.printf("%-22s %#x (read from the stub)\n", strings.ToUpper(r.String()), v)
			}
		}
	}
	lstar := false
	for _, m := range known {
		e.printf("%-22s %s (%s)\n", m.Name, m.ValueString(), m.Provenance())
		lstar = lstar || m.Name == "IA32_LSTAR"
	}
	if !lstar {
		e.printf("STAR, LSTAR, FMASK and SYSENTER_* are not given by the stub: they are learnt from the\n" +
			"transitions a recording sees (stepi or trace through an entry), or read with rdmsr by\n" +
			"sctrace trace --probe-msrs.\n")
	}
	return nil
}

// maxSymbols bounds info symbols' list.
const maxSymbols = 50

func (e *Engine) infoSymbols(pattern string) error {
	glob := strings.ContainsAny(pattern, "*?[")
	if glob {
		if _, err := path.Match(pattern, ""); err != nil {
			return fmt.Errorf("bad pattern %q: %w", pattern, err)
		}
	}
	lower := strings.ToLower(pattern)
	n := 0
	for _, s := range e.syms().Symbols() {
		var ok bool
		if glob {
			ok, _ = path.Match(pattern, s.Name)
		} else {
			ok = strings.Contains(strings.ToLower(s.Name), lower)
		}
		if !ok {
			continue
		}
		n++
		if n > maxSymbols {
			continue
		}
		size := ""
		if s.Size != 0 {
			size = fmt.Sprintf(" (%d bytes)", s.Size)
		}
		e.printf("0x%016x %c %s%s\n", s.Addr, s.Type, s.Name, size)
	}
	switch {
	case n == 0 && e.syms().Len() == 0:
		e.printf("No symbols are loaded (give --symbols).\n")
	case n == 0:
		e.printf("No symbol matches %q.\n", pattern)
		if sim := expr.Similar(e.syms(), pattern, 3); len(sim) > 0 {
			e.printf("Close: %s\n", strings.Join(sim, ", "))
		}
	case n > maxSymbols:
		e.printf("... and %d more (narrow the pattern)\n", n-maxSymbols)
	}
	return nil
}

package trace

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/internal/termtext"
	"github.com/sctrace/sctrace/x86"
)

// Syntax selects the assembly syntax of printed instructions.
type Syntax int

// The two syntaxes.
const (
	Intel Syntax = iota
	ATT
)

// Asm returns the step's disassembly in the chosen syntax.
func (s *Step) Asm(syn Syntax) string {
	if syn == ATT {
		return s.ATT
	}
	return s.Intel
}

// Where returns "sym+off" for the step, or its address when no symbol names
// it.
func (s *Step) Where() string {
	if s.Symbol != "" {
		return s.Symbol
	}
	return fmt.Sprintf("%#x", uint64(s.RIP))
}

// Summary is what a trace adds up to.
type Summary struct {
	Instructions int
	Kernel       int      // instructions executed at CPL 0
	CR3Writes    int      // MOV to CR3
	SwapGS       int      // swapgs executed
	Stacks       []string // stack regions RSP was on, in the order visited
	MSRs         []annotate.MSR
	Findings     []string // "step N: text"
	Stop         string
}

// Summarize adds a trace up.
func Summarize(t *Trace) Summary {
	sum := Summary{Instructions: t.Len(), MSRs: t.Header.MSRs, Stop: t.Header.Stop}
	ctx := &annotate.Context{Regions: t.Header.Regions}
	lastStack := ""
	visit := func(st *x86.State) {
		if st == nil {
			return
		}
		r, ok := ctx.StackOf(st.Val(x86.RSP))
		if !ok {
			// RSP briefly holds something that is not a stack pointer
			// (entry code uses it as a scratch register): not a stack.
			return
		}
		if name := r.Name; name != lastStack {
			sum.Stacks = append(sum.Stacks, r.Name)
			lastStack = r.Name
		}
	}
	for _, e := range ProbeEffects(t.Probes, 0) {
		if e.Verdict == annotate.Finding {
			sum.Findings = append(sum.Findings, "before step 0: "+e.Text)
		}
	}
	for i, s := range t.All() {
		if s.CPL == 0 {
			sum.Kernel++
		}
		visit(s.Regs)
		for _, e := range s.Events {
			switch e {
			case annotate.EventCR3Write:
				sum.CR3Writes++
			case annotate.EventSwapgs:
				sum.SwapGS++
			}
		}
		for _, e := range slices.Concat(s.Effects, ProbeEffects(t.Probes, i+1)) {
			if e.Verdict == annotate.Finding {
				sum.Findings = append(sum.Findings, fmt.Sprintf("step %d (%s): %s", s.Index, s.Where(), e.Text))
			}
		}
	}
	visit(t.Final)
	return sum
}

// WriteText prints a trace one instruction a line, with its effects below
// it, readable at 100 columns, and a summary at the end.
func WriteText(w io.Writer, t *Trace, syn Syntax) error {
	p := &printer{w: w}
	h := t.Header
	p.f("sctrace trace: %s", h.Target)
	if h.Kernel != "" {
		p.f(", %s", h.Kernel)
	}
	if h.Mechanism != "" {
		p.f(", mechanism %s", h.Mechanism)
	}
	p.f("\n")
	if h.Accel != "" {
		p.f("accelerator: %s\n", h.Accel)
	}
	if h.CPUModel != "" {
		p.f("cpu model: %s\n", h.CPUModel)
	}
	if h.Symbols != "" {
		p.f("symbols: %s\n", h.Symbols)
	}
	if h.Syscall != nil {
		p.f("system call: %s\n  (names from %s)\n", h.Syscall, h.Syscall.Table)
	}
	for _, l := range h.CPULines() {
		p.f("%s\n", l)
	}
	p.f("stepping: %s\n", h.Stepping)
	for _, l := range h.RecorderLines() {
		p.f("recorder: %s\n", l)
	}
	p.f("\n")
	byHand := func(i int) {
		for _, w := range UserWritesBefore(t.UserWrites, i) {
			p.f("    !! %-10s %s\n", "by hand", w)
		}
	}
	for i, s := range t.All() {
		// A probe's effects follow those of the step it ran after.
		p.effects(ProbeEffects(t.Probes, i))
		byHand(i)
		if g, ok := t.GapAt(i); ok {
			p.gap(g)
		}
		p.step(s, syn)
	}
	p.effects(ProbeEffects(t.Probes, t.Len()))
	byHand(t.Len())
	if g, ok := t.GapAt(t.Len()); ok {
		p.gap(g)
	}
	sum := Summarize(t)
	p.f("\nSummary\n")
	p.f("  instructions: %d (%d in the kernel)\n", sum.Instructions, sum.Kernel)
	p.f("  stopped: %s\n", sum.Stop)
	p.f("  swapgs: %d, CR3 writes: %d\n", sum.SwapGS, sum.CR3Writes)
	p.f("  stacks: %s\n", strings.Join(sum.Stacks, " -> "))
	if len(sum.MSRs) == 0 {
		p.f("  MSRs learnt: none\n")
	} else {
		p.f("  MSRs learnt:\n")
		width := 0
		for _, m := range sum.MSRs {
			width = max(width, len(m.Name))
		}
		for _, m := range sum.MSRs {
			p.f("    %-*s %s\n", width, m.Name, m.ValueString()+" ("+m.Provenance()+")")
		}
	}
	if len(sum.Findings) == 0 {
		p.f("  findings: none (every checked instruction did what the architecture says)\n")
	} else {
		p.f("  findings: %d\n", len(sum.Findings))
		for _, f := range sum.Findings {
			p.f("    %s\n", f)
		}
	}
	if n := len(t.UserWrites); n > 0 {
		p.f("  changed by hand while stopped: %d (marked \"by hand\": the guest did not do it)\n", n)
	}
	if h.IRQs > 0 {
		p.f("  interrupts taken while stepping, run to their return and left out: %d\n", h.IRQs)
	}
	if h.SpuriousStops > 0 {
		p.f("  single-step stops with nothing executed, stepped again: %d\n", h.SpuriousStops)
	}
	if h.StepRate > 0 {
		p.f("  recorded in %.2fs (%.0f instructions/s)\n", h.Seconds, h.StepRate)
	}
	return p.err
}

// WriteStepText prints one step as WriteText does: the instruction on a
// line, its effects below it. A live listing prints each step as it is
// recorded.
func WriteStepText(w io.Writer, s *Step, syn Syntax) error {
	p := &printer{w: w}
	p.step(s, syn)
	return p.err
}

// WriteGapText prints a gap as WriteText does, on a line between steps.
func WriteGapText(w io.Writer, g *Gap) error {
	p := &printer{w: w}
	p.gap(g)
	return p.err
}

func (p *printer) step(s *Step, syn Syntax) {
	ring := "U"
	if s.CPL == 0 {
		ring = "K"
	}
	p.f("%5d %s %-34s %s\n", s.Index, ring, FitWhere(s.Where(), 34), s.Asm(syn))
	p.effects(s.Effects)
}

func (p *printer) gap(g *Gap) {
	for j, line := range termtext.Wrap("not recorded: "+g.What, 100-10) {
		if j == 0 {
			p.f("  ~~~~~ %s\n", line)
		} else {
			p.f("        %s\n", line)
		}
	}
}

func (p *printer) effects(effs []annotate.Effect) {
	for _, e := range effs {
		mark := "   "
		switch e.Verdict {
		case annotate.OK:
			mark = " ok"
		case annotate.Finding:
			mark = " !!"
		}
		for j, line := range termtext.Wrap(e.Text, 100-19) {
			if j == 0 {
				p.f("    %s %-10s %s\n", mark, e.Kind, line)
			} else {
				p.f("%18s%s\n", "", line)
			}
		}
	}
}

// WriteMarkdown prints a trace as a Markdown table of instructions and
// effects, with the summary, for notes and course pages.
func WriteMarkdown(w io.Writer, t *Trace, syn Syntax) error {
	p := &printer{w: w}
	h := t.Header
	p.f("# sctrace: %s round trip\n\n", cmp.Or(h.Mechanism, "system call"))
	p.f("- target: %s\n", h.Target)
	if h.Kernel != "" {
		p.f("- kernel: %s\n", h.Kernel)
	}
	if h.Symbols != "" {
		p.f("- symbols: %s\n", h.Symbols)
	}
	if h.Syscall != nil {
		p.f("- system call: `%s` (names from %s)\n", h.Syscall, h.Syscall.Table)
	}
	for _, l := range h.CPULines() {
		p.f("- %s\n", mdEscape(l))
	}
	p.f("- stepping: %s\n", h.Stepping)
	for _, l := range h.RecorderLines() {
		p.f("- recorder: %s\n", mdEscape(l))
	}
	p.f("\n")
	if effs := ProbeEffects(t.Probes, 0); len(effs) > 0 {
		p.f("MSRs probed before the first step:\n\n")
		for _, e := range effs {
			p.f("- %s\n", mdEscape(e.Text))
		}
		p.f("\n")
	}
	if ws := UserWritesBefore(t.UserWrites, 0); len(ws) > 0 {
		p.f("Changed by hand before the first step:\n\n")
		for _, w := range ws {
			p.f("- %s\n", mdEscape(w.String()))
		}
		p.f("\n")
	}
	p.f("| # | CPL | where | instruction | effects |\n|---:|:---:|---|---|---|\n")
	for i, s := range t.All() {
		var effs []string
		for _, e := range slices.Concat(s.Effects, ProbeEffects(t.Probes, i+1)) {
			txt := mdEscape(e.Text)
			if e.Verdict == annotate.Finding {
				txt = "**finding:** " + txt
			}
			effs = append(effs, txt)
		}
		for _, w := range UserWritesBefore(t.UserWrites, i+1) {
			effs = append(effs, "**by hand:** "+mdEscape(w.String()))
		}
		p.f("| %d | %d | `%s` | `%s` | %s |\n", s.Index, s.CPL, s.Where(), s.Asm(syn), strings.Join(effs, "<br>"))
	}
	sum := Summarize(t)
	p.f("\n## Summary\n\n- instructions: %d (%d in the kernel)\n- swapgs: %d, CR3 writes: %d\n- stacks: %s\n",
		sum.Instructions, sum.Kernel, sum.SwapGS, sum.CR3Writes, strings.Join(sum.Stacks, " → "))
	for _, m := range sum.MSRs {
		p.f("- %s: %s\n", m.Name, mdEscape(m.ValueString()+" ("+m.Provenance()+")"))
	}
	p.f("- findings: %d\n", len(sum.Findings))
	for _, f := range sum.Findings {
		p.f("  - %s\n", mdEscape(f))
	}
	return p.err
}

type printer struct {
	w   io.Writer
	err error
}

func (p *printer) f(format string, args ...any) {
	if p.err != nil {
		return
	}
	_, p.err = fmt.Fprintf(p.w, format, args...)
}

// mdEscape escapes text for Markdown outside code spans: "|" would end a
// table cell, and "<" and ">" would open raw HTML, hiding the
// "<entry_SYSCALL_64>" an effect names its addresses with.
func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;").Replace(s)
}

package diff

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/sctrace/sctrace/internal/termtext"
	"github.com/sctrace/sctrace/trace"
)

// Options control how a Result is printed.
type Options struct {
	// NameA and NameB name the two traces (their files).
	NameA, NameB string
	// Syntax is the syntax of the instructions listed (the zero value
	// is trace.Intel). The details of events quote AT&T syntax.
	Syntax trace.Syntax
	// Expand lists every step of an inserted or removed run instead of
	// one line with its count and first instruction.
	Expand bool
}

// Width is the most columns a line of WriteText takes.
const Width = 100

// Run is a stretch of the alignment: N pairs of the same kind whose steps
// follow each other in both traces. A or B is -1 for a run of Added or
// Removed steps.
type Run struct {
	Op   Op
	A, B int
	N    int
}

// Runs returns the alignment as runs.
func (r *Result) Runs() []Run {
	var out []Run
	for _, p := range r.Pairs {
		if l := len(out); l > 0 {
			last := &out[l-1]
			if last.Op == p.Op && (p.A < 0 || p.A == last.A+last.N) && (p.B < 0 || p.B == last.B+last.N) {
				last.N++
				continue
			}
		}
		out = append(out, Run{Op: p.Op, A: p.A, B: p.B, N: 1})
	}
	return out
}

// KernelName shortens a trace header's kernel description to its first
// words: "Linux version 6.12.118+deb12-cloud-amd64" without the compiler
// and build date that follow.
func KernelName(t *trace.Trace) string {
	k := t.Header.Kernel
	if i := strings.Index(k, " ("); i > 0 {
		k = k[:i]
	}
	return k
}

// describe says what trace t is: its kernel, mechanism and length.
func describe(t *trace.Trace) string {
	parts := []string{cmp.Or(KernelName(t), "unknown kernel")}
	if m := t.Header.Mechanism; m != "" {
		parts = append(parts, m)
	}
	parts = append(parts, fmt.Sprintf("%d instructions", t.Len()))
	return strings.Join(parts, ", ")
}

// MatchedBy says in words how steps were matched.
func (r *Result) MatchedBy() string {
	switch {
	case r.BySymbol && r.SameBuild:
		return "the same kernel build: steps matched by place (function and offset) and instruction (operation and operands); addresses and register values are ignored"
	case r.BySymbol:
		return "steps matched by function and instruction (operation and operands), not by offset, since the kernel builds differ; addresses and register values are ignored"
	}
	return "steps matched by instruction alone (operation and operands), for want of symbols; addresses and register values are ignored"
}

// fit shortens s to n columns, ending it with "…" when cut.
func fit(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	if n < 1 {
		return ""
	}
	return string(r[:n-1]) + "…"
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

// line prints one line cut to Width columns.
func (p *printer) line(format string, args ...any) {
	p.f("%s\n", fit(fmt.Sprintf(format, args...), Width))
}

func fnName(name string) string { return cmp.Or(name, "(no symbol)") }

// WriteText prints the result: a summary, then the aligned steps, in
// lines of at most Width columns.
func WriteText(w io.Writer, r *Result, o Options) error {
	p := &printer{w: w}
	p.line("sctrace diff")
	for _, side := range []struct {
		label, name string
		t           *trace.Trace
	}{{"A", o.NameA, r.A}, {"B", o.NameB, r.B}} {
		p.line("  %s  %s", side.label, cmp.Or(side.name, "(unnamed)"))
		p.line("     %s", describe(side.t))
	}
	for _, l := range termtext.Wrap(r.MatchedBy(), Width-2) {
		p.line("  %s", l)
	}
	for _, n := range r.Notes {
		for i, l := range termtext.Wrap(n, Width-4) {
			if i == 0 {
				p.line("  %s", l)
			} else {
				p.line("    %s", l)
			}
		}
	}
	t := r.Total
	p.f("\nSummary\n")
	p.line("  instructions: A %d, B %d: %d equal, %d changed (~), %d only in A (-), %d only in B (+)",
		r.A.Len(), r.B.Len(), t.Equal, t.Changed, t.Removed, t.Added)
	if t.Same() {
		p.line("  the two paths are the same instruction for instruction")
	}
	p.line("  per function (* where they differ):")
	p.line("    %-44s %6s %6s %6s %6s %6s %6s", "function", "A", "B", "=", "~", "-", "+")
	for _, f := range r.Functions {
		mark := " "
		if !f.Same() {
			mark = "*"
		}
		p.line("  %s %-44s %6d %6d %6d %6d %6d %6d", mark, trace.FitWhere(fnName(f.Name), 44),
			f.InA(), f.InB(), f.Equal, f.Changed, f.Removed, f.Added)
	}
	var counts []string
	for _, c := range r.EventCounts {
		counts = append(counts, fmt.Sprintf("%s %d/%d", c.Event, c.A, c.B))
	}
	for i, l := range termtext.Wrap("steps with each event, A/B: "+strings.Join(counts, ", "), Width-4) {
		p.line("%s%s", strings.Repeat(" ", 2+2*min(i, 1)), l)
	}
	if len(r.Events) == 0 {
		p.line("  events in one trace only: none")
	} else {
		p.line("  events in one trace only:")
		for _, e := range r.Events {
			head := fmt.Sprintf("    %s %-12s step %-6d %-30s ", strings.ToUpper(string(e.Side)), e.Event, e.Step,
				trace.FitWhere(e.Where, 30))
			room := Width - len([]rune(head))
			lines := termtext.Wrap(e.Detail, room)
			p.line("%s%s", head, lines[0])
			for _, l := range termtext.Wrap(strings.Join(lines[1:], " "), Width-8) {
				if l != "" {
					p.line("        %s", l)
				}
			}
		}
	}
	p.f("\nAlignment (= same, ~ same place but another instruction, - only in A, + only in B)\n")
	p.line("        A       B  %-34s %s", "where", "instruction")
	for _, run := range r.Runs() {
		writeRun(p, r, run, o)
	}
	return p.err
}

// writeRun prints a run of the alignment: each pair of an Equal or Changed
// run, and an Added or Removed run as one line unless o.Expand.
func writeRun(p *printer, r *Result, run Run, o Options) {
	idx := func(i int) string {
		if i < 0 {
			return ""
		}
		return fmt.Sprint(i)
	}
	step := func(pa, pb int) (*trace.Step, *trace.Step) {
		var sa, sb *trace.Step
		if pa >= 0 {
			sa = r.A.Step(pa)
		}
		if pb >= 0 {
			sb = r.B.Step(pb)
		}
		return sa, sb
	}
	at := func(k int) (int, int) {
		a, b := run.A, run.B
		if a >= 0 {
			a += k
		}
		if b >= 0 {
			b += k
		}
		return a, b
	}
	if (run.Op == Removed || run.Op == Added) && !o.Expand && run.N > 1 {
		a, b := at(0)
		sa, sb := step(a, b)
		s := cmp.Or(sa, sb)
		rng := func(i int) string {
			if i < 0 {
				return ""
			}
			return fmt.Sprintf("%d-%d", i, i+run.N-1)
		}
		p.line("%s %7s %7s  %-34s %d instructions, from %s", run.Op, rng(a), rng(b),
			trace.FitWhere(s.Where(), 34), run.N, s.Asm(o.Syntax))
		return
	}
	for k := range run.N {
		a, b := at(k)
		sa, sb := step(a, b)
		s := cmp.Or(sa, sb)
		if run.Op != Changed {
			p.line("%s %7s %7s  %-34s %s", run.Op, idx(a), idx(b), trace.FitWhere(s.Where(), 34), s.Asm(o.Syntax))
			continue
		}
		p.line("%s %7s %7s  %-34s A: %s", run.Op, idx(a), idx(b), trace.FitWhere(sa.Where(), 34), sa.Asm(o.Syntax))
		p.line("  %7s %7s  %-34s B: %s", "", "", trace.FitWhere(sb.Where(), 34), sb.Asm(o.Syntax))
	}
}

// WriteMarkdown prints the result as Markdown: the summary as lists and
// tables, then the alignment as a table.
func WriteMarkdown(w io.Writer, r *Result, o Options) error {
	p := &printer{w: w}
	p.f("# sctrace diff\n\n")
	p.f("| | trace | kernel | mechanism | instructions |\n|---|---|---|---|---:|\n")
	for _, s := range []struct {
		side string
		name string
		t    *trace.Trace
	}{{"A", o.NameA, r.A}, {"B", o.NameB, r.B}} {
		p.f("| %s | %s | %s | %s | %d |\n", s.side, md(s.name), md(KernelName(s.t)), md(s.t.Header.Mechanism), s.t.Len())
	}
	by := r.MatchedBy()
	p.f("\n%s%s.\n", strings.ToUpper(by[:1]), md(by[1:]))
	for _, n := range r.Notes {
		p.f("\n> %s\n", md(n))
	}
	t := r.Total
	p.f("\n## Summary\n\n- instructions: A %d, B %d: %d equal, %d changed (~), %d only in A (−), %d only in B (+)\n",
		r.A.Len(), r.B.Len(), t.Equal, t.Changed, t.Removed, t.Added)
	var counts []string
	for _, c := range r.EventCounts {
		counts = append(counts, fmt.Sprintf("%s %d/%d", c.Event, c.A, c.B))
	}
	p.f("- steps with each event, A/B: %s\n\n", strings.Join(counts, ", "))
	p.f("| function | A | B | = | ~ | − | + |\n|---|---:|---:|---:|---:|---:|---:|\n")
	for _, f := range r.Functions {
		name := "`" + mdCode(fnName(f.Name)) + "`"
		if !f.Same() {
			name = "**" + name + "**"
		}
		p.f("| %s | %d | %d | %d | %d | %d | %d |\n", name, f.InA(), f.InB(), f.Equal, f.Changed, f.Removed, f.Added)
	}
	p.f("\n### Events in one trace only\n\n")
	if len(r.Events) == 0 {
		p.f("None.\n")
	} else {
		p.f("| trace | event | step | where | detail |\n|---|---|---:|---|---|\n")
		for _, e := range r.Events {
			p.f("| %s | %s | %d | `%s` | %s |\n", strings.ToUpper(string(e.Side)), e.Event, e.Step, mdCode(e.Where), md(e.Detail))
		}
	}
	p.f("\n## Alignment\n\n| | A | B | where | instruction |\n|:-:|---:|---:|---|---|\n")
	for _, run := range r.Runs() {
		if (run.Op == Removed || run.Op == Added) && !o.Expand && run.N > 1 {
			s, a, b := r.A, run.A, run.B
			if run.Op == Added {
				s = r.B
			}
			first := s.Step(max(a, b))
			rng := func(i int) string {
				if i < 0 {
					return ""
				}
				return fmt.Sprintf("%d–%d", i, i+run.N-1)
			}
			p.f("| %s | %s | %s | `%s` | %d instructions, from `%s` |\n", mdOp(run.Op), rng(a), rng(b),
				mdCode(first.Where()), run.N, mdCode(first.Asm(o.Syntax)))
			continue
		}
		for k := range run.N {
			a, b := run.A, run.B
			if a >= 0 {
				a += k
			}
			if b >= 0 {
				b += k
			}
			cell := func(i int) string {
				if i < 0 {
					return ""
				}
				return fmt.Sprint(i)
			}
			var where, insn string
			switch {
			case run.Op == Changed:
				sa, sb := r.A.Step(a), r.B.Step(b)
				where = "`" + mdCode(sa.Where()) + "`"
				if sb.Where() != sa.Where() {
					where += " / `" + mdCode(sb.Where()) + "`"
				}
				insn = "`" + mdCode(sa.Asm(o.Syntax)) + "` → `" + mdCode(sb.Asm(o.Syntax)) + "`"
			case a >= 0:
				where, insn = "`"+mdCode(r.A.Step(a).Where())+"`", "`"+mdCode(r.A.Step(a).Asm(o.Syntax))+"`"
			default:
				where, insn = "`"+mdCode(r.B.Step(b).Where())+"`", "`"+mdCode(r.B.Step(b).Asm(o.Syntax))+"`"
			}
			p.f("| %s | %s | %s | %s | %s |\n", mdOp(run.Op), cell(a), cell(b), where, insn)
		}
	}
	return p.err
}

// mdOp is an Op for a Markdown table: a lone "-" or "+" would start a list
// in some renderers, and "~" strike-through.
func mdOp(op Op) string {
	switch op {
	case Removed:
		return "−"
	case Changed:
		return `\~`
	}
	return op.String()
}

// md escapes text for Markdown outside code spans.
func md(s string) string {
	return strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;", "*", `\*`, "_", `\_`, "`", "\\`").Replace(s)
}

// mdCode escapes text for a code span in a table cell.
func mdCode(s string) string {
	return strings.NewReplacer("|", `\|`, "`", "'").Replace(s)
}

// JSONFormat is the "format" of the JSON WriteJSON writes, and JSONVersion
// its version.
const (
	JSONFormat  = "sctrace-diff"
	JSONVersion = 1
)

type jsonTrace struct {
	Name         string `json:"name,omitempty"`
	Kernel       string `json:"kernel,omitempty"`
	Mechanism    string `json:"mechanism,omitempty"`
	Instructions int    `json:"instructions"`
}

type jsonCounts struct {
	A       int `json:"a"`
	B       int `json:"b"`
	Equal   int `json:"equal"`
	Changed int `json:"changed"`
	Removed int `json:"removed"`
	Added   int `json:"added"`
}

func countsJSON(c Counts) jsonCounts {
	return jsonCounts{A: c.InA(), B: c.InB(), Equal: c.Equal, Changed: c.Changed, Removed: c.Removed, Added: c.Added}
}

type jsonFunction struct {
	Name string `json:"name"`
	jsonCounts
}

type jsonRun struct {
	Op string `json:"op"`
	A  *int   `json:"a,omitempty"`
	B  *int   `json:"b,omitempty"`
	N  int    `json:"n"`
}

type jsonResult struct {
	Format      string         `json:"format"`
	Version     int            `json:"version"`
	A           jsonTrace      `json:"a"`
	B           jsonTrace      `json:"b"`
	MatchedBy   string         `json:"matched_by"` // "function+instruction" or "instruction"
	Notes       []string       `json:"notes,omitempty"`
	Total       jsonCounts     `json:"total"`
	Functions   []jsonFunction `json:"functions"`
	EventCounts []EventCount   `json:"event_counts"`
	Events      []Event        `json:"events"`
	// Alignment is the runs of the alignment: op "=", "~", "-" or "+",
	// the index of the run's first step in A and in B (absent for the
	// trace it has no step of), and how many pairs it holds.
	Alignment []jsonRun `json:"alignment"`
}

// WriteJSON writes the result as JSON: the summary, and the alignment as
// runs of step indices.
func WriteJSON(w io.Writer, r *Result, o Options) error {
	out := jsonResult{
		Format: JSONFormat, Version: JSONVersion,
		A:           jsonTrace{o.NameA, KernelName(r.A), r.A.Header.Mechanism, r.A.Len()},
		B:           jsonTrace{o.NameB, KernelName(r.B), r.B.Header.Mechanism, r.B.Len()},
		MatchedBy:   "function+instruction",
		Notes:       r.Notes,
		Total:       countsJSON(r.Total),
		EventCounts: r.EventCounts,
		Events:      r.Events,
		Functions:   []jsonFunction{},
		Alignment:   []jsonRun{},
	}
	if !r.BySymbol {
		out.MatchedBy = "instruction"
	}
	if out.Events == nil {
		out.Events = []Event{}
	}
	for _, f := range r.Functions {
		out.Functions = append(out.Functions, jsonFunction{f.Name, countsJSON(f.Counts)})
	}
	for _, run := range r.Runs() {
		j := jsonRun{Op: run.Op.String(), N: run.N}
		if run.A >= 0 {
			j.A = &run.A
		}
		if run.B >= 0 {
			j.B = &run.B
		}
		out.Alignment = append(out.Alignment, j)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	return enc.Encode(out)
}

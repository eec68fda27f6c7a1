package walkthrough

import (
	"bytes"
	"cmp"
	"fmt"
	"html"
	"io"
	"slices"
	"strings"

	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/extension"
	gmhtml "github.com/yuin/goldmark/renderer/html"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// excerptMax is the most trace steps shown under one paragraph; the rest
// are summarised in one line.
const excerptMax = 40

// WriteMarkdown writes lesson l with its traces (one per segment, as Record
// returns them) as one Markdown page: each paragraph followed by the steps
// of the trace it covers, with their effects, and its question with the
// answer the state at that step gives.
func WriteMarkdown(w io.Writer, l *Lesson, traces []*trace.Trace, syn trace.Syntax) error {
	segs := l.Segments()
	if len(traces) != len(segs) {
		return fmt.Errorf("export lesson %s: %d round trips, %d traces", l.Name(), len(segs), len(traces))
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Lesson %d: %s\n\n", l.Number, l.Title)
	if l.Intro != "" {
		b.WriteString(l.Intro + "\n\n")
	}
	for k, seg := range segs {
		t := traces[k]
		h := t.Header
		// The stub's address is left out: it was a throwaway port on the
		// machine that recorded the trace, and means nothing to a reader.
		fmt.Fprintf(&b, "> Round trip %d of %d: %s, %s; recorded by sctrace, %d instructions.\n\n",
			k+1, len(segs), cmp.Or(h.Mechanism, "syscall"), cmp.Or(h.Kernel, "unknown kernel"), t.Len())
		bind := Bind(l, seg, t)
		shown := 0 // trace steps already shown
		for j, i := range seg.Steps {
			s := &l.Steps[i]
			fmt.Fprintf(&b, "## %d. %s\n\n", i+1, s.Title)
			pos := bind.Pos[j]
			if pos == Unbound {
				fmt.Fprintf(&b, "*(%s did not occur in this trace)*\n\n%s\n\n", s.Match, s.Text)
				continue
			}
			end := min(pos, t.Len())
			if end > shown {
				excerpt(&b, t, shown, end, syn)
				shown = end
			}
			b.WriteString(s.Text + "\n\n")
			if v := LookValue(s.Look, StateAt(t, pos)); v != "" {
				// The page has no panes: show what the paragraph points at.
				fmt.Fprintf(&b, "*On screen at this step, %s pane:* %s\n\n", s.Look.Pane, v)
			}
			if q := s.Question; q != nil {
				st := StateAt(t, pos)
				ok, why := q.Check(q.Answer, st)
				fmt.Fprintf(&b, "**Question:** %s\n\n", q.Ask)
				if ok {
					fmt.Fprintf(&b, "<details><summary>Answer</summary>\n\n%s: %s\n\n</details>\n\n", q.Answer, why)
				} else {
					fmt.Fprintf(&b, "<details><summary>Answer</summary>\n\n%s\n\n</details>\n\n", why)
				}
			}
		}
		if shown < t.Len() {
			excerpt(&b, t, shown, t.Len(), syn)
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// excerpt writes steps [from, to) of t as a table.
func excerpt(b *bytes.Buffer, t *trace.Trace, from, to int, syn trace.Syntax) {
	b.WriteString("| # | CPL | where | instruction | effects |\n|---:|:---:|---|---|---|\n")
	for i := from; i < to; i++ {
		if to-from > excerptMax && i == from+excerptMax/2 {
			skip := to - from - excerptMax
			fmt.Fprintf(b, "| … | | | *%d steps not shown* | |\n", skip)
			i += skip - 1
			continue
		}
		s := t.Step(i)
		var effs []string
		for _, e := range slices.Concat(s.Effects, trace.ProbeEffects(t.Probes, i+1)) {
			txt := mdCell(e.Text)
			if e.Verdict == annotate.Finding {
				txt = "**finding:** " + txt
			}
			effs = append(effs, txt)
		}
		fmt.Fprintf(b, "| %d | %d | `%s` | `%s` | %s |\n", s.Index, s.CPL, s.Where(), s.Asm(syn), strings.Join(effs, "<br>"))
	}
	b.WriteString("\n")
}

// mdCell escapes text for a Markdown table cell outside a code span: "|"
// would end the cell, and "<" and ">" would open raw HTML, so that
// "<entry_SYSCALL_64>" vanished from the rendered page.
func mdCell(s string) string {
	return strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;").Replace(s)
}

// LookValue returns what look points at in st, as the TUI's pane shows it:
// a register's value ("rcx = 0x400013"), the privilege level, CR3, both GS
// bases, or RSP and the stack it is on. It returns "" for panes whose
// content is the trace itself (code, effects), which the page shows anyway.
func LookValue(look Look, st State) string {
	now := st.Now
	if now == nil {
		return ""
	}
	reg := func(r x86.Reg) string {
		if v, ok := now.Get(r); ok {
			return fmt.Sprintf("`%s` = %#x", r, v)
		}
		return fmt.Sprintf("`%s` unknown", r)
	}
	switch look.Pane {
	case "stack":
		rsp, ok := now.Get(x86.RSP)
		if !ok {
			return reg(x86.RSP)
		}
		c := &annotate.Context{Regions: st.Regions}
		if r, ok := c.StackOf(rsp); ok {
			return fmt.Sprintf("`rsp` = %#x, on the %s", rsp, r.Name)
		}
		return fmt.Sprintf("`rsp` = %#x, on no known stack", rsp)
	case "system":
		switch look.Value {
		case "cpl":
			return fmt.Sprintf("CPL %d", now.CPL())
		case "gs_base", "k_gs_base":
			return reg(x86.GSBase) + ", " + reg(x86.KernelGSBase)
		case "cr3":
			v := reg(x86.CR3)
			if cr3, ok := now.Get(x86.CR3); ok {
				bit := "clear"
				if cr3&(1<<12) != 0 {
					bit = "set"
				}
				v += " (bit 12 " + bit + ")"
			}
			return v
		}
	case "registers":
		if r, ok := x86.ParseReg(look.Value); ok {
			return reg(r)
		}
	}
	if r, ok := x86.ParseReg(look.Value); ok && look.Value != "" {
		return reg(r)
	}
	return ""
}

// WriteHTML writes the same page as WriteMarkdown as a standalone HTML
// document.
func WriteHTML(w io.Writer, l *Lesson, traces []*trace.Trace, syn trace.Syntax) error {
	var md bytes.Buffer
	if err := WriteMarkdown(&md, l, traces, syn); err != nil {
		return err
	}
	var body bytes.Buffer
	// The only raw HTML is the <details> blocks this package writes.
	gm := goldmark.New(goldmark.WithExtensions(extension.Table), goldmark.WithRendererOptions(gmhtml.WithUnsafe()))
	if err := gm.Convert(md.Bytes(), &body); err != nil {
		return fmt.Errorf("export lesson %s: %w", l.Name(), err)
	}
	_, err := fmt.Fprintf(w, `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Lesson %d: %s</title>
<style>
body { font-family: sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.45; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 1rem 0; }
td, th { border: 1px solid #ccc; padding: 0.15rem 0.4rem; vertical-align: top; }
code { font-family: monospace; }
blockquote { color: #555; border-left: 3px solid #ccc; margin-left: 0; padding-left: 1rem; }
</style></head><body>
%s</body></html>
`, l.Number, html.EscapeString(l.Title), body.String())
	return err
}

package command

import (
	"slices"
	"strings"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/x86"
)

// maxCompletions bounds what Complete offers.
const maxCompletions = 50

// Complete returns the ways the last word of a partly typed command line
// can be finished, each as the whole line: command names first, then,
// after a command, info's subjects and help's commands, registers after
// $, pt_regs fields after pt_regs->, and symbols from syms. At most 50,
// sorted.
func Complete(line string, syms *symbols.Table) []string {
	cut := strings.LastIndexAny(line, " \t()*+-")
	head, word := line[:cut+1], line[cut+1:]
	verb := strings.Fields(line + "x")[0]
	if cut < 0 || strings.TrimSpace(head) == "" {
		return prefixed(head, word, Verbs(), " ")
	}
	if i := strings.LastIndex(line, "pt_regs->"); i >= 0 && !strings.ContainsAny(line[i+len("pt_regs->"):], " \t)+-*") {
		return prefixed(line[:i+len("pt_regs->")], line[i+len("pt_regs->"):], annotate.PtRegsFields, "")
	}
	v, err := lookupVerb(verb)
	if err == nil && strings.Count(strings.TrimSpace(head), " ") == 0 {
		switch v.name {
		case "info":
			return prefixed(head, word, infoTopics, " ")
		case "help":
			return prefixed(head, word, Verbs(), "")
		}
	}
	if err == nil && (v.name == "save" || v.name == "delete" || v.name == "stepi") {
		return nil
	}
	if r, ok := strings.CutPrefix(word, "$"); ok {
		var names []string
		for reg := x86.Reg(0); reg < x86.NumRegs; reg++ {
			names = append(names, "$"+reg.String())
		}
		return prefixed(head, "$"+r, names, "")
	}
	if word == "" {
		return nil
	}
	var names []string
	for _, s := range syms.Symbols() {
		if strings.HasPrefix(s.Name, word) && !symbols.IsMarker(s.Name) {
			names = append(names, s.Name)
		}
	}
	return prefixed(head, word, names, "")
}

// prefixed returns head+name+tail for each name that starts with word,
// sorted, without duplicates, at most maxCompletions.
func prefixed(head, word string, names []string, tail string) []string {
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, word) {
			out = append(out, head+n+tail)
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	return out[:min(len(out), maxCompletions)]
}

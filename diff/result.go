package diff

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/sergi/go-diff/diffmatchpatch"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/trace"
)

// Result is the alignment of two traces, A and B, and what it adds up to.
type Result struct {
	A, B *trace.Trace
	// Pairs is the alignment, in execution order: every step of A and
	// every step of B is in exactly one pair.
	Pairs []Pair
	// BySymbol is true when steps were keyed by their function and
	// instruction, false when by the instruction alone (a trace without
	// symbols).
	BySymbol bool
	// SameBuild is true when both traces ran the same kernel build (the
	// same kernel banner): steps are then keyed by their place, function
	// and offset, as well. Across builds the offset is left out, since a
	// function rebuilt with one instruction more moves every instruction
	// after it.
	SameBuild bool
	// Notes say what a reader must know to read the result: no symbols,
	// different mechanisms.
	Notes []string
	// Total counts the pairs of each kind; Functions counts them per
	// function, in the order the functions first appear in the alignment.
	Total     Counts
	Functions []Function
	// EventCounts counts, per kind of event, the steps of A and of B that
	// have it; Events lists the events one trace has where the other has
	// none: on a step of its own, or on a step paired with one without it.
	EventCounts []EventCount
	Events      []Event
}

// Counts counts pairs by kind.
type Counts struct {
	Equal, Changed, Removed, Added int
}

// InA returns the number of A's steps the counts cover.
func (c Counts) InA() int { return c.Equal + c.Changed + c.Removed }

// InB returns the number of B's steps the counts cover.
func (c Counts) InB() int { return c.Equal + c.Changed + c.Added }

// Same says whether every pair counted is Equal.
func (c Counts) Same() bool { return c.Changed+c.Removed+c.Added == 0 }

func (c *Counts) add(op Op) {
	switch op {
	case Equal:
		c.Equal++
	case Changed:
		c.Changed++
	case Removed:
		c.Removed++
	case Added:
		c.Added++
	}
}

// Function is the pairs counted for one function. A Changed pair counts
// for A's function (both steps are in the same one); Removed for A's,
// Added for B's.
type Function struct {
	Name string // "" for steps without a symbol
	Counts
}

// Side names a trace of the two.
type Side string

// The two traces.
const (
	SideA Side = "a"
	SideB Side = "b"
)

// Notable are the kinds of event a diff reports when one trace has them
// and the other has not.
var Notable = []annotate.Event{
	annotate.EventCR3Write,
	annotate.EventSwapgs,
	annotate.EventMitigation,
	annotate.EventStackSwitch,
	annotate.EventFinding,
}

// EventCount is how many steps of each trace have an event.
type EventCount struct {
	Event annotate.Event `json:"event"`
	A     int            `json:"a"`
	B     int            `json:"b"`
}

// Event is an event on a step of one trace that the other trace does not
// have there.
type Event struct {
	Side  Side           `json:"side"`
	Event annotate.Event `json:"event"`
	Step  int            `json:"step"`  // the step's index in its trace
	Where string         `json:"where"` // symbol+offset, or the address
	// Detail says more: the finding's text, which mitigation, the
	// effect that made the event.
	Detail string `json:"detail"`
}

// Compare aligns the steps of a with those of b.
func Compare(a, b *trace.Trace) *Result {
	r := &Result{A: a, B: b, BySymbol: hasSymbols(a) && hasSymbols(b)}
	if !r.BySymbol {
		var which []string
		if !hasSymbols(a) {
			which = append(which, "A")
		}
		if !hasSymbols(b) {
			which = append(which, "B")
		}
		r.Notes = append(r.Notes, fmt.Sprintf("no symbols in %s: steps are matched by the instruction alone (operation and operands), not by function",
			strings.Join(which, " and ")))
	}
	if ma, mb := a.Header.Mechanism, b.Header.Mechanism; ma != mb {
		r.Notes = append(r.Notes, fmt.Sprintf("warning: A traces %s, B traces %s: their paths differ by design",
			cmp.Or(ma, "an unnamed mechanism"), cmp.Or(mb, "an unnamed mechanism")))
	}
	r.SameBuild = sameBuild(a, b)
	k, in := newKeyer(r.BySymbol, r.SameBuild), interner{}
	sa, sb := prepare(a, k, in), prepare(b, k, in)
	dmp := diffmatchpatch.New()
	dmp.DiffTimeout = 0 // a shortest script, every time
	al := &aligner{a: sa, b: sb, places: k.places, dmp: dmp, pairs: make([]Pair, 0, max(a.Len(), b.Len()))}
	al.align(sa.top, sb.top)
	r.Pairs = al.pairs
	r.tally(sa, sb)
	return r
}

// sameBuild says whether a and b ran the same kernel build, by the
// kernel's description in their headers (Linux's banner names the version,
// the compiler, the build number and date).
func sameBuild(a, b *trace.Trace) bool {
	ka, kb := a.Header.Kernel, b.Header.Kernel
	return ka == kb && ka != "" && !strings.HasPrefix(ka, "unknown kernel")
}

// hasSymbols says whether any step of t has a symbol (an empty trace
// lacks none).
func hasSymbols(t *trace.Trace) bool {
	if t.Len() == 0 {
		return true
	}
	for i := range t.Len() {
		if t.Step(i).Symbol != "" {
			return true
		}
	}
	return false
}

// tally fills the counts and events from the pairs.
func (r *Result) tally(sa, sb *side) {
	fns := map[string]int{}
	for _, p := range r.Pairs {
		r.Total.add(p.Op)
		name := ""
		if p.Op == Added {
			name = sb.fn[p.B]
		} else {
			name = sa.fn[p.A]
		}
		if !r.BySymbol {
			name = ""
		}
		i, ok := fns[name]
		if !ok {
			i = len(r.Functions)
			fns[name] = i
			r.Functions = append(r.Functions, Function{Name: name})
		}
		r.Functions[i].add(p.Op)
		var ea, eb []annotate.Event
		if p.A >= 0 {
			ea = notable(r.A.Step(p.A))
		}
		if p.B >= 0 {
			eb = notable(r.B.Step(p.B))
		}
		for _, e := range ea {
			if !slices.Contains(eb, e) {
				r.Events = append(r.Events, event(SideA, r.A.Step(p.A), e, sa.target[p.A]))
			}
		}
		for _, e := range eb {
			if !slices.Contains(ea, e) {
				r.Events = append(r.Events, event(SideB, r.B.Step(p.B), e, sb.target[p.B]))
			}
		}
	}
	for _, e := range Notable {
		r.EventCounts = append(r.EventCounts, EventCount{Event: e, A: countEvent(r.A, e), B: countEvent(r.B, e)})
	}
}

func notable(s *trace.Step) []annotate.Event {
	var out []annotate.Event
	for _, e := range s.Events {
		if slices.Contains(Notable, e) {
			out = append(out, e)
		}
	}
	return out
}

func countEvent(t *trace.Trace, e annotate.Event) int {
	n := 0
	for i := range t.Len() {
		if slices.Contains(t.Step(i).Events, e) {
			n++
		}
	}
	return n
}

// event describes event e of step s, whose branch went to function target.
func event(side Side, s *trace.Step, e annotate.Event, target string) Event {
	ev := Event{Side: side, Event: e, Step: s.Index, Where: s.Where()}
	var texts []string
	for _, eff := range s.Effects {
		switch {
		case e == annotate.EventFinding && eff.Verdict == annotate.Finding,
			e == annotate.EventMitigation && eff.Kind == annotate.KindMitigation,
			eff.Event == e:
			texts = append(texts, eff.Text)
		}
	}
	switch e {
	case annotate.EventMitigation:
		ev.Detail = mitigation(s, target, texts)
	case annotate.EventSwapgs, annotate.EventCR3Write:
		ev.Detail = s.ATT
	default:
		ev.Detail = strings.Join(texts, "; ")
	}
	if ev.Detail == "" {
		ev.Detail = s.ATT
	}
	return ev
}

// mitigation names the mitigation a step makes: the thunk it branches to
// or runs in (a return thunk, a retpoline, an untraining sequence), or
// else its instruction (verw, lfence, a wrmsr, a jmp over an ALTERNATIVE).
func mitigation(s *trace.Step, target string, texts []string) string {
	fn, _ := splitSymbol(s.Symbol)
	for _, name := range []string{target, fn} {
		if _, ok := annotate.MitigationOf(name); ok && name != "" {
			if strings.Contains(s.ATT, name) {
				return s.ATT
			}
			return fmt.Sprintf("%s: %s", name, s.ATT)
		}
	}
	if len(texts) > 0 {
		return s.ATT + ": " + texts[0]
	}
	return s.ATT
}

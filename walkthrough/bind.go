package walkthrough

import (
	"fmt"
	"strings"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// Match names the trace step a paragraph talks about. Every field that is
// set must hold (at least one must be set); Nth picks a later occurrence.
type Match struct {
	// At "start" binds to the state before the first step: the user
	// instruction that enters the kernel, not yet executed.
	At string `yaml:"at"`
	// Event is an annotate event of the step, e.g. swapgs or cr3-write.
	Event annotate.Event `yaml:"event"`
	// Symbol is the step's symbol, without an offset: entry_SYSCALL_64
	// matches entry_SYSCALL_64 and entry_SYSCALL_64+0x3.
	Symbol string `yaml:"symbol"`
	// Insn is the step's mnemonic, e.g. sysretq, swapgs, call. It is
	// compared with the step's canonical mnemonic (trace.Step.Mnemonic)
	// and may be given in any spelling objdump uses, in either syntax
	// (retfq and lretq name the same instruction; see
	// annotate.NormalizeMnemonic).
	Insn string `yaml:"insn"`
	// CPL matches a step that changes the privilege level to this one.
	CPL *int `yaml:"cpl"`
	// Nth picks the Nth matching step (1 when 0), counted from the step
	// the previous paragraph is bound to.
	Nth int `yaml:"nth"`
	// Before shows the paragraph while the step is the next to run, rather
	// than once it has run.
	Before bool `yaml:"before"`
}

// knownEvents are the events a lesson may name.
var knownEvents = []annotate.Event{
	annotate.EventCPLChange, annotate.EventSyscall, annotate.EventSysret, annotate.EventSysenter,
	annotate.EventSysexit, annotate.EventInterrupt, annotate.EventException, annotate.EventIret,
	annotate.EventCallGate, annotate.EventFarRet, annotate.EventSwapgs, annotate.EventCR3Write,
	annotate.EventMSRWrite, annotate.EventStackSwitch, annotate.EventIFChange, annotate.EventMitigation,
	annotate.EventPerCPU, annotate.EventFinding,
}

func (m Match) check() error {
	switch m.At {
	case "":
		if m.Event == "" && m.Symbol == "" && m.Insn == "" && m.CPL == nil {
			return fmt.Errorf("no event: give at, event, symbol, insn or cpl")
		}
	case "start":
		if m.Event != "" || m.Symbol != "" || m.Insn != "" || m.CPL != nil || m.Nth != 0 {
			return fmt.Errorf("at: start takes no other event field")
		}
	default:
		return fmt.Errorf("at %q: only \"start\" is known", m.At)
	}
	if m.Event != "" {
		ok := false
		for _, e := range knownEvents {
			ok = ok || e == m.Event
		}
		if !ok {
			return fmt.Errorf("event %q is not an annotate event", m.Event)
		}
	}
	if m.CPL != nil && (*m.CPL < 0 || *m.CPL > 3) {
		return fmt.Errorf("cpl %d: want 0-3", *m.CPL)
	}
	if m.Nth < 0 {
		return fmt.Errorf("nth %d: want 1 or more", m.Nth)
	}
	return nil
}

// String describes the match, e.g. "the 2nd swapgs in entry_SYSCALL_64".
func (m Match) String() string {
	if m.At == "start" {
		return "the start of the round trip"
	}
	var parts []string
	if m.Insn != "" {
		parts = append(parts, "`"+m.Insn+"`")
	}
	if m.Event != "" {
		ev := string(m.Event)
		if ev != "" && strings.ContainsRune("aeio", rune(ev[0])) {
			parts = append(parts, "an "+ev+" event") // an interrupt, an iret
		} else {
			parts = append(parts, "a "+ev+" event")
		}
	}
	if m.CPL != nil {
		parts = append(parts, fmt.Sprintf("a change to CPL %d", *m.CPL))
	}
	s := strings.Join(parts, " with ")
	if m.Symbol != "" {
		if s == "" {
			s = "an instruction"
		}
		s += " in " + m.Symbol
	}
	if m.Nth > 1 {
		s = fmt.Sprintf("occurrence %d of %s", m.Nth, s)
	}
	return s
}

// Matches reports whether step s, which left the CPU in state after (nil
// when unknown), is the kind of step m names. Nth is not considered.
func (m Match) Matches(s *trace.Step, after *x86.State) bool {
	if m.At == "start" {
		return false
	}
	if m.Event != "" && !hasEvent(s.Events, m.Event) {
		return false
	}
	if m.Symbol != "" {
		sym, _, _ := strings.Cut(s.Symbol, "+")
		if sym != m.Symbol {
			return false
		}
	}
	if m.Insn != "" && annotate.NormalizeMnemonic(m.Insn) != s.Mnemonic {
		return false
	}
	if m.CPL != nil {
		if after == nil || s.Regs == nil || s.Regs.CPL() == *m.CPL || after.CPL() != *m.CPL {
			return false
		}
	}
	return true
}

func hasEvent(ev []annotate.Event, e annotate.Event) bool {
	for _, x := range ev {
		if x == e {
			return true
		}
	}
	return false
}

// Binding says where each step of a segment is shown in a trace.
type Binding struct {
	// Index is the trace step each lesson step is bound to (-1 for at:
	// start), or Unbound.
	Index []int
	// Pos is the position (the state before step Pos) at which each
	// lesson step's paragraph is shown, or Unbound.
	Pos []int
}

// Unbound marks a lesson step whose event has not occurred (yet).
const Unbound = -2

// Bind binds the steps of segment seg of l to t, in order: each step is
// looked for from the trace step the previous one is bound to. Steps after
// the first that cannot be bound stay Unbound.
func Bind(l *Lesson, seg Segment, t *trace.Trace) Binding {
	b := Binding{Index: make([]int, len(seg.Steps)), Pos: make([]int, len(seg.Steps))}
	from := 0
	broken := false
	for j, i := range seg.Steps {
		b.Index[j], b.Pos[j] = Unbound, Unbound
		if broken {
			continue
		}
		m := l.Steps[i].Match
		if m.At == "start" {
			b.Index[j], b.Pos[j] = -1, 0
			continue
		}
		k := find(m, t, from)
		if k < 0 {
			broken = true
			continue
		}
		b.Index[j] = k
		b.Pos[j] = k + 1
		if m.Before {
			b.Pos[j] = k
		}
		from = k
	}
	return b
}

// find returns the index of the Nth step at or after from that m matches,
// or -1.
func find(m Match, t *trace.Trace, from int) int {
	nth := max(m.Nth, 1)
	for k := max(from, 0); k < t.Len(); k++ {
		if m.Matches(t.Step(k), t.After(k)) {
			nth--
			if nth == 0 {
				return k
			}
		}
	}
	return -1
}

// Count returns how many steps at or after from m matches, for running a
// live guest on until the Nth.
func Count(m Match, t *trace.Trace, from int) int {
	n := 0
	for k := max(from, 0); k < t.Len(); k++ {
		if m.Matches(t.Step(k), t.After(k)) {
			n++
		}
	}
	return n
}

// Current returns the index in seg.Steps of the paragraph to show at
// position pos: the last bound step whose position is at or before pos, or
// -1 when none is.
func (b Binding) Current(pos int) int {
	cur := -1
	for j, p := range b.Pos {
		if p == Unbound {
			break
		}
		if p <= pos {
			cur = j
		}
	}
	return cur
}

// From returns the trace index the search for segment step j starts at:
// the index the previous step is bound to.
func (b Binding) From(j int) int {
	for i := j - 1; i >= 0; i-- {
		if b.Index[i] != Unbound {
			return max(b.Index[i], 0)
		}
	}
	return 0
}

// StopLesson is the stop reason when a lesson's step was reached.
const StopLesson trace.StopReason = "the lesson's next event"

// UntilStep returns a recorder condition that stops on the step that binds
// m, given that already matching steps were recorded since the previous
// lesson step. It also stops when the CPU returns to user mode, so a lesson
// that does not fit the kernel cannot run on forever.
func UntilStep(m Match, already int) trace.Until {
	need := max(m.Nth, 1) - already
	return func(s *trace.Step, now *x86.State) trace.StopReason {
		if m.Matches(s, now) {
			need--
			if need <= 0 {
				return StopLesson
			}
		}
		if s.CPL != 3 && now != nil && now.CPL() == 3 {
			return trace.StopUser
		}
		return ""
	}
}

// UntilSegment returns a recorder condition that stops once every step of
// seg is bound, following the steps in order as Bind does, or when the CPU
// returns to user mode.
func UntilSegment(l *Lesson, seg Segment) trace.Until {
	j, count := 0, 0
	return func(s *trace.Step, now *x86.State) trace.StopReason {
		for j < len(seg.Steps) {
			m := l.Steps[seg.Steps[j]].Match
			if m.At == "start" {
				j++
				continue
			}
			if !m.Matches(s, now) {
				break
			}
			count++
			if count < max(m.Nth, 1) {
				break
			}
			j, count = j+1, 0
		}
		if j == len(seg.Steps) {
			return StopLesson
		}
		if s.CPL != 3 && now != nil && now.CPL() == 3 {
			return trace.StopUser
		}
		return ""
	}
}

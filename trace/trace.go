// Package trace records a system call's path through the kernel, one
// single step at a time, and keeps it as data: a Trace is saved to a file
// (version 2, compact, Write; or version 1, JSON, WriteJSON), read back
// with no QEMU running (Read, ReadFile, and Open for viewing), and printed
// as text or Markdown.
//
// Steps are read and added through Trace.Len, Step, All and Append. They
// are kept in chunks of ChunkSteps in the compact encoding the version 2
// file stores (chunk.go), decoded a chunk at a time when asked for, so
// that a trace of a million steps takes tens of megabytes, not a
// gigabyte; indexes built once as steps are added (lookup.go) find events,
// addresses and text without walking the steps.
//
// Each instruction is decoded once. A step keeps its bytes, the text
// rendered in both syntaxes for people ("intel", "att"), and what code
// compares: the decoded operation (Step.Op, not saved) and the canonical
// mnemonic (Step.Mnemonic, saved as "mnemonic": objdump's AT&T name, such
// as "sysretq" or "int3"). The "mnemonic" field is optional within version
// 1: files written before it existed lack it, and Read derives it, like
// Op, from the step's bytes, never from its rendered text.
package trace

import (
	"fmt"
	"iter"
	"slices"
	"strings"
	"time"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/x86"
)

// Format is the value of a trace file's "format" field.
const Format = "sctrace-trace"

// Trace is one recording. Its steps are read and added through Len, Step,
// All and Append; they are kept compactly (see ChunkSteps), so that a
// trace of a million steps fits in a few hundred megabytes, and a step is
// decoded when it is asked for.
type Trace struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
	Header  Header `json:"header"`
	// Probes are the runs of the opt-in MSR probe, in the order they ran.
	Probes []Probe `json:"probes,omitempty"`
	// Gaps are the stretches the guest ran unrecorded between steps, in
	// order (see Gap).
	Gaps []Gap `json:"gaps,omitempty"`
	// UserWrites are the changes made to the guest by hand while it was
	// stopped, in the order they were made.
	UserWrites []UserWrite `json:"user_writes,omitempty"`
	Final      *x86.State  `json:"final,omitempty"` // the state after the last step

	st *store
	// lim is the number of steps a view (View) shows; -1 for a trace
	// that owns its store.
	lim int
	// view is set on a trace made by View.
	view bool
}

// Probe is one run of the opt-in MSR probe (Recorder.ProbeMSRs): what
// rdmsr read in the guest at one stop, each value compared with what the
// trace had learnt before. A probe is kept beside the steps rather than in
// the step it followed, so that a step, once recorded, never changes.
type Probe struct {
	// Step is the index of the step the probe ran before: it read the
	// state after step Step-1, and 0 means before the first step.
	Step int `json:"step"`
	// At is where the CPU was stopped: RIP, with its symbol when known.
	At      string            `json:"at"`
	Effects []annotate.Effect `json:"effects"`
}

// ProbeEffects returns the effects of the probes that ran at the stop
// before step i (after step i-1), in the order they ran.
func ProbeEffects(probes []Probe, i int) []annotate.Effect {
	var out []annotate.Effect
	for _, p := range probes {
		if p.Step == i {
			out = append(out, p.Effects...)
		}
	}
	return out
}

// Header describes where and how a trace was recorded.
type Header struct {
	Tool     string    `json:"tool"`             // sctrace's version
	Recorded time.Time `json:"recorded"`         // when recording started
	Target   string    `json:"target"`           // e.g. "qemu gdbstub at 127.0.0.1:40123"
	Kernel   string    `json:"kernel,omitempty"` // e.g. "sctrace teaching kernel"
	Accel    string    `json:"accel,omitempty"`  // tcg or kvm, when sctrace started QEMU
	// CPUModel is QEMU's -cpu model, when sctrace started QEMU: its vendor
	// decides whether sysenter and syscall work outside 64-bit mode.
	CPUModel  string `json:"cpu_model,omitempty"`
	Mechanism string `json:"mechanism,omitempty"` // syscall, int80, sysenter, callgate, ud2, vdso, pagefault, irq, int3, gpfault
	Symbols   string `json:"symbols,omitempty"`   // where names came from
	// Syscall names the system call the trace starts at, with its
	// arguments, when it starts at a user syscall instruction on Linux.
	Syscall *Syscall `json:"syscall,omitempty"`
	// Stepping says how the CPU was stepped, in particular whether
	// interrupts and timers were masked while single-stepping.
	Stepping string `json:"stepping"`
	// StepFlags are the QEMU single-step flags in force, e.g.
	// "ENABLE|NOIRQ|NOTIMER" (empty when the stub has no qemu.sstep).
	StepFlags string `json:"step_flags,omitempty"`
	// Interrupts says what happened to interrupts that arrived while
	// stepping: IRQMasked, IRQSteppedOver or IRQRecorded.
	Interrupts string `json:"interrupts,omitempty"`
	// IRQs counts the interrupts taken while stepping that were run to
	// their return and left out of Steps.
	IRQs int `json:"irqs,omitempty"`
	// CPU is the vCPU the trace follows when the guest has several: the
	// one that made the call. Nil for a guest with one vCPU.
	CPU *CPU `json:"cpu,omitempty"`
	// OtherCPUs says where the other vCPUs were, stopped by QEMU, when the
	// trace started (where the followed vCPU's stop caught them, running
	// or not) and when it ended: the same place when they were held
	// stopped throughout, as sctrace's single steps (vCont;s) hold them.
	OtherCPUs []OtherCPU        `json:"other_cpus,omitempty"`
	Sys       *x86.SysRegs      `json:"sys,omitempty"` // monitor info registers at the start
	Regions   []annotate.Region `json:"regions,omitempty"`
	// MSRs are the model-specific registers learnt while recording, each
	// with its provenance (read, inferred or probed).
	MSRs []annotate.MSR `json:"msrs,omitempty"`
	// Stop says why the recording ended.
	Stop string `json:"stop,omitempty"`
	// SpuriousStops counts single steps the stub reported with nothing
	// executed; they were stepped again and are not in Steps.
	SpuriousStops int `json:"spurious_stops,omitempty"`
	// Recorders says which recorder produced which steps; a trace that
	// lacks it was single-stepped throughout (see RecorderOf).
	Recorders []RecorderSpan `json:"recorders,omitempty"`
	Seconds   float64        `json:"seconds,omitempty"`   // time spent recording
	StepRate  float64        `json:"step_rate,omitempty"` // instructions per second while recording
}

// CPU names the vCPU a trace follows.
type CPU struct {
	Index  int    `json:"index"`  // QEMU's CPU index, as -smp counts (0 is the boot CPU)
	Thread string `json:"thread"` // the gdbstub thread, e.g. "p01.02"
	Count  int    `json:"count"`  // how many vCPUs the guest has
	// GSBase is the kernel GS base of this vCPU (its per-CPU area, read
	// from GS base or KERNEL_GS_BASE at the start), when known.
	GSBase Hex `json:"gs_base,omitempty"`
}

// String is "vCPU 1 of 2".
func (c CPU) String() string { return fmt.Sprintf("vCPU %d of %d", c.Index, c.Count) }

// OtherCPU is where a vCPU the trace does not follow was at its start and
// end.
type OtherCPU struct {
	Index  int      `json:"index"`
	Thread string   `json:"thread"`
	Start  CPUPlace `json:"start"`
	End    CPUPlace `json:"end"`
}

// CPUPlace is one vCPU's RIP and privilege level at a stop.
type CPUPlace struct {
	RIP    Hex    `json:"rip"`
	Symbol string `json:"symbol,omitempty"`
	// CPL is CS's requested privilege level (the CPL in long mode); -1
	// when the registers could not be read.
	CPL int `json:"cpl"`
	// GSBase is that vCPU's kernel GS base (its per-CPU area: GS base in
	// the kernel after swapgs, KERNEL_GS_BASE in user mode), when known.
	GSBase Hex `json:"gs_base,omitempty"`
	// Err says why the registers could not be read.
	Err string `json:"error,omitempty"`
}

// String is "0xffffffff81a17a51 <default_idle+0x11> CPL 0".
func (p CPUPlace) String() string {
	if p.Err != "" {
		return "unknown (" + p.Err + ")"
	}
	s := fmt.Sprintf("%#x", uint64(p.RIP))
	if p.Symbol != "" {
		s += " <" + p.Symbol + ">"
	}
	return s + fmt.Sprintf(" CPL %d", p.CPL)
}

// mode says in a word what a vCPU at p was running: "user mode" or
// "the kernel".
func (p CPUPlace) mode() string {
	switch {
	case p.Err != "":
		return ""
	case p.CPL == 3:
		return "user mode"
	case p.CPL == 0:
		return "the kernel"
	}
	return fmt.Sprintf("CPL %d", p.CPL)
}

// Moved reports whether the vCPU was somewhere else at the end than at
// the start (it ran while the trace was recorded), or could not be read
// at one of them.
func (o OtherCPU) Moved() bool {
	return o.Start.Err != "" || o.End.Err != "" || o.Start.RIP != o.End.RIP || o.Start.CPL != o.End.CPL
}

// CPULines describes the followed vCPU and what the others did, one line
// each, for printed headers; none for a guest with one vCPU.
func (h Header) CPULines() []string {
	if h.CPU == nil {
		return nil
	}
	l := fmt.Sprintf("followed: %s (gdbstub thread %s", h.CPU, h.CPU.Thread)
	if h.CPU.GSBase != 0 {
		l += fmt.Sprintf(", kernel GS base %#x", uint64(h.CPU.GSBase))
	}
	out := []string{l + "), stepped alone: QEMU stopped every vCPU when this one stopped where the trace starts, and each step runs this one only"}
	for _, o := range h.OtherCPUs {
		who := fmt.Sprintf("vCPU %d (thread %s)", o.Index, o.Thread)
		gs := ""
		if o.Start.GSBase != 0 {
			gs = fmt.Sprintf(", kernel GS base %#x", uint64(o.Start.GSBase))
		}
		switch {
		case o.Start.Err != "" || o.End.Err != "":
			out = append(out, fmt.Sprintf("%s: at start %s; at end %s", who, o.Start, o.End))
		case o.Moved():
			out = append(out, fmt.Sprintf("%s ran meanwhile: at start %s in %s%s; at end %s in %s", who, o.Start, o.Start.mode(), gs, o.End, o.End.mode()))
		default:
			out = append(out, fmt.Sprintf("%s: stopped in %s at %s%s, and held there from the first step to the last", who, o.Start.mode(), o.Start, gs))
		}
	}
	return out
}

// OtherCPUsLabel says in a few words where the other vCPUs were, for
// status lines: "vCPU 0 held in user mode at user_syscall_insn",
// "vCPU 0 ran: A → B", or for several "3 others held: 2 user, 1 kernel";
// "" for a guest with one vCPU.
func (h Header) OtherCPUsLabel() string {
	switch len(h.OtherCPUs) {
	case 0:
		return ""
	case 1:
		o := h.OtherCPUs[0]
		at := func(p CPUPlace) string {
			if p.Symbol != "" {
				return p.Symbol
			}
			return fmt.Sprintf("%#x", uint64(p.RIP))
		}
		switch {
		case o.Start.Err != "" || o.End.Err != "":
			return fmt.Sprintf("vCPU %d unknown", o.Index)
		case o.Moved():
			return fmt.Sprintf("vCPU %d ran: %s → %s", o.Index, at(o.Start), at(o.End))
		}
		return fmt.Sprintf("vCPU %d held in %s at %s", o.Index, strings.TrimPrefix(o.Start.mode(), "the "), at(o.Start))
	}
	var user, kern, moved, unknown int
	for _, o := range h.OtherCPUs {
		switch {
		case o.Start.Err != "" || o.End.Err != "":
			unknown++
		case o.Moved():
			moved++
		case o.Start.CPL == 3:
			user++
		default:
			kern++
		}
	}
	var parts []string
	for _, c := range []struct {
		n    int
		what string
	}{{user, "user"}, {kern, "kernel"}, {moved, "ran"}, {unknown, "unknown"}} {
		if c.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", c.n, c.what))
		}
	}
	return fmt.Sprintf("%d others held: %s", len(h.OtherCPUs), strings.Join(parts, ", "))
}

// SteppingLabel says in a few words how interrupts were handled while
// stepping, for status lines: "irq+timers masked", "irq masked, timers
// run", "irq stepped over" or "irq recorded"; "" when the header does not
// say (a trace recorded before it did).
func (h Header) SteppingLabel() string {
	switch h.Interrupts {
	case IRQMasked:
		if strings.Contains(h.StepFlags, "NOTIMER") {
			return "irq+timers masked"
		}
		return "irq masked, timers run"
	case IRQSteppedOver, IRQRecorded:
		return "irq " + h.Interrupts
	}
	return ""
}

// Step is one executed instruction.
type Step struct {
	Index  int    `json:"i"`
	RIP    Hex    `json:"rip"`
	Symbol string `json:"sym,omitempty"`
	CPL    int    `json:"cpl"`
	Bytes  Bytes  `json:"bytes"`
	Intel  string `json:"intel"` // rendered for people; never matched
	ATT    string `json:"att"`   // rendered for people; never matched
	// Op is the operation x86asm decodes from Bytes: 0 for the few
	// instructions it leaves undecoded (clac, stac, endbr64) and for
	// bytes that are no instruction. It is not saved, since x86asm's
	// numbering is not a file format: the recorder sets it, and Read
	// decodes it from Bytes.
	Op x86asm.Op `json:"-"`
	// Mnemonic is the canonical mnemonic (annotate.CanonicalMnemonic):
	// objdump's AT&T name without prefixes or operands, such as
	// "syscall", "sysretq", "lretq", "int", "int3" or "call". Code that
	// asks what an instruction is compares Op or Mnemonic, never the
	// rendered Intel or ATT text.
	Mnemonic string `json:"mnemonic,omitempty"`
	// Regs is the CPU state before the instruction.
	Regs    *x86.State        `json:"regs"`
	Changed []Change          `json:"changed,omitempty"`
	Effects []annotate.Effect `json:"effects,omitempty"`
	Events  []annotate.Event  `json:"events,omitempty"`
	Mem     []annotate.Memory `json:"mem,omitempty"`
	Stack   []Hex             `json:"stack,omitempty"` // words at RSP before the instruction, when recorded
	Over    *Over             `json:"over,omitempty"`  // set when a call was stepped over
}

// decodeOp sets s.Op, and s.Mnemonic when it is empty, from s.Bytes.
func (s *Step) decodeOp() {
	inst, _, err := annotate.Decode(s.Bytes)
	if err != nil {
		s.Op = 0
		return
	}
	s.Op = inst.Op
	if s.Mnemonic == "" {
		s.Mnemonic = annotate.CanonicalMnemonic(inst, s.Bytes)
	}
}

// Over describes a call that was stepped over rather than into.
type Over struct {
	Target string `json:"target"` // the callee, by symbol when known
	Depth  int    `json:"depth"`  // call depth at which it was skipped
}

// Change is one register changed by a step.
type Change struct {
	Reg string `json:"reg"`
	Old Hex    `json:"old"`
	New Hex    `json:"new"`
}

// New returns a trace holding steps, numbered from 0: for tests and
// tools that build a trace in memory.
func New(steps ...Step) *Trace {
	t := &Trace{st: newStore()}
	for _, s := range steps {
		t.Append(s)
	}
	return t
}

// Len returns the number of steps recorded.
func (t *Trace) Len() int {
	if t.st == nil {
		return 0
	}
	n := t.st.len()
	if t.view {
		n = min(n, t.lim)
	}
	return n
}

// Step returns step i, 0 <= i < Len(). A step, once recorded, is never
// changed: the caller must not change it either. Steps are decoded a
// chunk at a time and a few chunks are kept, so the pointer may differ
// from one call to the next; the step it points to does not.
func (t *Trace) Step(i int) *Step {
	if i < 0 || i >= t.Len() {
		panic(fmt.Sprintf("trace: step %d of %d", i, t.Len()))
	}
	return t.st.step(i)
}

// All returns the steps in order with their indexes.
func (t *Trace) All() iter.Seq2[int, *Step] {
	return func(yield func(int, *Step) bool) {
		for i, n := 0, t.Len(); i < n; i++ {
			if !yield(i, t.Step(i)) {
				return
			}
		}
	}
}

// Append adds s as the trace's next step, numbering it, and returns the
// stored step. Appending to a view (View) first copies the view's steps
// into a store of its own, leaving the trace it was taken from as it was.
func (t *Trace) Append(s Step) *Step { return t.appendLine(s, nil) }

// appendLine is Append for a recorder that appends many steps of one
// instruction: h remembers the search index's line of the step's symbol
// and texts, which are the same for every step made from it.
func (t *Trace) appendLine(s Step, h *lineHint) *Step {
	switch {
	case t.st == nil:
		t.st = newStore()
	case t.view:
		own := newStore()
		for i := range t.lim {
			own.append(*t.st.step(i), nil)
		}
		t.st, t.lim, t.view = own, 0, false
	}
	return t.st.append(s, h)
}

// View returns a trace that shares t's steps but shows only the first n
// (at most Len()), with copies of t's header, probes and writes by hand: what a viewer
// holds while the recorder goes on appending to t. View may run while
// another goroutine appends to t, though not while it clears t.
func (t *Trace) View(n int) *Trace {
	v := *t
	v.Header.Regions = slices.Clone(t.Header.Regions)
	v.Header.MSRs = slices.Clone(t.Header.MSRs)
	v.Probes = slices.Clip(t.Probes)
	v.UserWrites = slices.Clip(t.UserWrites)
	v.Gaps = slices.Clip(t.Gaps)
	v.lim, v.view = max(0, min(n, t.Len())), true
	if v.st == nil {
		v.st = newStore() // an empty view of its own; t is left alone
	}
	return &v
}

// Clear forgets the steps (and the probes, the writes by hand, the gaps
// and the final state), so that the trace starts afresh. Views taken before keep
// what they showed.
func (t *Trace) Clear() {
	t.st, t.lim, t.view = newStore(), 0, false
	t.Probes, t.UserWrites, t.Gaps, t.Final = nil, nil, nil, nil
}

// After returns the state after step i: the next step's Regs, or the
// trace's Final state after the last step, or, when the guest ran
// unrecorded after step i, the state the gap began with.
func (t *Trace) After(i int) *x86.State {
	if g, ok := t.GapAt(i + 1); ok && g.Before != nil {
		return g.Before
	}
	if i+1 < t.Len() {
		return t.Step(i + 1).Regs
	}
	return t.Final
}

// Hex is a uint64 written in JSON as a "0x..." string.
type Hex = x86.Hex

// Bytes are instruction bytes, written in JSON as a hex string.
type Bytes = x86.HexBytes

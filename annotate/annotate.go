// Package annotate explains one executed x86-64 instruction at a time.
//
// Given the instruction, the CPU state before and after it, and any guest
// memory the recorder read on request (see MemoryBefore and MemoryAfter),
// Annotate returns a list of short effects a student can read: what the
// instruction did to the privilege level, the MSRs, the GS base, CR3 and the
// stacks. Where the architecture promises an outcome (the pseudo-code of
// SYSCALL, SYSRET, SYSENTER, SYSEXIT, INT, IRETQ, far CALL through a call gate,
// far RET, SWAPGS, MOV to CR3 and WRMSR), the effect carries a verdict: "ok"
// when the observed state matches, "finding" when it contradicts it.
//
// MSRs are not visible through QEMU's gdbstub, so the package keeps a
// Knowledge of them across steps, each value with its provenance: inferred
// from a transition (SYSCALL reveals LSTAR as the new RIP), read (from the
// stub's registers, from wrmsr operands, from an rdmsr result) or probed.
//
// The package is pure: it performs no I/O and keeps no global state, so it is
// tested with tables of (instruction, before, after) cases.
package annotate

import (
	"fmt"
	"strings"
	"sync"

	"github.com/sctrace/sctrace/x86"
	"golang.org/x/arch/x86/x86asm"
)

// Step is one executed instruction.
type Step struct {
	Index int         `json:"index"`
	Addr  uint64      `json:"addr"`  // RIP before
	Bytes []byte      `json:"bytes"` // instruction bytes (more may follow the instruction; Inst.Len says how many it used)
	Inst  x86asm.Inst `json:"-"`     // decoded in 64-bit mode (not serialised: decode Bytes again with Decode)
	// Before is the state at the stop before the instruction.
	Before *x86.State `json:"before"`
	// After is the state at the next stop: for syscall, int, sysenter,
	// lcall, ud2, iretq, sysret and lret it is already in the other
	// privilege level (the first instruction of the handler, or back in
	// user mode).
	After *x86.State `json:"after"`
	// Mem is the memory the recorder read because MemoryBefore or
	// MemoryAfter asked for it. A range it could not read is left out.
	Mem []Memory `json:"mem,omitempty"`
	// Over is set when the instruction was a call that the recorder ran to
	// its return as one step (stepping over it) rather than single-stepping
	// into it: After is the state back at the next instruction.
	Over bool `json:"over,omitempty"`
}

// Memory is one range of guest memory (linear addresses) read by the recorder.
type Memory struct {
	Addr  uint64 `json:"addr"`
	Data  []byte `json:"data"`
	After bool   `json:"after,omitempty"` // read after the step rather than before it
}

// Range is a range of guest linear addresses the annotator would like read.
type Range struct {
	Addr uint64 `json:"addr"`
	Len  int    `json:"len"`
}

// Kind says what an effect is about.
type Kind string

// The kinds of effect.
const (
	KindPrivilege  Kind = "privilege"  // CPL, IF, SMAP
	KindMSR        Kind = "msr"        // model-specific registers
	KindGS         Kind = "gs"         // GS/FS bases and per-CPU accesses
	KindCR3        Kind = "cr3"        // page tables and other control registers
	KindStack      Kind = "stack"      // RSP and stack switches
	KindFrame      Kind = "frame"      // frames pushed or popped by the CPU, pt_regs slots
	KindRegister   Kind = "register"   // general registers
	KindFlags      Kind = "flags"      // RFLAGS
	KindMitigation Kind = "mitigation" // speculative-execution mitigations
	KindMemory     Kind = "memory"     // other memory accesses
	KindControl    Kind = "control"    // where execution goes next
	KindCheck      Kind = "check"      // a check that could not be made, or a general one
)

// Verdict is an effect's comparison with what the architecture promises.
type Verdict string

// The verdicts.
const (
	NoVerdict Verdict = ""        // nothing was predicted
	OK        Verdict = "ok"      // matches the architecture
	Finding   Verdict = "finding" // contradicts it
)

// Effect is one thing an instruction did, in plain words.
type Effect struct {
	Kind    Kind    `json:"kind"`
	Text    string  `json:"text"`
	Verdict Verdict `json:"verdict,omitempty"`
	// Event is set on the effect that makes the step an event of this kind
	// (a stack switch, a per-CPU access, an exception delivery); Events
	// collects them.
	Event Event `json:"event,omitempty"`
}

// Symbolizer names code and data addresses.
type Symbolizer interface {
	// Symbolize returns e.g. "entry_SYSCALL_64+0x12", or "" if addr is in
	// no known symbol.
	Symbolize(addr uint64) string
}

// Context is what Annotate knows beyond the step itself.
type Context struct {
	Symbols   Symbolizer // may be nil
	Regions   []Region   // named memory areas: stacks, per-CPU data, TSS...
	Knowledge *Knowledge // carried across steps; created on first use when nil
	// Accel is the accelerator QEMU runs the guest with, as the trace
	// header gives it ("tcg (auto: …)", "kvm"); empty when unknown (a QEMU
	// sctrace did not start). Under TCG, QEMU's SYSCALL clears arithmetic
	// flags that FMASK does not name.
	Accel string
	// CPUModel is QEMU's -cpu model, as the trace header gives it
	// ("qemu64,vendor=GenuineIntel"); empty when unknown. Its vendor
	// decides what SYSCALL and SYSENTER do outside 64-bit mode.
	CPUModel string
	// Unread, when set, says why memory the annotation needed is missing
	// from a step, such as "not captured by the log recorder"; notes about
	// memory that was not read end with it.
	Unread string
}

// accel says what is known of the accelerator: "tcg", "kvm" or "".
func (c *Context) accel() string {
	for _, a := range []string{"tcg", "kvm"} {
		if strings.HasPrefix(c.Accel, a) {
			return a
		}
	}
	return ""
}

// accelNote spells, for a finding about the CPU, what runs it: " under
// TCG", " under KVM", or "" when unknown.
func (a *annotator) accelNote() string {
	switch a.c.accel() {
	case "tcg":
		return " under QEMU's TCG"
	case "kvm":
		return " under KVM"
	}
	return ""
}

// Annotate explains one step. It may update c.Knowledge with what the step
// revealed (MSRs, the per-CPU base, the kernel stack top).
func Annotate(s Step, c *Context) []Effect {
	a := newAnnotator(s, c)
	a.run()
	out := a.out
	*a = annotator{}
	annotators.Put(a)
	return out
}

// annotators keeps annotators for reuse: a recorder annotates every step,
// and one is large enough for its allocation to count in a long trace.
var annotators = sync.Pool{New: func() any { return new(annotator) }}

// annotator carries one step's analysis.
type annotator struct {
	s    Step
	c    *Context
	k    *Knowledge
	b, a *x86.State // before and after, never nil
	op   op         // the operation, including ones x86asm does not know
	next uint64     // address of the next instruction
	// hasNext is false when the instruction's length is unknown.
	hasNext bool
	// done marks registers whose change an effect already explained.
	done uint64
	// stackDone is set once an effect explained the RSP change.
	stackDone bool
	// entered is set when the step was found to enter an exception or
	// interrupt handler.
	entered bool
	// cplDone is set once an effect reported the privilege change.
	cplDone bool
	out     []Effect
}

func newAnnotator(s Step, c *Context) *annotator {
	if c == nil {
		c = &Context{}
	}
	if c.Knowledge == nil {
		c.Knowledge = NewKnowledge()
	}
	a := annotators.Get().(*annotator)
	*a = annotator{s: s, c: c, k: c.Knowledge, b: s.Before, a: s.After}
	if a.b == nil {
		a.b = &x86.State{}
	}
	if a.a == nil {
		a.a = &x86.State{}
	}
	a.op = classify(s.Inst, s.Bytes)
	if n := a.op.length(s.Inst); n > 0 {
		a.next, a.hasNext = s.Addr+uint64(n), true
	}
	return a
}

// add appends an effect.
func (a *annotator) add(k Kind, v Verdict, format string, args ...any) {
	a.out = append(a.out, Effect{Kind: k, Text: fmt.Sprintf(format, args...), Verdict: v})
}

// mark sets the event of the last effect.
func (a *annotator) mark(e Event) {
	if len(a.out) > 0 {
		a.out[len(a.out)-1].Event = e
	}
}

// note appends an effect without a verdict.
func (a *annotator) note(k Kind, format string, args ...any) { a.add(k, NoVerdict, format, args...) }

// unread notes memory the step lacks, saying why when the Context knows.
func (a *annotator) unread(k Kind, format string, args ...any) {
	if a.c.Unread != "" {
		format += " (" + strings.ReplaceAll(a.c.Unread, "%", "%%") + ")"
	}
	a.note(k, format, args...)
}

// verdict returns OK or Finding.
func verdict(ok bool) Verdict {
	if ok {
		return OK
	}
	return Finding
}

// explained marks registers as explained.
func (a *annotator) explained(rs ...x86.Reg) {
	for _, r := range rs {
		a.done |= 1 << r
	}
}

// name returns a register's name as the effects spell it ("rflags", not
// the target description's "eflags").
func name(r x86.Reg) string {
	if r == x86.RFLAGS {
		return "rflags"
	}
	return r.String()
}

// sym renders an address with its symbol, e.g. "0xffffffff81c00080 <entry_SYSCALL_64>".
func (a *annotator) sym(addr uint64) string {
	if name := a.symbol(addr); name != "" {
		return fmt.Sprintf("%#x <%s>", addr, name)
	}
	return fmt.Sprintf("%#x", addr)
}

// Aliaser is a Symbolizer that also names the other symbols starting where
// a symbol does (Linux's common_interrupt_return and
// swapgs_restore_regs_and_return_to_usermode are one address).
type Aliaser interface {
	Aliases(addr uint64) []string
}

// target renders a branch target like sym, adding the other names the
// address has when it starts a symbol: a reader searching the kernel's
// source for the label a jmp names may know it by either.
func (a *annotator) target(addr uint64) string {
	s := a.sym(addr)
	al, ok := a.c.Symbols.(Aliaser)
	if !ok || strings.Contains(a.symbol(addr), "+") {
		return s
	}
	if names := al.Aliases(addr); len(names) > 0 {
		s += " (also " + strings.Join(names, ", ") + ")"
	}
	return s
}

// symbol returns the symbol name of addr, or "".
func (a *annotator) symbol(addr uint64) string {
	if a.c.Symbols == nil {
		return ""
	}
	return a.c.Symbols.Symbolize(addr)
}

// expect checks that register r holds want after the step. what says why
// (e.g. "the next instruction"); rule names the architectural rule for a
// finding (e.g. "SYSCALL saves the return address in RCX").
func (a *annotator) expect(k Kind, r x86.Reg, want uint64, what, rule string) bool {
	got, ok := a.a.Get(r)
	if !ok {
		a.note(KindCheck, "%s unknown after the step: cannot check that it is %#x (%s)", name(r), want, what)
		return false
	}
	if got == want {
		a.add(k, OK, "%s = %#x: %s", name(r), got, what)
		return true
	}
	a.add(k, Finding, "%s = %#x, expected %#x (%s): %s", name(r), got, want, what, rule)
	return false
}

func (a *annotator) run() {
	a.learnFromStub()
	if a.s.Over {
		a.overCall()
		a.registers()
		a.k.remember(a)
		return
	}
	handled := a.family()
	if !handled {
		a.exceptionCheck()
	}
	a.ioPort()
	a.segmentAccesses()
	a.frameStores()
	a.cr3EditNote()
	a.sysretCheck()
	if !a.stackDone {
		a.stack()
	}
	a.privilege()
	a.returnGS()
	a.mitigations()
	a.branch()
	a.registers()
	a.trackOrigins()
	a.k.remember(a)
}

// family dispatches to the instruction families with an architectural
// contract. It reports whether one handled the step.
func (a *annotator) family() bool {
	switch a.op.kind {
	case opSyscall:
		a.syscall()
	case opSysret:
		a.sysret()
	case opSysenter:
		a.sysenter()
	case opSysexit:
		a.sysexit()
	case opInt, opUD:
		a.softwareException()
	case opIret:
		a.iret()
	case opFarCall:
		a.farCall()
	case opFarRet:
		a.farRet()
	case opSwapgs:
		a.swapgs()
	case opRdBase, opWrBase:
		a.fsgsBase()
	case opWrmsr:
		a.wrmsr()
	case opRdmsr:
		a.rdmsr()
	case opMovCR:
		a.movCR()
	default:
		return false
	}
	return true
}

package trace

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/target"
	"github.com/sctrace/sctrace/x86"
)

// DefaultBudget is the default most instructions a recording steps.
const DefaultBudget = 100_000

// Recorder single-steps a live target and builds a Trace.
type Recorder struct {
	T       *target.Target
	Symbols *symbols.Table
	Ctx     *annotate.Context
	// Budget bounds the instructions one Run steps (DefaultBudget when 0).
	Budget int
	// Over steps over calls made at call depth Over or deeper (the entry
	// code itself is depth 0, so 1 skips every call it makes); 0 steps
	// into everything.
	Over int
	// StackWords, when non-zero, reads that many words at RSP before each
	// step, for stack panels. It costs one memory read a step.
	StackWords int
	// AllowIRQ lets interrupts and timers run while single-stepping and
	// records the handlers of those that arrive; by default the recorder
	// asks QEMU to mask them, and where the stub cannot (QEMU under KVM)
	// runs each handler to its return and leaves it out.
	AllowIRQ bool
	// StepFlags, when not zero, are the single-step flags to ask for
	// instead of the default (NOIRQ|NOTIMER, or ENABLE alone under
	// AllowIRQ); the stub's offer still limits them.
	StepFlags int
	// OnCPU, when not nil, is the vCPU (QEMU's index) whose entry ToEntry
	// waits for, on a guest with several: a breakpoint hit on another
	// vCPU is stepped past and the guest runs on. Nil takes the first hit
	// on any vCPU.
	OnCPU *int

	flags   int            // single-step flags in force; -1 unknown
	idt     map[uint64]int // handler address -> vector, from the IDT
	idtBase uint64         // where idt was read from

	trace  *Trace
	cur    *x86.State
	tables *x86.SysRegs // GDTR, IDTR and TR, attached to every state
	depth  int
	start  time.Time
	busy   time.Duration
}

// Tool is what trace headers name as the recording tool; the sctrace
// command sets it to its version before it records.
var Tool = "sctrace"

// NewRecorder prepares a recorder; Init must be called before stepping.
func NewRecorder(t *target.Target, syms *symbols.Table, regions []annotate.Region, hdr Header) *Recorder {
	if hdr.Symbols == "" && syms != nil {
		hdr.Symbols = syms.Source
	}
	var sym annotate.Symbolizer
	if syms != nil {
		sym = syms
	}
	hdr.Regions = regions
	hdr.Tool = cmp.Or(hdr.Tool, Tool)
	return &Recorder{
		T:       t,
		Symbols: syms,
		Ctx:     &annotate.Context{Symbols: sym, Regions: regions, Knowledge: annotate.NewKnowledge(), Accel: hdr.Accel, CPUModel: hdr.CPUModel},
		trace:   &Trace{Format: Format, Version: Version, Header: hdr, st: newStore()},
	}
}

// SetNames changes the symbols and regions the steps recorded from now on
// are named with, as when the system call came on another vCPU, whose
// per-CPU area, TSS and stacks are its own.
func (r *Recorder) SetNames(syms *symbols.Table, regions []annotate.Region) {
	r.Symbols = syms
	r.Ctx.Symbols = nil
	if syms != nil {
		r.Ctx.Symbols = syms
		r.trace.Header.Symbols = syms.Source
	}
	r.Ctx.Regions = regions
	r.trace.Header.Regions = regions
}

// What happens to interrupts that arrive while stepping (Header.Interrupts).
const (
	IRQMasked      = "masked"       // QEMU keeps them pending while stepping
	IRQSteppedOver = "stepped over" // their handlers run to their return, left out of the trace
	IRQRecorded    = "recorded"     // their handlers are recorded (AllowIRQ)
)

// Init reads the current state and the system registers, and sets QEMU's
// single-step flags: the strongest the stub offers of those asked for
// (interrupts and timers masked unless AllowIRQ), said in the header.
func (r *Recorder) Init(ctx context.Context) error {
	want := gdbremote.SStepEnable | gdbremote.SStepNoIRQ | gdbremote.SStepNoTimer
	if r.AllowIRQ {
		want = gdbremote.SStepEnable
	}
	if r.StepFlags != 0 {
		want = r.StepFlags
	}
	flags, err := r.T.Conn.NegotiateStepFlags(ctx, want)
	if err != nil {
		var ue *gdbremote.UnsupportedError
		if !errors.As(err, &ue) {
			return fmt.Errorf("set single-step flags: %w", err)
		}
		flags = -1
	}
	r.flags = flags
	r.describeStepping()
	if err := r.T.FollowStopped(ctx); err != nil {
		return err
	}
	st, err := r.T.State(ctx)
	if err != nil {
		return err
	}
	r.cur = st
	return r.readSys(ctx)
}

// describeStepping fills the header's account of the single-step flags
// and of what happens to interrupts.
func (r *Recorder) describeStepping() {
	h := &r.trace.Header
	h.Interrupts = IRQSteppedOver
	if r.AllowIRQ {
		h.Interrupts = IRQRecorded
	}
	if r.flags < 0 {
		h.StepFlags = ""
		h.Stepping = "single-step (the stub has no qemu.sstep: interrupt masking unknown); interrupts that arrive are " + h.Interrupts
		return
	}
	h.StepFlags = gdbremote.StepFlagsString(r.flags)
	irq, timer := r.flags&gdbremote.SStepNoIRQ != 0, r.flags&gdbremote.SStepNoTimer != 0
	var what string
	switch {
	case irq && timer:
		what = "interrupts and timers masked"
	case irq:
		what = "interrupts masked, timers running"
	case timer:
		what = "interrupts allowed, timers stopped"
	default:
		what = "interrupts and timers allowed"
	}
	if irq {
		h.Interrupts = IRQMasked
	}
	h.Stepping = fmt.Sprintf("single-step with %s (QEMU sstep %s", what, h.StepFlags)
	switch {
	case !irq && !r.AllowIRQ:
		h.Stepping += ": the stub offers no NOIRQ, as QEMU under KVM without KVM_GUESTDBG_BLOCKIRQ); interrupts that arrive are run to their return and left out"
	case !irq:
		h.Stepping += ", --irq); interrupts that arrive are recorded"
	case !timer && r.StepFlags == 0:
		h.Stepping += ": the stub offers no NOTIMER, as QEMU under KVM)"
	default:
		h.Stepping += ")"
	}
}

// readSys reads `monitor info registers` at the current stop. The whole
// reading belongs to the current state only; the states after it carry just
// the descriptor-table registers and TR, which do not change while a system
// call runs, so that nothing stale (CPL, segment caches) is taken for a
// reading at a later step.
func (r *Recorder) readSys(ctx context.Context) error {
	sys, err := r.T.SysRegs(ctx)
	if err != nil {
		var ue *gdbremote.UnsupportedError
		if errors.As(err, &ue) {
			return nil
		}
		return err
	}
	r.trace.Header.Sys = sys
	r.cur.Sys = sys
	tables := *sys
	tables.CPL = -1
	tables.Segments = map[string]x86.Segment{}
	for _, k := range []string{"TR", "LDT"} {
		if seg, ok := sys.Segments[k]; ok {
			tables.Segments[k] = seg
		}
	}
	r.tables = &tables
	return nil
}

// Current returns the state at the current stop.
func (r *Recorder) Current() *x86.State { return r.cur }

// Trace returns the trace recorded so far, with its header brought up to
// date.
func (r *Recorder) Trace() *Trace {
	h := &r.trace.Header
	h.MSRs = r.Ctx.Knowledge.Sorted()
	h.Seconds = r.busy.Seconds()
	if r.busy > 0 {
		h.StepRate = float64(r.trace.Len()) / r.busy.Seconds()
	}
	if r.trace.Len() > 0 {
		r.trace.Final = r.cur
	}
	return r.trace
}

// Reset forgets the steps and probes recorded so far (keeping what was
// learnt about MSRs), so that the next round trip starts a fresh trace.
func (r *Recorder) Reset() {
	r.trace.Clear()
	r.trace.Header.Stop = ""
	r.trace.Header.SpuriousStops = 0
	r.trace.Header.IRQs = 0
	r.trace.Header.Recorders = nil
	r.busy = 0
	r.depth = 0
}

// Decode reads and decodes the instruction at the current RIP.
func (r *Recorder) Decode(ctx context.Context, st *x86.State) (x86asm.Inst, []byte, error) {
	rip := st.Val(x86.RIP)
	code, err := r.T.ReadCode(ctx, st.Val(x86.CR3), rip, 15)
	if err != nil {
		return x86asm.Inst{}, nil, fmt.Errorf("instruction at %s: %w", r.name(rip), err)
	}
	inst, n, err := annotate.Decode(code)
	if err != nil {
		return x86asm.Inst{}, nil, fmt.Errorf("decode at %s (% x): %w", r.name(rip), code[:min(len(code), 8)], err)
	}
	return inst, code[:n], nil
}

func (r *Recorder) name(addr uint64) string {
	if s := r.Symbols.Symbolize(addr); s != "" {
		return fmt.Sprintf("%#x <%s>", addr, s)
	}
	return fmt.Sprintf("%#x", addr)
}

// Pending is an instruction about to run: what the recorder read before
// it (Begin), kept until the state after it is known (Finish).
type Pending struct {
	before *x86.State
	inst   x86asm.Inst
	code   []byte
	mem    []annotate.Memory
	step   Step
}

// Before returns the state before the instruction.
func (p *Pending) Before() *x86.State { return p.before }

// PauseRanOn reports whether the step begun with p was a pause that a
// single step carried past the next instruction, as QEMU's TCG does (see
// Recorder.passPause), and if so returns the state right after the pause:
// the state before with RIP at the next instruction, since a pause
// changes nothing else. A debugger the recorder only watches (the proxy)
// records the pause with it, and what ran after it as a gap.
func (p *Pending) PauseRanOn(after *x86.State) (*x86.State, bool) {
	next := p.before.Val(x86.RIP) + uint64(p.inst.Len)
	if p.inst.Op != x86asm.PAUSE || after.Val(x86.RIP) == next {
		return nil, false
	}
	mid := *p.before
	mid.Set(x86.RIP, next)
	return &mid, true
}

// Begin reads what recording the instruction at before's RIP needs before
// it runs: its bytes (decoded once), the memory its operands read or
// write (annotate.MemoryBefore), and, under StackWords, the words at RSP.
// Recorder.Step steps the CPU between Begin and Finish; a caller that
// watches another debugger step (the proxy) calls them around the step it
// sees.
func (r *Recorder) Begin(ctx context.Context, before *x86.State) (*Pending, error) {
	if r.trace.Len() == 0 {
		r.trace.Header.Recorded = time.Now().UTC()
	}
	inst, code, err := r.Decode(ctx, before)
	if err != nil {
		return nil, err
	}
	rip := before.Val(x86.RIP)
	p := &Pending{before: before, inst: inst, code: code}
	p.step = Step{
		RIP:      Hex(rip),
		Symbol:   r.Symbols.Symbolize(rip),
		CPL:      before.CPL(),
		Bytes:    Bytes(code),
		Intel:    Disasm(inst, code, rip, annotate.OperandSymbols(inst, r.Symbols), Intel),
		ATT:      Disasm(inst, code, rip, annotate.OperandSymbols(inst, r.Symbols), ATT),
		Op:       inst.Op,
		Mnemonic: annotate.CanonicalMnemonic(inst, code),
		Regs:     before,
	}
	if r.StackWords > 0 {
		p.step.Stack = r.ReadStack(ctx, before.Val(x86.RSP), r.StackWords)
	}
	for _, rg := range annotate.MemoryBefore(inst, rip, before) {
		if b, err := r.T.ReadMemory(ctx, rg.Addr, rg.Len); err == nil {
			p.mem = append(p.mem, annotate.Memory{Addr: rg.Addr, Data: b})
		}
	}
	return p, nil
}

// Finish completes the step begun with p now that the CPU is at after: it
// reads the memory the instruction wrote (annotate.MemoryAfter), lists the
// registers it changed, annotates it (notes, such as interrupts taken on
// the way, follow the annotations), appends it to the trace and makes
// after the current state.
func (r *Recorder) Finish(ctx context.Context, p *Pending, after *x86.State, notes ...annotate.Effect) *Step {
	before, inst, rip, s := p.before, p.inst, p.before.Val(x86.RIP), p.step
	after.Sys = r.tables
	mem := p.mem
	for _, rg := range annotate.MemoryAfter(inst, rip, before, after) {
		if b, err := r.T.ReadMemory(ctx, rg.Addr, rg.Len); err == nil {
			mem = append(mem, annotate.Memory{Addr: rg.Addr, Data: b, After: true})
		}
	}
	s.Mem = mem
	for _, reg := range before.Changed(after) {
		if reg == x86.RIP {
			continue
		}
		s.Changed = append(s.Changed, Change{Reg: reg.String(), Old: Hex(before.Val(reg)), New: Hex(after.Val(reg))})
	}
	s.Index = r.trace.Len()
	as := annotate.Step{Index: s.Index, Addr: rip, Bytes: p.code, Inst: inst, Before: before, After: after, Mem: mem, Over: s.Over != nil}
	s.Effects = append(annotate.Annotate(as, r.Ctx), notes...)
	s.Events = annotate.Events(as, s.Effects, r.Ctx)

	switch {
	case s.Over != nil:
	case inst.Op == x86asm.CALL:
		r.depth++
	case (inst.Op == x86asm.RET) && r.depth > 0:
		r.depth--
	}
	r.cur = after
	return r.trace.Append(s)
}

// Step executes one instruction (or, under Over, a whole call), annotates
// it and appends it to the trace.
func (r *Recorder) Step(ctx context.Context) (*Step, error) {
	t0 := time.Now()
	defer func() { r.busy += time.Since(t0) }()
	before := r.cur
	p, err := r.Begin(ctx, before)
	if err != nil {
		return nil, err
	}
	inst, rip := p.inst, before.Val(x86.RIP)

	var after *x86.State
	var irqs []annotate.Effect
	switch {
	case inst.Op == x86asm.CALL && r.Over > 0 && r.depth+1 >= r.Over:
		after, err = r.stepOver(ctx, before, rip+uint64(inst.Len))
		if err == nil {
			p.step.Over = &Over{Target: r.callTarget(inst, rip, before), Depth: r.depth + 1}
		}
	case inst.Op == x86asm.PAUSE:
		after, err = r.passPause(ctx, before, rip+uint64(inst.Len))
		irqs = append(irqs, annotate.Effect{Kind: annotate.KindControl, Text: pauseNote})
	default:
		after, err = r.stepOnce(ctx, before)
	}
	note := func(what string) {
		irqs = append(irqs, annotate.Effect{Kind: annotate.KindControl, Text: what, Event: annotate.EventIRQ})
	}
	for n := 0; err == nil; n++ {
		v, frame, taken := r.interruptTaken(ctx, inst, before, after)
		if !taken {
			break
		}
		what := fmt.Sprintf("interrupt taken while stepping: %s at %s, not caused by this instruction", annotate.VectorName(v), r.name(after.Val(x86.RIP)))
		if r.AllowIRQ {
			if frame.rip == rip {
				what += "; it came before the instruction ran, which runs again after the handler"
			}
			note(what + "; its handler is recorded (--irq)")
			break
		}
		if n == maxIRQ {
			err = fmt.Errorf("%d interrupts in a row at %s: the guest is flooded with interrupts; try --irq to record them", n, r.name(rip))
			break
		}
		after, err = r.returnFromInterrupt(ctx, after, frame)
		if err != nil {
			break
		}
		r.trace.Header.IRQs++
		if after.R == before.R && after.Known == before.Known {
			// Taken before the instruction ran: run it now.
			note(what + fmt.Sprintf("; it came before the instruction, its handler ran to the return to %s and is left out", r.name(frame.rip)))
			after, err = r.stepOnce(ctx, before)
			continue
		}
		note(what + fmt.Sprintf("; its handler ran to the return to %s and is left out", r.name(frame.rip)))
	}
	if err != nil {
		return nil, err
	}
	return r.Finish(ctx, p, after, irqs...), nil
}

// ReadStack reads up to n words at rsp. The read is split at the page
// boundary so that a stack near the top of its mapping (the first user
// frames, with an unmapped guard page above) still gives the words below
// the boundary; words that cannot be read are left off.
func (r *Recorder) ReadStack(ctx context.Context, rsp uint64, n int) []Hex {
	var out []Hex
	want := 8 * n
	for addr := rsp; want > 0; {
		chunk := min(want, int(4096-addr%4096))
		b, err := r.T.ReadMemory(ctx, addr, chunk)
		for i := 0; i+8 <= len(b); i += 8 {
			out = append(out, Hex(le64(b[i:])))
		}
		if err != nil || len(b) < chunk {
			break
		}
		addr += uint64(chunk)
		want -= chunk
	}
	return out
}

// maxSpurious bounds how often a single step may come back with nothing
// executed before the stop is taken as a real one (a jump to itself).
const maxSpurious = 3

// stepOnce single-steps one instruction. QEMU's stub now and then reports a
// single-step stop before the instruction has run (TCG retranslating the
// block, say): every register, RIP included, is as it was. Such a stop is
// not an instruction, so the step is repeated, and the header counts it.
func (r *Recorder) stepOnce(ctx context.Context, before *x86.State) (*x86.State, error) {
	for i := 0; ; i++ {
		after, err := r.T.Step(ctx)
		if err != nil || i == maxSpurious || after.R != before.R || after.Known != before.Known {
			return after, err
		}
		r.trace.Header.SpuriousStops++
	}
}

// pauseNote says on a pause step why the recorder moved RIP itself.
const pauseNote = "stepped by moving RIP past the pause: a pause changes nothing else, and QEMU's TCG would run the next instruction in the same single step"

// passPause carries out a pause instruction by setting RIP to next, the
// instruction after it. Single-stepping a pause under TCG executes it and
// the instruction after it in one step, with no stop between: QEMU's
// helper for pause leaves the translation block to let other vCPUs run,
// before the end of the block where the single-step trap is raised
// (observed with gdb's stepi on QEMU 7.2 and 10.0.2: `pause; nop` at
// 0x7c00 stops at 0x7c03). Architecturally a pause only moves RIP (it is
// a spin-wait hint), so writing RIP records exactly what the CPU does and
// keeps one step per instruction.
func (r *Recorder) passPause(ctx context.Context, before *x86.State, next uint64) (*x86.State, error) {
	if err := r.T.WriteRegister(ctx, x86.RIP, next); err != nil {
		return nil, fmt.Errorf("step over pause at %s: %w", r.name(before.Val(x86.RIP)), err)
	}
	after, err := r.T.State(ctx)
	if err != nil {
		return nil, err
	}
	if got := after.Val(x86.RIP); got != next {
		return nil, fmt.Errorf("step over pause at %s: rip is %#x after writing %#x", r.name(before.Val(x86.RIP)), got, next)
	}
	return after, nil
}

func (r *Recorder) callTarget(inst x86asm.Inst, rip uint64, st *x86.State) string {
	if rel, ok := inst.Args[0].(x86asm.Rel); ok {
		return r.name(rip + uint64(inst.Len) + uint64(int64(rel)))
	}
	return inst.Args[0].String()
}

// stepOver runs a call to its return, with the stack pointer as it was
// before the call.
func (r *Recorder) stepOver(ctx context.Context, before *x86.State, ret uint64) (*x86.State, error) {
	return r.continueTo(ctx, ret, before.Val(x86.RSP), true, fmt.Sprintf("step over the call at %s", r.name(before.Val(x86.RIP))))
}

// continueTo lets the guest run until it is at ret with RSP equal to rsp: a
// hardware breakpoint at ret, continue until the CPU is there with that
// stack pointer (so that a recursive or concurrent use of the same code
// does not stop it early), and the breakpoint removed on every path.
//
// With moved, a stop at ret with another RSP is taken too once the return
// address the call pushed is gone from below rsp: a callee such as Linux's
// error_entry returns with the stack moved (the registers it saved left on
// it, or the frame copied to the task stack). While the return address is
// still there, the stop is a recursive use of the code and is run past.
func (r *Recorder) continueTo(ctx context.Context, ret, rsp uint64, moved bool, what string) (_ *x86.State, err error) {
	if err := r.T.Conn.SetBreakpoint(ctx, gdbremote.Hardware, ret, 1); err != nil {
		return nil, fmt.Errorf("%s: breakpoint at %s: %w", what, r.name(ret), err)
	}
	defer r.clearBreakpoint(ctx, ret, &err)
	for {
		// Only the followed vCPU runs, so that another vCPU running the
		// same code cannot stop it.
		if _, err := r.T.ContinueFollowed(ctx); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		st, err := r.T.State(ctx)
		if err != nil {
			return nil, err
		}
		if st.Val(x86.RIP) != ret {
			return nil, fmt.Errorf("%s: stopped at %s, not at %s", what, r.name(st.Val(x86.RIP)), r.name(ret))
		}
		if sp := st.Val(x86.RSP); sp == rsp || moved && !r.awaited(ctx, ret, rsp) {
			return st, nil
		}
	}
}

// awaited reports whether the return address a call pushed below rsp
// is still on the stack: the call has not returned, and a stop at its
// return address with another RSP is a recursive use of the code.
func (r *Recorder) awaited(ctx context.Context, ret, rsp uint64) bool {
	b, err := r.T.ReadMemory(ctx, rsp-8, 8)
	return err == nil && le64(b) == ret
}

// maxIRQ bounds how many interrupts in a row one step may run over.
const maxIRQ = 16

// irqFrame is where an interrupt returns to: the RIP and RSP of the frame
// the CPU pushed (an external interrupt or an NMI pushes no error code).
type irqFrame struct{ rip, rsp uint64 }

// interruptTaken says whether the CPU, in a step from before to after,
// took an interrupt the instruction did not cause, and returns its vector
// and where it returns to. That is possible only where the single-step
// flags let interrupts in. It is one when RIP landed on the handler of an
// external interrupt vector (32-255, with interrupts enabled before, and
// not the vector of an int n) or of an NMI, at CPL 0, with a frame on the
// stack that returns to the interrupted code's CS.
func (r *Recorder) interruptTaken(ctx context.Context, inst x86asm.Inst, before, after *x86.State) (int, irqFrame, bool) {
	if r.flags >= 0 && r.flags&gdbremote.SStepNoIRQ != 0 || after.CPL() != 0 {
		return -1, irqFrame{}, false
	}
	v := r.vectorAt(ctx, after.Val(x86.RIP))
	switch {
	case v < 0, v < 32 && v != 2:
		return -1, irqFrame{}, false
	case v >= 32 && x86.Flags(before.Val(x86.RFLAGS))&x86.FlagIF == 0:
		return -1, irqFrame{}, false
	case inst.Op == x86asm.INT:
		if imm, ok := inst.Args[0].(x86asm.Imm); ok && int(imm) == v {
			return -1, irqFrame{}, false
		}
	}
	// RIP, CS, RFLAGS, RSP, SS.
	b, err := r.T.ReadMemory(ctx, after.Val(x86.RSP), 40)
	if err != nil || len(b) < 40 || le64(b[8:])&0xffff != before.Val(x86.CS)&0xffff {
		return -1, irqFrame{}, false
	}
	return v, irqFrame{rip: le64(b), rsp: le64(b[24:])}, true
}

// returnFromInterrupt runs the handler of an interrupt just taken (the
// CPU at its first instruction, at) to its return.
func (r *Recorder) returnFromInterrupt(ctx context.Context, at *x86.State, f irqFrame) (*x86.State, error) {
	st, err := r.continueTo(ctx, f.rip, f.rsp, false, fmt.Sprintf("run the interrupt handler at %s to its return", r.name(at.Val(x86.RIP))))
	if err != nil {
		return nil, err
	}
	st.Sys = r.tables
	return st, nil
}

// vectorAt returns the vector whose IDT gate points at addr, or -1. The
// IDT is read once (again when IDTR moves).
func (r *Recorder) vectorAt(ctx context.Context, addr uint64) int {
	if r.tables == nil {
		return -1
	}
	if r.idt == nil || r.idtBase != r.tables.IDTBase {
		n := min((int(r.tables.IDTLimit)+1)/16, 256)
		b, err := r.T.ReadMemory(ctx, r.tables.IDTBase, 16*n)
		if err != nil {
			return -1
		}
		r.idt, r.idtBase = make(map[uint64]int), r.tables.IDTBase
		for v := 0; v < n && 16*v+16 <= len(b); v++ {
			if g, ok := x86.DecodeGate(b[16*v:]); ok && g.Present {
				if _, dup := r.idt[g.Offset]; !dup {
					r.idt[g.Offset] = v
				}
			}
		}
	}
	if v, ok := r.idt[addr]; ok {
		return v
	}
	return -1
}

// StopReason says why Run ended.
type StopReason string

// Reasons Run stops for.
const (
	StopUser    StopReason = "returned to user mode"
	StopAddress StopReason = "reached the stop address"
	StopBudget  StopReason = "step budget exhausted"
	StopCancel  StopReason = "interrupted"
	StopEvent   StopReason = "reached the event"
	StopOnce    StopReason = "back after the first instruction without entering the kernel"
)

// Until is a stop condition for Run, checked after each step; it returns a
// reason to stop, or "" to go on.
type Until func(s *Step, now *x86.State) StopReason

// BackInUser stops when the CPU is at CPL 3 again after having been in the
// kernel. When the first instruction does not enter the kernel (the vDSO
// baseline: a read of kernel-provided data, or a call into the vDSO), it
// stops once the CPU reaches the instruction after it.
func BackInUser() Until {
	entered, started := false, false
	var next uint64
	return func(s *Step, now *x86.State) StopReason {
		if !started {
			started = true
			next = uint64(s.RIP) + uint64(len(s.Bytes))
		}
		if now.CPL() != 3 {
			entered = true
			return ""
		}
		if entered {
			return StopUser
		}
		if now.Val(x86.RIP) == next {
			return StopOnce
		}
		return ""
	}
}

// Run steps until one of the conditions says stop, the budget runs out, or
// ctx is cancelled (ctrl-c); what was recorded stays in the trace either
// way, and the reason is stored in its header.
func (r *Recorder) Run(ctx context.Context, conds ...Until) (StopReason, error) {
	defer r.noteCPUs(ctx, false)
	budget := r.Budget
	if budget <= 0 {
		budget = DefaultBudget
	}
	for n := 0; ; n++ {
		if n >= budget {
			return r.stop(StopBudget), nil
		}
		if ctx.Err() != nil {
			return r.stop(StopCancel), nil
		}
		s, err := r.Step(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return r.stop(StopCancel), nil
			}
			r.stop("error: " + StopReason(err.Error()))
			return "", err
		}
		for _, c := range conds {
			if why := c(s, r.cur); why != "" {
				return r.stop(why), nil
			}
		}
	}
}

func (r *Recorder) stop(why StopReason) StopReason {
	r.trace.Header.Stop = string(why)
	return why
}

// noteCPUs names, for a guest with several vCPUs, the one followed and
// where the others are: at the start of the trace (start) or at its end.
// The others are read through Hg while QEMU holds them stopped; one that
// cannot be read is said so, not left out.
func (r *Recorder) noteCPUs(ctx context.Context, start bool) {
	me, ok := r.T.Followed()
	if !ok {
		return
	}
	h := &r.trace.Header
	if start {
		h.CPU = &CPU{Index: me.Index, Thread: me.Thread, Count: len(r.T.CPUs())}
		if r.cur != nil {
			if gs, ok := r.cur.KernelGS(); ok {
				h.CPU.GSBase = Hex(gs)
			}
		}
		h.OtherCPUs = nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	for _, c := range r.T.CPUs() {
		if c.Thread == me.Thread {
			continue
		}
		var p CPUPlace
		st, err := r.T.Peek(ctx, c.Thread)
		if err != nil {
			p = CPUPlace{CPL: -1, Err: err.Error()}
		} else {
			rip := st.Val(x86.RIP)
			p = CPUPlace{RIP: Hex(rip), Symbol: r.Symbols.Symbolize(rip), CPL: int(st.Val(x86.CS) & 3)}
			if gs, ok := st.KernelGS(); ok {
				p.GSBase = Hex(gs)
			}
		}
		if start {
			h.OtherCPUs = append(h.OtherCPUs, OtherCPU{Index: c.Index, Thread: c.Thread, Start: p, End: p})
			continue
		}
		for i := range h.OtherCPUs {
			if h.OtherCPUs[i].Thread == c.Thread {
				h.OtherCPUs[i].End = p
			}
		}
	}
}

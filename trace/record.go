package trace

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/target"
)

// DefaultBudget is the default most instructions a recording steps.
const DefaultBudget = 100_000

// Mechanism names a way into the kernel.
type Mechanism string

// The mechanisms sctrace knows. Vdso enters no kernel at all: it is the
// baseline of reading kernel-provided data from user mode.
const (
	Syscall  Mechanism = "syscall"
	Int80    Mechanism = "int80"
	Sysenter Mechanism = "sysenter"
	CallGate Mechanism = "callgate"
	UD2      Mechanism = "ud2"
	Vdso     Mechanism = "vdso"
)

// Mechanisms lists every mechanism, in the order the teaching kernel's
// trace mode calls them.
var Mechanisms = []Mechanism{Syscall, Int80, Sysenter, CallGate, UD2, Vdso}

// ParseMechanism checks a mechanism name; "" means any.
func ParseMechanism(s string) (Mechanism, error) {
	if s == "" || s == "any" {
		return "", nil
	}
	for _, m := range Mechanisms {
		if string(m) == s {
			return m, nil
		}
	}
	return "", fmt.Errorf("unknown mechanism %q (want syscall, int80, sysenter, callgate, ud2 or vdso)", s)
}

// Classify says which mechanism an instruction enters the kernel by, or ""
// for an instruction that does not (ud2 counts only when asked, since it is
// an ordinary fault elsewhere).
func Classify(inst x86asm.Inst, withUD2 bool) Mechanism {
	switch inst.Op {
	case x86asm.SYSCALL:
		return Syscall
	case x86asm.INT:
		return Int80 // any int n; the vector is in the operand
	case x86asm.SYSENTER:
		return Sysenter
	case x86asm.LCALL:
		return CallGate
	case x86asm.UD2:
		if withUD2 {
			return UD2
		}
	}
	return ""
}

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
	// AllowIRQ lets interrupts and timers run while single-stepping; by
	// default QEMU masks them.
	AllowIRQ bool

	trace  *Trace
	cur    *target.State
	tables *target.SysRegs // GDTR, IDTR and TR, attached to every state
	depth  int
	start  time.Time
	busy   time.Duration
}

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
	return &Recorder{
		T:       t,
		Symbols: syms,
		Ctx:     &annotate.Context{Symbols: sym, Regions: regions, Knowledge: annotate.NewKnowledge()},
		trace:   &Trace{Format: Format, Version: Version, Header: hdr},
	}
}

// Init reads the current state and the system registers, and sets QEMU's
// single-step flags (interrupts and timers masked unless AllowIRQ).
func (r *Recorder) Init(ctx context.Context) error {
	flags := gdbremote.SStepEnable | gdbremote.SStepNoIRQ | gdbremote.SStepNoTimer
	r.trace.Header.Stepping = "single-step with interrupts and timers masked (QEMU sstep NOIRQ|NOTIMER)"
	if r.AllowIRQ {
		flags = gdbremote.SStepEnable
		r.trace.Header.Stepping = "single-step with interrupts and timers allowed (QEMU sstep ENABLE only)"
	}
	if err := r.T.Conn.SetStepFlags(ctx, flags); err != nil {
		var ue *gdbremote.UnsupportedError
		if !errors.As(err, &ue) {
			return fmt.Errorf("set single-step flags: %w", err)
		}
		r.trace.Header.Stepping = "single-step (the stub has no qemu.sstep: interrupt masking unknown)"
	}
	st, err := r.T.State(ctx)
	if err != nil {
		return err
	}
	r.cur = st
	return r.readSys(ctx)
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
	tables.Segments = map[string]target.Segment{}
	for _, k := range []string{"TR", "LDT"} {
		if seg, ok := sys.Segments[k]; ok {
			tables.Segments[k] = seg
		}
	}
	r.tables = &tables
	return nil
}

// Current returns the state at the current stop.
func (r *Recorder) Current() *target.State { return r.cur }

// Trace returns the trace recorded so far, with its header brought up to
// date.
func (r *Recorder) Trace() *Trace {
	h := &r.trace.Header
	h.MSRs = r.Ctx.Knowledge.Sorted()
	h.Seconds = r.busy.Seconds()
	if r.busy > 0 {
		h.StepRate = float64(len(r.trace.Steps)) / r.busy.Seconds()
	}
	if len(r.trace.Steps) > 0 {
		r.trace.Final = r.cur
	}
	return r.trace
}

// Reset forgets the steps recorded so far (keeping what was learnt about
// MSRs), so that the next round trip starts a fresh trace.
func (r *Recorder) Reset() {
	r.trace.Steps = nil
	r.trace.Final = nil
	r.trace.Header.Stop = ""
	r.trace.Header.SpuriousStops = 0
	r.busy = 0
	r.depth = 0
}

// Decode reads and decodes the instruction at the current RIP.
func (r *Recorder) Decode(ctx context.Context, st *target.State) (x86asm.Inst, []byte, error) {
	rip := st.Val(target.RIP)
	code, err := r.T.ReadCode(ctx, st.Val(target.CR3), rip, 15)
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

// Step executes one instruction (or, under Over, a whole call), annotates
// it and appends it to the trace.
func (r *Recorder) Step(ctx context.Context) (*Step, error) {
	t0 := time.Now()
	defer func() { r.busy += time.Since(t0) }()
	before := r.cur
	inst, code, err := r.Decode(ctx, before)
	if err != nil {
		return nil, err
	}
	rip := before.Val(target.RIP)
	s := Step{
		Index:  len(r.trace.Steps),
		RIP:    Hex(rip),
		Symbol: r.Symbols.Symbolize(rip),
		CPL:    before.CPL(),
		Bytes:  Bytes(code),
		Intel:  Disasm(inst, code, rip, r.symname, Intel),
		ATT:    Disasm(inst, code, rip, r.symname, ATT),
		Regs:   before,
	}
	if r.StackWords > 0 {
		s.Stack = r.ReadStack(ctx, before.Val(target.RSP), r.StackWords)
	}
	var mem []annotate.Memory
	for _, rg := range annotate.MemoryBefore(inst, rip, before) {
		if b, err := r.T.ReadMemory(ctx, rg.Addr, rg.Len); err == nil {
			mem = append(mem, annotate.Memory{Addr: rg.Addr, Data: b})
		}
	}

	var after *target.State
	if inst.Op == x86asm.CALL && r.Over > 0 && r.depth+1 >= r.Over {
		after, err = r.stepOver(ctx, before, rip+uint64(inst.Len))
		if err == nil {
			s.Over = &Over{Target: r.callTarget(inst, rip, before), Depth: r.depth + 1}
		}
	} else {
		after, err = r.stepOnce(ctx, before)
	}
	if err != nil {
		return nil, err
	}
	after.Sys = r.tables
	for _, rg := range annotate.MemoryAfter(inst, rip, before, after) {
		if b, err := r.T.ReadMemory(ctx, rg.Addr, rg.Len); err == nil {
			mem = append(mem, annotate.Memory{Addr: rg.Addr, Data: b, After: true})
		}
	}
	s.Mem = mem
	for _, reg := range before.Changed(after) {
		if reg == target.RIP {
			continue
		}
		s.Changed = append(s.Changed, Change{Reg: reg.String(), Old: Hex(before.Val(reg)), New: Hex(after.Val(reg))})
	}
	as := annotate.Step{Index: s.Index, Addr: rip, Bytes: code, Inst: inst, Before: before, After: after, Mem: mem, Over: s.Over != nil}
	s.Effects = annotate.Annotate(as, r.Ctx)
	s.Events = annotate.Events(as, s.Effects, r.Ctx)

	switch {
	case s.Over != nil:
	case inst.Op == x86asm.CALL:
		r.depth++
	case (inst.Op == x86asm.RET) && r.depth > 0:
		r.depth--
	}
	r.trace.Steps = append(r.trace.Steps, s)
	r.cur = after
	return &r.trace.Steps[len(r.trace.Steps)-1], nil
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
func (r *Recorder) stepOnce(ctx context.Context, before *target.State) (*target.State, error) {
	for i := 0; ; i++ {
		after, err := r.T.Step(ctx)
		if err != nil || i == maxSpurious || after.R != before.R || after.Known != before.Known {
			return after, err
		}
		r.trace.Header.SpuriousStops++
	}
}

func (r *Recorder) symname(addr uint64) (string, uint64) {
	s, off, ok := r.Symbols.Lookup(addr)
	if !ok {
		return "", 0
	}
	return s.Name, addr - off
}

func (r *Recorder) callTarget(inst x86asm.Inst, rip uint64, st *target.State) string {
	if rel, ok := inst.Args[0].(x86asm.Rel); ok {
		return r.name(rip + uint64(inst.Len) + uint64(int64(rel)))
	}
	return inst.Args[0].String()
}

// stepOver runs a call to its return: a hardware breakpoint at the return
// address, continue until the CPU is back there with the stack pointer as
// it was before the call (so that a recursive or concurrent use of the same
// code does not stop it early), and the breakpoint removed on every path.
func (r *Recorder) stepOver(ctx context.Context, before *target.State, ret uint64) (*target.State, error) {
	rsp := before.Val(target.RSP)
	if err := r.T.Conn.SetBreakpoint(ctx, gdbremote.Hardware, ret, 1); err != nil {
		return nil, fmt.Errorf("step over: breakpoint at %s: %w", r.name(ret), err)
	}
	defer r.T.Conn.ClearBreakpoint(context.WithoutCancel(ctx), gdbremote.Hardware, ret, 1)
	for {
		if _, err := r.T.Conn.Continue(ctx); err != nil {
			return nil, fmt.Errorf("step over the call at %s: %w", r.name(before.Val(target.RIP)), err)
		}
		st, err := r.T.State(ctx)
		if err != nil {
			return nil, err
		}
		if st.Val(target.RIP) == ret && st.Val(target.RSP) == rsp {
			return st, nil
		}
		if st.Val(target.RIP) != ret {
			return nil, fmt.Errorf("step over: stopped at %s, not at the return address %s", r.name(st.Val(target.RIP)), r.name(ret))
		}
	}
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
type Until func(s *Step, now *target.State) StopReason

// BackInUser stops when the CPU is at CPL 3 again after having been in the
// kernel. When the first instruction does not enter the kernel (the vDSO
// baseline: a read of kernel-provided data, or a call into the vDSO), it
// stops once the CPU reaches the instruction after it.
func BackInUser() Until {
	entered, started := false, false
	var next uint64
	return func(s *Step, now *target.State) StopReason {
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
		if now.Val(target.RIP) == next {
			return StopOnce
		}
		return ""
	}
}

// AtAddress stops when RIP reaches addr.
func AtAddress(addr uint64) Until {
	return func(_ *Step, now *target.State) StopReason {
		if now.Val(target.RIP) == addr {
			return StopAddress
		}
		return ""
	}
}

// Run steps until one of the conditions says stop, the budget runs out, or
// ctx is cancelled (ctrl-c); what was recorded stays in the trace either
// way, and the reason is stored in its header.
func (r *Recorder) Run(ctx context.Context, conds ...Until) (StopReason, error) {
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

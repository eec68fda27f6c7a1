package trace

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/target"
	"github.com/sctrace/sctrace/x86"
)

// ToEntry lets the guest run until it stops at a user-mode instruction that
// enters the kernel by mechanism m (by syscall when m is ""), and starts a
// fresh trace there. It finds the instruction, in order of preference:
//   - by the teaching kernel's label for m (a hardware breakpoint on it);
//   - for syscall, by catching the kernel entry (LSTAR, from the symbol
//     entry_SYSCALL_64 or learnt from an earlier transition), reading the
//     user return address from RCX, and breaking on the instruction before
//     it the next time the user program runs it;
//   - for int $0x80, likewise from the handler in IDT entry 0x80 (found
//     through IDTR), reading the return address from the frame the CPU
//     pushed;
//   - by single-stepping user code until the next entering instruction.
//
// A page fault is found like any labelled instruction: the store at
// user_pagefault_insn, whose step then delivers the #PF, once the page it
// writes is seen not to be mapped: a store reached again after its fault
// (where the last round trip ended, or where the guest was stopped in the
// middle of the fault) runs unrecorded, and the next one is waited for.
// An interrupt
// cannot be stepped into (the recorder masks interrupts while stepping), so
// for irq the guest runs until the timer interrupt's handler is entered
// with a frame from user mode; see ToInterrupt.
//
// On a guest with several vCPUs the first entry on any of them is taken,
// or, with OnCPU set, the first on that vCPU: hits on the others are let
// through.
//
// Breakpoints are removed on every path, ctrl-c included.
func (r *Recorder) ToEntry(ctx context.Context, m mechanism.Mechanism) error {
	if m == "" {
		m = mechanism.Syscall
	}
	r.Reset()
	if err := r.checkOnCPU(); err != nil {
		return err
	}
	if m == mechanism.IRQ {
		return r.ToInterrupt(ctx)
	}
	if err := r.findEntry(ctx, m); err != nil {
		return err
	}
	return r.atStart(ctx)
}

// atStart reads the system registers where a trace starts and, on a guest
// with several vCPUs, notes which one it follows and where the others are.
func (r *Recorder) atStart(ctx context.Context) error {
	if err := r.readSys(ctx); err != nil {
		return err
	}
	r.noteCPUs(ctx, true)
	return nil
}

func (r *Recorder) findEntry(ctx context.Context, m mechanism.Mechanism) error {
	if a, ok := r.Symbols.Addr(m.UserLabel()); ok {
		if m == mechanism.PageFault {
			return r.toFault(ctx, a)
		}
		return r.runTo(ctx, a)
	}
	if m == mechanism.Syscall {
		if entry, ok := r.syscallEntry(); ok {
			if err := r.runTo(ctx, entry); err != nil {
				return err
			}
			site := r.cur.Val(x86.RCX) - 2
			code, err := r.T.ReadMemory(ctx, site, 2)
			if err == nil && code[0] == 0x0f && code[1] == 0x05 {
				return r.runTo(ctx, site)
			}
		}
	}
	if m == mechanism.Int80 {
		if handler, ok := r.vectorHandler(ctx, 0x80); ok {
			if err := r.runTo(ctx, handler); err != nil {
				return err
			}
			// The CPU pushed RIP (the instruction after the int), CS,
			// RFLAGS, RSP and SS; int $0x80 has no error code.
			frame, err := r.T.ReadMemory(ctx, r.cur.Val(x86.RSP), 16)
			if err == nil && le64(frame[8:])&3 == 3 {
				site := le64(frame) - 2
				code, err := r.T.ReadMemory(ctx, site, 2)
				if err == nil && code[0] == 0xcd && code[1] == 0x80 {
					return r.runTo(ctx, site)
				}
			}
		}
	}
	return r.stepToEntry(ctx, m)
}

// faultTries bounds how often toFault lets a labelled access that no
// longer faults run before it gives up.
const faultTries = 3

// toFault runs the guest to the labelled access at addr that is to page-fault,
// and checks that it will: the page it reaches must not be mapped yet (the
// stub cannot read it). A guest stopped while the kernel was handling that
// very fault comes back to the access once the page is mapped, and it then
// runs without a fault; such an access is let run and the next one waited
// for.
func (r *Recorder) toFault(ctx context.Context, addr uint64) error {
	for try := 1; ; try++ {
		if err := r.runTo(ctx, addr); err != nil {
			return err
		}
		inst, code, err := r.Decode(ctx, r.cur)
		if err != nil {
			return err
		}
		target, ok := annotate.MemoryAddress(inst, len(code), r.cur)
		if !ok {
			return nil // not a memory access: nothing to check
		}
		if _, err := r.T.ReadMemory(ctx, target, 1); err != nil {
			if se := (*gdbremote.StubError)(nil); errors.As(err, &se) && se.NotMapped() {
				return nil // not mapped: the access will fault
			}
			return err
		}
		if try == faultTries {
			return fmt.Errorf("the access at %s reaches %#x, which is mapped already, %d times in a row: it will not page-fault", r.name(addr), target, try)
		}
		if err := r.stepOff(ctx); err != nil {
			return err
		}
	}
}

// vectorHandler returns the handler of an interrupt vector from the IDT,
// read through the IDTR that `monitor info registers` gives.
func (r *Recorder) vectorHandler(ctx context.Context, vector int) (uint64, bool) {
	sys, err := r.T.SysRegs(ctx)
	if err != nil || sys.IDTLimit < uint32(vector*16+15) {
		return 0, false
	}
	b, err := r.T.ReadMemory(ctx, sys.IDTBase+uint64(vector)*16, 16)
	if err != nil {
		return 0, false
	}
	g, ok := x86.DecodeGate(b)
	if !ok || !g.Present || g.DPL != 3 {
		return 0, false
	}
	return g.Offset, true
}

// syscallEntry returns the address SYSCALL jumps to, if known.
func (r *Recorder) syscallEntry() (uint64, bool) {
	if a, ok := r.Symbols.Addr("entry_SYSCALL_64"); ok {
		return a, true
	}
	if m, ok := r.Ctx.Knowledge.MSRs[0xC0000082]; ok && m.Known == ^uint64(0) {
		return m.Value, true
	}
	return 0, false
}

// maxOtherCPUHits bounds how often runTo lets a breakpoint hit on
// another vCPU through while it waits for the one OnCPU names.
const maxOtherCPUHits = 10000

// runTo continues the guest to addr with a hardware breakpoint, on the
// vCPU OnCPU names when it is set.
func (r *Recorder) runTo(ctx context.Context, addr uint64) (err error) {
	if r.cur != nil && r.cur.Val(x86.RIP) == addr && r.onWantedCPU() {
		return nil
	}
	if err := r.T.Conn.SetBreakpoint(ctx, gdbremote.Hardware, addr, 1); err != nil {
		return fmt.Errorf("breakpoint at %s: %w", r.name(addr), err)
	}
	defer r.clearBreakpoint(ctx, addr, &err)
	for others := 0; ; others++ {
		if others == maxOtherCPUHits {
			me, _ := r.T.Followed()
			return fmt.Errorf("continue to %s on vCPU %d: it was reached %d times on other vCPUs (last on vCPU %d), never on vCPU %d", r.name(addr), *r.OnCPU, others, me.Index, *r.OnCPU)
		}
		if r.cur != nil && r.cur.Val(x86.RIP) == addr {
			// Stopped there on another vCPU: QEMU would stop again at
			// once on the breakpoint it resumes from.
			if err := r.stepOffBreakpoint(ctx, addr); err != nil {
				return err
			}
		}
		sr, st, err := r.resume(ctx, "continue to "+r.name(addr))
		if err != nil {
			return err
		}
		if got := st.Val(x86.RIP); got != addr {
			return fmt.Errorf("continue to %s: stopped at %s instead (%s)", r.name(addr), r.name(got), sr)
		}
		if r.onWantedCPU() {
			return nil
		}
	}
}

// resume lets every vCPU run until one stops and follows that one
// (Target.ContinueAll: the awaited call may come on any of them), then
// makes the state it stopped in current. A guest that ended is an error
// wrapping target.ErrExited. what names the wait in errors.
func (r *Recorder) resume(ctx context.Context, what string) (gdbremote.StopReply, *x86.State, error) {
	sr, err := r.T.ContinueAll(ctx)
	if err != nil {
		return sr, nil, fmt.Errorf("%s: %w", what, err)
	}
	if sr.Kind == 'W' || sr.Kind == 'X' {
		return sr, nil, fmt.Errorf("%s: %w (%s)", what, target.ErrExited, sr)
	}
	st, err := r.T.State(ctx)
	if err != nil {
		return sr, nil, err
	}
	st.Sys = r.tables
	r.cur = st
	return sr, st, nil
}

// onWantedCPU reports whether the vCPU followed is the one OnCPU names
// (true when OnCPU is nil or the guest has one vCPU).
func (r *Recorder) onWantedCPU() bool {
	if r.OnCPU == nil || !r.T.SMP() {
		return true
	}
	me, ok := r.T.Followed()
	return ok && me.Index == *r.OnCPU
}

// checkOnCPU checks that OnCPU names a vCPU the guest has.
func (r *Recorder) checkOnCPU() error {
	if r.OnCPU == nil || !r.T.SMP() {
		return nil
	}
	var have []string
	for _, c := range r.T.CPUs() {
		if c.Index == *r.OnCPU {
			return nil
		}
		have = append(have, strconv.Itoa(c.Index))
	}
	return fmt.Errorf("%w: vCPU %d asked for, the guest has vCPUs %s", target.ErrNoCPU, *r.OnCPU, strings.Join(have, ", "))
}

// stepToEntry single-steps until the next user instruction that enters the
// kernel by m. Started in the kernel (the guest stopped inside a system
// call, say), it first steps back out to user mode; the budget bounds both
// parts, so a kernel that never returns (an idle loop) gives an error
// rather than a hang.
func (r *Recorder) stepToEntry(ctx context.Context, m mechanism.Mechanism) error {
	budget := r.Budget
	if budget <= 0 {
		budget = DefaultBudget
	}
	start := r.cur.Val(x86.RIP)
	if !r.onWantedCPU() {
		me, _ := r.T.Followed()
		return fmt.Errorf("find the next %s on vCPU %d: without the symbol of its user instruction or the kernel's entry sctrace single-steps the vCPU it follows, vCPU %d; give --symbols", m, *r.OnCPU, me.Index)
	}
	if err := CheckBooted(r.cur); err != nil {
		return fmt.Errorf("find the next %s: %w: let it boot and attach again, attach with --boot-wait (sctrace runs it until a 64-bit kernel is running), or give --symbols so sctrace can continue to the kernel's entry point", m, err)
	}
	for n := 0; n < budget; n++ {
		if r.cur.CPL() == 3 {
			inst, _, err := r.Decode(ctx, r.cur)
			if err != nil {
				return err
			}
			if mechanism.Classify(inst, m == mechanism.UD2) == m {
				return nil
			}
		}
		st, err := r.T.Step(ctx)
		if err != nil {
			return err
		}
		st.Sys = r.tables
		r.cur = st
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if r.cur.CPL() != 3 {
		return fmt.Errorf("find the next %s: started in the kernel at %s and still there after %d steps; give --symbols so sctrace can break where the user program enters", m, r.name(start), budget)
	}
	return fmt.Errorf("find the next %s: no such instruction within %d steps", m, budget)
}

// ErrNotBooted is returned (wrapped) when the guest is not yet running a
// 64-bit kernel, as when QEMU was started with -S and sits at the reset
// vector: there is no system call to find by stepping until it has booted.
var ErrNotBooted = errors.New("the guest has not booted a 64-bit kernel yet")

// CheckBooted returns nil when st is a state a system call can come from,
// and otherwise an error wrapping ErrNotBooted that says what the CPU is
// running (see BootStage).
func CheckBooted(st *x86.State) error {
	if stage := BootStage(st); stage != "" {
		return fmt.Errorf("%w: the CPU is in %s", ErrNotBooted, stage)
	}
	return nil
}

// BootStage says what the CPU runs when it is not yet under a 64-bit
// kernel: real mode (CR0.PE clear: the firmware, where QEMU started with -S
// waits at the reset vector) or protected mode without long mode (EFER.LMA
// clear: a boot loader or 32-bit code). It returns "" otherwise, and for
// registers the stub did not report, which prove nothing. Code in
// compatibility mode (EFER.LMA set, a 32-bit CS) runs under a 64-bit
// kernel, so it counts as booted.
func BootStage(st *x86.State) string {
	cr0, ok1 := st.Get(x86.CR0)
	efer, ok2 := st.Get(x86.EFER)
	rip := st.Val(x86.RIP)
	switch {
	case ok1 && x86.CR0Flags(cr0)&x86.CR0PE == 0:
		return fmt.Sprintf("real mode at %#x (the firmware; QEMU started with -S waits there)", rip)
	case ok2 && x86.EFERFlags(efer)&x86.EFERLMA == 0:
		return fmt.Sprintf("protected mode without long mode at %#x (a boot loader or 32-bit code)", rip)
	}
	return ""
}

// KernelRunning reports whether st shows a 64-bit kernel at work: long
// mode (EFER.LMA set) with the CPU either in the kernel half of the address
// space or in user mode. A boot stage that runs in long mode at low,
// identity-mapped addresses (Linux's decompressor) does not count.
func KernelRunning(st *x86.State) bool {
	if CheckBooted(st) != nil {
		return false
	}
	if efer, ok := st.Get(x86.EFER); !ok || x86.EFERFlags(efer)&x86.EFERLMA == 0 {
		return false
	}
	return st.CPL() == 3 || x86.CanonicalKernel(st.Val(x86.RIP))
}

// le64 reads a little-endian word.
func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }

// TimerHandlers names the handlers a timer interrupt enters, in order of
// preference: the teaching kernel's asm_irq_timer (the PIT on IRQ0, vector
// 0x20) and Linux's asm_sysvec_apic_timer_interrupt (the local APIC timer,
// vector 0xec).
var TimerHandlers = []string{"asm_irq_timer", "asm_sysvec_apic_timer_interrupt"}

// maxKernelIRQs bounds how many interrupts that came in kernel mode (or
// outside the labelled wait loop) ToInterrupt lets pass before it gives up.
const maxKernelIRQs = 10_000

// loopTries is how many interrupts from user mode outside the labelled
// wait loop ToInterrupt lets pass before it takes one anyway.
const loopTries = 20

// ToInterrupt lets the guest run until a timer interrupt arrives in user
// mode, and starts a fresh trace whose first step is that arrival. A
// hardware breakpoint on the handler (TimerHandlers, found by symbol)
// stops the guest as the handler is entered; the frame the CPU pushed says
// where the interrupt came from, and one that did not come from CPL 3 is
// let go. When the guest program labels its wait loop (user_irq_insn,
// user_irq_ret), an interrupt from elsewhere in user mode is let go too,
// up to loopTries times: a host that stalls the guest can make the timer
// expire before the program reaches the loop, and then any user
// instruction will do. The first step is the
// interrupted user instruction: the state before it is the one the CPU
// saved in the frame (an interrupt changes nothing else), the state after
// it the handler's first instruction. The instruction itself has not run;
// it runs after the handler's iretq, where a recording with BackInUser
// stops.
func (r *Recorder) ToInterrupt(ctx context.Context) (err error) {
	r.Reset()
	var handler uint64
	var name string
	for _, n := range TimerHandlers {
		if a, ok := r.Symbols.Addr(n); ok {
			handler, name = a, n
			break
		}
	}
	if name == "" {
		return fmt.Errorf("find the next irq: no timer interrupt handler among the symbols (%s); give --symbols for the guest kernel", strings.Join(TimerHandlers, ", "))
	}
	loopFrom, ok1 := r.Symbols.Addr(mechanism.IRQ.UserLabel())
	loopTo, ok2 := r.Symbols.Addr(mechanism.IRQ.UserReturnLabel())
	inLoop := func(rip uint64) bool { return !ok1 || !ok2 || rip == loopFrom || rip == loopTo }
	outside := 0 // interrupts from user mode outside the loop

	if err := r.T.Conn.SetBreakpoint(ctx, gdbremote.Hardware, handler, 1); err != nil {
		return fmt.Errorf("breakpoint at %s: %w", r.name(handler), err)
	}
	defer r.clearBreakpoint(ctx, handler, &err)
	var frame []byte
	for n := 0; ; n++ {
		if n == maxKernelIRQs {
			return fmt.Errorf("find the next irq: %d interrupts reached %s, none from the user program", n, name)
		}
		sr, st, err := r.resume(ctx, "continue to "+r.name(handler))
		if err != nil {
			return err
		}
		if got := st.Val(x86.RIP); got != handler {
			return fmt.Errorf("continue to %s: stopped at %s instead (%s)", r.name(handler), r.name(got), sr)
		}
		// An external interrupt pushes no error code: RIP, CS, RFLAGS,
		// RSP, SS.
		frame, err = r.T.ReadMemory(ctx, st.Val(x86.RSP), 40)
		if err != nil {
			return fmt.Errorf("read the interrupt frame at %#x: %w", st.Val(x86.RSP), err)
		}
		if le64(frame[8:])&3 == 3 && r.onWantedCPU() {
			if inLoop(le64(frame)) || outside == loopTries {
				break
			}
			outside++
		}
		// Not this one. QEMU would stop again at once on a breakpoint
		// at the instruction it resumes from, so step past it first.
		if err := r.stepOffBreakpoint(ctx, handler); err != nil {
			return err
		}
	}
	if err := r.atStart(ctx); err != nil {
		return err
	}
	before := *r.cur
	before.Sys = r.tables
	for i, reg := range []x86.Reg{x86.RIP, x86.CS, x86.RFLAGS, x86.RSP, x86.SS} {
		before.Set(reg, le64(frame[8*i:]))
	}
	p, err := r.Begin(ctx, &before)
	if err != nil {
		return err
	}
	after := *r.cur
	note := annotate.Effect{Kind: annotate.KindControl, Event: annotate.EventIRQ, Text: fmt.Sprintf(
		"caught at %s by a breakpoint: this step is the interrupt's arrival, not a single step; the state before it is the one the CPU saved in the frame (an interrupt changes only RIP, CS, RFLAGS, RSP and SS), and %s has not run yet", name, p.step.Mnemonic)}
	r.Finish(ctx, p, &after, note)
	return nil
}

// stepOffBreakpoint moves the guest, stopped on the hardware breakpoint at
// addr, one instruction on: the breakpoint is lifted for a single step and
// set again.
func (r *Recorder) stepOffBreakpoint(ctx context.Context, addr uint64) error {
	if err := r.T.Conn.ClearBreakpoint(ctx, gdbremote.Hardware, addr, 1); err != nil {
		return fmt.Errorf("lift the breakpoint at %s: %w", r.name(addr), err)
	}
	_, serr := r.T.Step(ctx)
	if err := r.T.Conn.SetBreakpoint(context.WithoutCancel(ctx), gdbremote.Hardware, addr, 1); err != nil {
		return fmt.Errorf("breakpoint at %s: %w", r.name(addr), err)
	}
	if serr != nil {
		return fmt.Errorf("step off the breakpoint at %s: %w", r.name(addr), serr)
	}
	return nil
}

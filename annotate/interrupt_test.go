package annotate

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sctrace/sctrace/x86"
)

const (
	idtBase  = 0xfffffe0000000000
	tssBase  = 0xfffffe0000003000
	gdtBase  = 0xfffffe0000001000
	int80    = 0xffffffff81001000
	udEntry  = 0xffffffff81002000
	pfEntry  = 0xffffffff81003000
	tssRSP0  = kstackTop + 8 // not 16-aligned: the CPU aligns it
	frameRSP = kstackTop - 40
)

// sysRegs returns the `info registers` extras for a state at cpl.
func sysRegs(cpl int) *x86.SysRegs {
	return &x86.SysRegs{
		CPL:      cpl,
		Segments: map[string]x86.Segment{"TR": {Selector: 0x40, Base: tssBase, Limit: 0x4087}},
		GDTBase:  gdtBase, GDTLimit: 0x7f,
		IDTBase: idtBase, IDTLimit: 0xfff,
	}
}

// withSys attaches SysRegs to a step's states.
func withSys(s Step) Step {
	s.Before.Sys = sysRegs(cpl(s.Before))
	s.After.Sys = sysRegs(cpl(s.After))
	return s
}

var int80After = with(user, regs{
	x86.RIP: int80, x86.CS: 0x10, x86.SS: 0, x86.RSP: frameRSP, x86.RFLAGS: 0x46,
})

// int80Frame is what the CPU pushes for int $0x80 at user RIP.
func int80Frame(rip uint64) Memory {
	return Memory{Addr: frameRSP, Data: qwords(rip, 0x33, 0x246, userRSP, 0x2b, 0), After: true}
}

func idtEntry(v int, g []byte) Memory { return Memory{Addr: idtBase + uint64(v)*16, Data: g} }

func tssMem(rsp0 uint64) Memory {
	return Memory{Addr: tssBase, Data: tssBytes(rsp0, map[int]uint64{1: 0xfffffe0000010000})}
}

func TestInt(t *testing.T) {
	gate80 := idtEntry(0x80, gateBytes(int80, 0x10, 0, 0xe, 3))
	tests := []struct {
		name          string
		before, after regs
		mem           []Memory
		sys           bool
		checks        []check
		clean         bool
	}{
		{
			name: "int 0x80 with IDT, TSS and frame", before: user, after: int80After, sys: true, clean: true,
			mem: []Memory{gate80, tssMem(tssRSP0), int80Frame(userRIP + 2)},
			checks: []check{
				note(KindPrivilege, "int $0x80: software interrupt, vector 0x80 delivered: CPL 3 → 0"),
				ok(KindControl, "rip = 0xffffffff81001000 <asm_int80_syscall>: the handler in IDT[0x80] (interrupt gate, DPL 3, IST 0"),
				ok(KindFrame, "CPU pushed at 0xffffc90000003fd8: rip 0x401002, cs 0x33, rflags 0x246, rsp 0x7ffc00001238, ss 0x2b"),
				ok(KindStack, "stack switch: user-half stack → kernel-half stack, rsp = 0xffffc90000003fd8 from TSS.RSP0 0xffffc90000004008"),
				ok(KindRegister, "ss = 0x0: on a privilege change"),
				ok(KindPrivilege, "IF 1 → 0: an interrupt gate clears IF"),
			},
		},
		{
			name: "frame holds the wrong return address", before: user, after: int80After, sys: true,
			mem:    []Memory{gate80, tssMem(tssRSP0), int80Frame(userRIP)},
			checks: []check{finding(KindFrame, "pushed rip = 0x401000 at 0xffffc90000003fd8, expected 0x401002 (the next instruction)")},
		},
		{
			name: "handler is not the gate's", before: user, after: with(int80After, regs{x86.RIP: int80 + 0x10}), sys: true,
			mem:    []Memory{gate80, tssMem(tssRSP0), int80Frame(userRIP + 2)},
			checks: []check{finding(KindControl, "but IDT[0x80] points to 0xffffffff81001000")},
		},
		{
			name: "stack is not TSS.RSP0", before: user, after: with(int80After, regs{x86.RSP: frameRSP - 0x100}), sys: true,
			mem:    []Memory{gate80, tssMem(tssRSP0), {Addr: frameRSP - 0x100, Data: qwords(userRIP+2, 0x33, 0x246, userRSP, 0x2b, 0), After: true}},
			checks: []check{finding(KindStack, "expected 0xffffc90000003fd8")},
		},
		{
			name: "interrupt gate left IF set", before: user, after: with(int80After, regs{x86.RFLAGS: 0x246}), sys: true,
			mem:    []Memory{gate80, tssMem(tssRSP0), int80Frame(userRIP + 2)},
			checks: []check{finding(KindPrivilege, "an interrupt gate clears IF")},
		},
		{
			name: "trap gate keeps IF", before: user, after: with(int80After, regs{x86.RFLAGS: 0x246}), sys: true, clean: true,
			mem:    []Memory{idtEntry(0x80, gateBytes(int80, 0x10, 0, 0xf, 3)), tssMem(tssRSP0), int80Frame(userRIP + 2)},
			checks: []check{ok(KindPrivilege, "a trap gate leaves IF alone")},
		},
		{
			name: "no memory read: RSP0 inferred", before: user, after: int80After, clean: true,
			checks: []check{
				note(KindStack, "TSS.RSP0 & ~0xf = 0xffffc90000004000 (inferred"),
				note(KindCheck, "the interrupt frame at 0xffffc90000003fd8 was not read"),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mkStep(t, 1, insInt80, userRIP, tt.before, tt.after, tt.mem...)
			if tt.sys {
				s = withSys(s)
			}
			c := &Context{Symbols: testSyms}
			effects := Annotate(s, c)
			expectEffects(t, effects, tt.checks...)
			if tt.clean {
				expectNoFinding(t, effects)
			} else {
				expectFinding(t, effects)
			}
			if ev := Events(s, effects, c); !hasEvent(ev, EventInterrupt) || !hasEvent(ev, EventCPLChange) {
				t.Errorf("events %v lack interrupt and cpl-change", ev)
			}
		})
	}
}

func hasEvent(evs []Event, e Event) bool {
	for _, x := range evs {
		if x == e {
			return true
		}
	}
	return false
}

func TestIntLearnsRSP0AndFrameTop(t *testing.T) {
	c := &Context{}
	Annotate(mkStep(t, 7, insInt80, userRIP, user, int80After), c)
	k := c.Knowledge
	if k.RSP0 == nil || k.RSP0.Value != kstackTop || k.RSP0.Known != ^uint64(15) || k.RSP0.Source != SourceInferred {
		t.Errorf("RSP0 = %+v, want %#x with the low 4 bits unknown", k.RSP0, uint64(kstackTop))
	}
	if k.FrameTop == nil || k.FrameTop.Value != kstackTop {
		t.Errorf("FrameTop = %+v, want %#x", k.FrameTop, uint64(kstackTop))
	}
	if k.Entry == nil || k.Entry.ReturnRIP != userRIP+2 || k.Entry.FromCPL != 3 {
		t.Errorf("Entry = %+v", k.Entry)
	}
}

func TestIntThroughPrivilegedGate(t *testing.T) {
	gp := uint64(0xffffffff81005000)
	after := with(int80After, regs{x86.RIP: gp, x86.RSP: frameRSP - 8})
	s := withSys(mkStep(t, 1, insInt80, userRIP, user, after,
		idtEntry(0x80, gateBytes(int80, 0x10, 0, 0xe, 0)),
		idtEntry(13, gateBytes(gp, 0x10, 0, 0xe, 0)),
		tssMem(tssRSP0),
		Memory{Addr: frameRSP - 8, Data: qwords(0x80*8+2, userRIP, 0x33, 0x246, userRSP, 0x2b), After: true}))
	effects := Annotate(s, &Context{})
	expectEffects(t, effects,
		note(KindPrivilege, "IDT[0x80] has DPL 0 < CPL 3"),
		ok(KindControl, "the handler in IDT[0xd]"),
		note(KindFrame, "error code 0x402"),
		ok(KindFrame, "rip 0x401000"),
		ok(KindStack, "minus the 48-byte frame"))
	expectNoFinding(t, effects)
}

func TestKernelExceptions(t *testing.T) {
	krsp := uint64(kstackTop - 0x108) // not 16-aligned
	k := with(kernel, regs{x86.RSP: krsp, x86.RAX: 0xdead000})
	aligned := krsp &^ 15
	tests := []struct {
		name   string
		code   []byte
		after  regs
		mem    []Memory
		checks []check
		clean  bool
	}{
		{
			name: "int3 in the kernel: no stack switch", code: insInt3,
			after: with(k, regs{x86.RIP: 0xffffffff81006000, x86.RSP: aligned - 40}), clean: true,
			mem: []Memory{{Addr: aligned - 40, Data: qwords(lstar+0x11, 0x10, 0x2, krsp, 0x18, 0), After: true}},
			checks: []check{
				note(KindPrivilege, "int3: #BP breakpoint delivered: stays at CPL 0"),
				ok(KindStack, "same privilege level: no stack switch"),
				ok(KindFrame, "rip 0xffffffff81c00091"),
			},
		},
		{
			name: "ud2 (BUG) pushes its own address", code: insUD2,
			after: with(k, regs{x86.RIP: udEntry, x86.RSP: aligned - 40}), clean: true,
			mem: []Memory{{Addr: aligned - 40, Data: qwords(lstar+0x10, 0x10, 0x2, krsp, 0x18, 0), After: true}},
			checks: []check{
				note(KindControl, "ud2 always raises #UD"),
				ok(KindFrame, "rip 0xffffffff81c00090"),
			},
		},
		{
			name: "a load that page-faults, found in the IDT", code: insLoadRBX,
			after: with(k, regs{x86.RIP: pfEntry, x86.RSP: aligned - 48, x86.CR2: 0xdead000}), clean: true,
			mem: []Memory{
				{Addr: idtBase + 14*16, Data: gateBytes(pfEntry, 0x10, 0, 0xe, 0), After: true},
				{Addr: aligned - 48, Data: qwords(0, lstar+0x10, 0x10, 0x2, krsp, 0x18), After: true},
			},
			checks: []check{
				note(KindControl, "instead of the next instruction: #PF page fault was delivered"),
				note(KindFrame, "error code 0x0"),
				ok(KindStack, "same privilege level: no stack switch"),
			},
		},
		{
			name: "page fault frame with a wrong rip", code: insLoadRBX,
			after: with(k, regs{x86.RIP: pfEntry, x86.RSP: aligned - 48}),
			mem: []Memory{
				{Addr: idtBase + 14*16, Data: gateBytes(pfEntry, 0x10, 0, 0xe, 0), After: true},
				{Addr: aligned - 48, Data: qwords(0, lstar+0x20, 0x10, 0x2, krsp, 0x18), After: true},
			},
			checks: []check{finding(KindFrame, "pushed rip = 0xffffffff81c000a0 at 0xffffc90000003ec8 (nested #PF frame: ip), expected 0xffffffff81c00090 (the faulting instruction)")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := withSys(mkStep(t, 1, tt.code, lstar+0x10, k, tt.after, tt.mem...))
			effects := Annotate(s, &Context{Symbols: testSyms})
			expectEffects(t, effects, tt.checks...)
			if tt.clean {
				expectNoFinding(t, effects)
			} else {
				expectFinding(t, effects)
			}
			if ev := Events(s, effects, nil); !hasEvent(ev, EventException) {
				t.Errorf("events %v lack exception", ev)
			}
		})
	}
}

func TestISTStack(t *testing.T) {
	ist := uint64(0xfffffe0000010000)
	after := with(kernel, regs{x86.RIP: 0xffffffff81007000, x86.RSP: ist - 40, x86.RFLAGS: 0x2})
	s := withSys(mkStep(t, 1, insInt3, lstar+0x10, kernel, after,
		idtEntry(3, gateBytes(0xffffffff81007000, 0x10, 1, 0xe, 3)),
		tssMem(tssRSP0),
		Memory{Addr: ist - 40, Data: qwords(lstar+0x11, 0x10, 0x2, kernel[x86.RSP], 0x18, 0), After: true}))
	effects := Annotate(s, &Context{})
	expectEffects(t, effects, ok(KindStack, "IST1 stack: rsp = 0xfffffe000000ffd8"))
	expectNoFinding(t, effects)
}

func TestVectorName(t *testing.T) {
	if got := VectorName(14); got != "#PF page fault" {
		t.Errorf("VectorName(14) = %q", got)
	}
	if got := VectorName(0x80); got != "vector 0x80" {
		t.Errorf("VectorName(0x80) = %q", got)
	}
}

// TestSoftwareInterruptIsNotAnException: int n is a software interrupt (SDM
// vol. 3 6.4.2, "Software-Generated Interrupts"); it is tagged interrupt, not
// exception. int3 raises the #BP exception.
func TestSoftwareInterruptIsNotAnException(t *testing.T) {
	gate80 := idtEntry(0x80, gateBytes(int80, 0x10, 0, 0xe, 3))
	s := withSys(mkStep(t, 0, insInt80, userRIP, user, int80After, gate80, tssMem(tssRSP0), int80Frame(userRIP+2)))
	c := &Context{Symbols: testSyms}
	effects := Annotate(s, c)
	expectEffects(t, effects, note(KindPrivilege, "int $0x80: software interrupt, vector 0x80 delivered"))
	ev := Events(s, effects, c)
	if !hasEvent(ev, EventInterrupt) || hasEvent(ev, EventException) {
		t.Errorf("int $0x80 events %v: want interrupt and not exception", ev)
	}
}

// TestUD2AsSystemCall: #UD is a fault (SDM vol. 3 6.15, "Interrupt 6—Invalid
// Opcode Exception": the saved CS:RIP point to the faulting instruction), so
// a kernel that uses ud2 as a system call advances pt_regs->ip by the 2
// bytes of ud2 before returning, and iretq goes on after it.
func TestUD2AsSystemCall(t *testing.T) {
	c := &Context{Symbols: testSyms, Regions: taskStack}
	gate6 := idtEntry(6, gateBytes(udEntry, 0x10, 0, 0xe, 0))
	after := with(int80After, regs{x86.RIP: udEntry})
	entry := Annotate(withSys(mkStep(t, 0, insUD2, userRIP, user, after, gate6, tssMem(tssRSP0), int80Frame(userRIP))), c)
	expectEffects(t, entry,
		note(KindControl, "#UD is a fault: the CPU saves the address of the ud2 itself"),
		note(KindControl, "must advance pt_regs->ip by its 2 bytes"),
		ok(KindFrame, "rip 0x401000 (pt_regs->ip)"))
	// mov %rax,0x80(%rdi) with rdi = the pt_regs frame: pt_regs->ip += 2.
	regsAt := uint64(kstackTop - PtRegsSize)
	k := with(kernel, regs{x86.RIP: lstar, x86.RDI: regsAt, x86.RAX: userRIP + 2})
	store := Annotate(mkStep(t, 62, []byte{0x48, 0x89, 0x87, 0x80, 0x00, 0x00, 0x00}, lstar, k, with(k, regs{x86.RIP: lstar + 7})), c)
	expectEffects(t, store, note(KindFrame, "pt_regs->ip 0x401000 → 0x401002: advanced by 2, past the instruction that raised the fault at step 0 (ud2)"))
	iretRSP := uint64(kstackTop - 40)
	back := Annotate(mkStep(t, 80, insIretq, lstar+0x40, with(kernel, regs{x86.RSP: iretRSP}), with(user, regs{x86.RIP: userRIP + 2}),
		Memory{Addr: iretRSP, Data: qwords(userRIP+2, 0x33, 0x246, userRSP, 0x2b)}), c)
	expectEffects(t, back, ok(KindControl, "2 bytes past the ud2 of step 0 that faulted"))
}

// TestFrameAtStackTop: int $0x80 from user mode pushes a 40-byte frame (SS,
// RSP, RFLAGS, CS, RIP; no error code for a software interrupt) ending at
// the top of TSS.RSP0's stack. The word above the top may be unmapped, so
// the recorder gets the five words without the sixth, and the frame is
// still checked.
func TestFrameAtStackTop(t *testing.T) {
	gate80 := idtEntry(0x80, gateBytes(int80, 0x10, 0, 0xe, 3))
	five := Memory{Addr: frameRSP, Data: qwords(userRIP+2, 0x33, 0x246, userRSP, 0x2b), After: true}
	effects := Annotate(withSys(mkStep(t, 0, insInt80, userRIP, user, int80After, gate80, tssMem(tssRSP0), five)), &Context{Symbols: testSyms})
	expectEffects(t, effects, ok(KindFrame, "CPU pushed at 0xffffc90000003fd8: rip 0x401002, cs 0x33, rflags 0x246, rsp 0x7ffc00001238, ss 0x2b"))
	for _, e := range effects {
		if strings.Contains(e.Text, "was not read") {
			t.Errorf("frame reported unread: %q", e.Text)
		}
	}
}

// TestNestedKernelFault follows lesson 5's bug: int $0x80's entry code runs
// without swapgs, so mov %gs:0x1000,%rsp reads through the user GS base (0)
// and page-faults at CPL 0. A fault at CPL 0 does not switch stacks (SDM
// vol. 3 6.14.2, "64-Bit Mode Stack Frame"): the CPU pushes its frame on the
// stack in use, here the entry stack below the user's int $0x80 frame. That
// frame and the handler's pushes below it are the #PF's, not the user's
// pt_regs their positions below the entry stack's top would name. And a
// faulting load loads nothing (SDM vol. 3 6.5: a fault is reported before
// the instruction's effects, with the state as before it).
func TestNestedKernelFault(t *testing.T) {
	c := &Context{Symbols: testSyms, Regions: exitRegions}
	rsp := uint64(entryTop - 56) // the user frame (40 bytes), orig_ax, di
	k := with(kernel, regs{x86.RIP: lstar, x86.RSP: rsp, x86.GSBase: 0, x86.KernelGSBase: percpu})
	frameAt := rsp&^15 - 48
	after := with(k, regs{x86.RIP: pfEntry, x86.RSP: frameAt, x86.CR2: 0x1000})
	pf := withSys(mkStep(t, 8, insLoadRSP, lstar, k, after,
		Memory{Addr: idtBase + 14*16, Data: gateBytes(pfEntry, 0x10, 0, 0xe, 0), After: true},
		Memory{Addr: frameAt, Data: qwords(0, lstar, 0x10, 0x2, rsp, 0x18), After: true}))
	effects := Annotate(pf, c)
	expectEffects(t, effects,
		note(KindFrame, "error code 0x0 pushed at 0xfffffe0000001f90 (nested #PF frame: orig_ax, the error code)"),
		ok(KindFrame, "rip 0xffffffff81c00080 (nested #PF frame: ip)"),
		note(KindFrame, "a #PF taken in kernel mode: the CPU pushed a frame of its own"),
		note(KindGS, "the access to gs:0x6014 = 0x6014 <cpu_tss_rw+0x14> faulted: nothing was loaded"))
	text := dump(effects)
	for _, bad := range []string{"(pt_regs->", "rsp = 0x", "kernel stack pointer kept"} {
		if strings.Contains(text, bad) {
			t.Errorf("effects of a faulting load say %q:\n%s", bad, text)
		}
	}
	// The handler's first push goes below the #PF frame: its own pt_regs.
	h := with(after, regs{x86.RIP: pfEntry})
	push := Annotate(mkStep(t, 9, insPushRAX, pfEntry, h, with(h, regs{x86.RIP: pfEntry + 1, x86.RSP: frameAt - 8})), c)
	expectEffects(t, push, note(KindStack, "(nested #PF frame: di)"))
}

// TestUserPageFaultAndInterrupt checks what is said of the two entries from
// user mode that no instruction asks for: a store that page-faults (the
// frame gets an error code, whose bits the SDM defines, Vol. 3A §4.7; CR2
// the address) and an external interrupt that arrives before an
// instruction (vector 0x20, no error code, the frame's RIP that
// instruction). Both go through IST-0 gates, so the stack is TSS.RSP0's.
func TestUserPageFaultAndInterrupt(t *testing.T) {
	const timer = 0xffffffff81004000
	insStore := []byte{0x48, 0x89, 0x37} // mov %rsi,(%rdi)
	insCmp := []byte{0x48, 0x39, 0x3d, 0, 0, 0, 0}
	pfAfter := with(int80After, regs{x86.RIP: pfEntry, x86.RSP: frameRSP - 8, x86.CR2: 0x700238})
	irqAfter := with(int80After, regs{x86.RIP: timer})
	tests := []struct {
		name   string
		code   []byte
		after  regs
		mem    []Memory
		checks []check
		clean  bool
	}{
		{
			name: "a user store to a page not present", code: insStore, after: pfAfter, clean: true,
			mem: []Memory{idtEntry(14, gateBytes(pfEntry, 0x10, 0, 0xe, 0)), tssMem(tssRSP0),
				{Addr: frameRSP - 8, Data: qwords(0x6, userRIP, 0x33, 0x246, userRSP, 0x2b), After: true}},
			checks: []check{
				note(KindPrivilege, "#PF page fault delivered: CPL 3 → 0"),
				note(KindFrame, "error code 0x6: not present, write, user (bit 0 P: the page is not present; bit 1 W/R: a write; bit 2 U/S: the access was made at CPL 3)"),
				note(KindRegister, "cr2 = 0x700238: the linear address the access tried to reach"),
				note(KindStack, "IDT[0xe] has IST 0: the CPU takes the stack of the new privilege level, TSS.RSP0"),
				ok(KindStack, "minus the 48-byte frame"),
			},
		},
		{
			name: "an error code that says supervisor for a user fault", code: insStore, after: pfAfter,
			mem: []Memory{idtEntry(14, gateBytes(pfEntry, 0x10, 0, 0xe, 0)), tssMem(tssRSP0),
				{Addr: frameRSP - 8, Data: qwords(0x2, userRIP, 0x33, 0x246, userRSP, 0x2b), After: true}},
			checks: []check{finding(KindFrame, "the error code's U/S bit says supervisor, but the CPU was at CPL 3")},
		},
		{
			name: "the timer's interrupt before a cmp", code: insCmp, after: irqAfter, clean: true,
			mem: []Memory{idtEntry(0x20, gateBytes(timer, 0x10, 0, 0xe, 0)), tssMem(tssRSP0),
				{Addr: frameRSP, Data: qwords(userRIP, 0x33, 0x246, userRSP, 0x2b, 0), After: true}},
			checks: []check{
				note(KindPrivilege, "vector 0x20 delivered before cmp"),
				note(KindPrivilege, "an external interrupt"),
				ok(KindControl, "the handler in IDT[0x20]"),
				ok(KindFrame, "rip 0x401000"),
				ok(KindStack, "minus the 40-byte frame"),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := withSys(mkStep(t, 1, tt.code, userRIP, user, tt.after, tt.mem...))
			effects := Annotate(s, &Context{})
			expectEffects(t, effects, tt.checks...)
			if tt.clean {
				expectNoFinding(t, effects)
			} else {
				expectFinding(t, effects)
			}
		})
	}
}

// TestUserTrapAndGP checks what is said of the two exceptions a user
// instruction raises on purpose. int3 raises #BP, a trap (SDM Vol. 3A
// 6.5: the saved RIP is the next instruction), and reaches the handler
// from CPL 3 only through a gate of DPL 3 (6.12.1.1). hlt at CPL 3 raises
// #GP(0) (Vol. 2A, HLT; Vol. 3A 5.9), a fault whose error code is 0 unless
// a descriptor load failed, when it holds the selector (6.15, Interrupt
// 13): mov to DS of selector 0x50 gives index 10 of the GDT.
func TestUserTrapAndGP(t *testing.T) {
	const (
		bpEntry = 0xffffffff81005000
		gpEntry = 0xffffffff81006000
	)
	bpAfter := with(int80After, regs{x86.RIP: bpEntry})
	gpAfter := with(int80After, regs{x86.RIP: gpEntry, x86.RSP: frameRSP - 8})
	gpGate := idtEntry(13, gateBytes(gpEntry, 0x10, 0, 0xe, 0))
	gpFrame := func(code uint64) Memory {
		return Memory{Addr: frameRSP - 8, Data: qwords(code, userRIP, 0x33, 0x246, userRSP, 0x2b), After: true}
	}
	tests := []struct {
		name   string
		code   []byte
		after  regs
		mem    []Memory
		checks []check
	}{
		{
			name: "int3 through a DPL-3 gate", code: insInt3, after: bpAfter,
			mem: []Memory{idtEntry(3, gateBytes(bpEntry, 0x10, 0, 0xe, 3)), tssMem(tssRSP0), int80Frame(userRIP + 1)},
			checks: []check{
				note(KindPrivilege, "int3 from CPL 3 passes the gate's check: IDT[3] has DPL 3 ≥ CPL (a gate with DPL < 3 would turn it into #GP(0x1a))"),
				note(KindControl, "#BP is a trap: the CPU saves the address of the instruction after the int3 (0x401001)"),
				ok(KindFrame, "rip 0x401001"),
				ok(KindStack, "minus the 40-byte frame"),
			},
		},
		{
			name: "hlt at CPL 3", code: []byte{0xf4}, after: gpAfter,
			mem: []Memory{gpGate, tssMem(tssRSP0), gpFrame(0)},
			checks: []check{
				note(KindPrivilege, "hlt: #GP general protection delivered: CPL 3 → 0"),
				note(KindFrame, "error code 0: the fault did not come from loading a segment or gate descriptor"),
				note(KindPrivilege, "hlt is a privileged instruction: at CPL 3 (> 0) the CPU does not run it and raises #GP(0); the saved RIP is the hlt itself, so a handler that lets the program go on must move it past its 1 byte"),
				ok(KindFrame, "rip 0x401000"),
				ok(KindStack, "minus the 48-byte frame"),
			},
		},
		{
			name: "a selector that does not load", code: []byte{0x8e, 0xd8}, after: gpAfter, // mov %eax,%ds
			mem: []Memory{gpGate, tssMem(tssRSP0), gpFrame(0x50)},
			checks: []check{
				note(KindFrame, "error code 0x50: the descriptor at index 10 of the GDT (bit 0 EXT 0: the program's own instruction caused it; bit 1 IDT 0; bit 2 TI 0; bits 15-3 the index)"),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			effects := Annotate(withSys(mkStep(t, 1, tt.code, userRIP, user, tt.after, tt.mem...)), &Context{})
			expectEffects(t, effects, tt.checks...)
			expectNoFinding(t, effects)
		})
	}
}

// TestSignalFrameStores: where Linux delivers a signal it rewrites the
// pt_regs an entry from user mode saved (arch/x86/kernel/signal_64.c,
// x64_setup_rt_frame: regs->ip = the handler, regs->sp = the frame it
// built on the user stack). The stores say where the return will go and
// how far below the saved user stack the frame is.
func TestSignalFrameStores(t *testing.T) {
	const handler, frame = 0x401800, userRSP - 0x468
	c := &Context{Symbols: testSyms, Regions: taskStack}
	gate3 := idtEntry(3, gateBytes(int80, 0x10, 0, 0xe, 3))
	Annotate(withSys(mkStep(t, 0, insInt3, userRIP, user, int80After, gate3, tssMem(tssRSP0), int80Frame(userRIP+1))), c)
	regsAt := uint64(kstackTop - PtRegsSize)
	k := with(kernel, regs{x86.RIP: lstar, x86.RBX: regsAt, x86.RAX: handler, x86.RCX: frame})
	// mov %rax,0x80(%rbx): pt_regs->ip; mov %rcx,0x98(%rbx): pt_regs->sp.
	ip := Annotate(mkStep(t, 900, []byte{0x48, 0x89, 0x83, 0x80, 0x00, 0x00, 0x00}, lstar, k, with(k, regs{x86.RIP: lstar + 7})), c)
	expectEffects(t, ip, note(KindFrame, "pt_regs->ip 0x401001 → 0x401800: the return to user mode will go there, not back to where the int3 of step 0 left off"))
	sp := Annotate(mkStep(t, 901, []byte{0x48, 0x89, 0x8b, 0x98, 0x00, 0x00, 0x00}, lstar+7, k, with(k, regs{x86.RIP: lstar + 14})), c)
	expectEffects(t, sp, note(KindFrame, fmt.Sprintf("pt_regs->sp %#x → %#x: the return to user mode will load a stack pointer 1128 bytes below the one the int3 of step 0 saved", uint64(userRSP), uint64(frame))))
	iretRSP := uint64(kstackTop - 40)
	back := Annotate(mkStep(t, 950, insIretq, lstar+0x40, with(kernel, regs{x86.RSP: iretRSP}), with(user, regs{x86.RIP: handler, x86.RSP: frame}),
		Memory{Addr: iretRSP, Data: qwords(handler, 0x33, 0x246, frame, 0x2b)}), c)
	expectEffects(t, back, ok(KindControl, "rip = 0x401800: the popped RIP, not 0x401001 where the int3 of step 0 left off: the kernel rewrote the frame since that entry"))
	expectNoFinding(t, back)
}

package annotate

import (
	"cmp"
	"fmt"
	"strings"

	"github.com/sctrace/sctrace/mechanism"
	symtab "github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/x86"
	"golang.org/x/arch/x86/x86asm"
)

// exceptionNames names the architectural exception vectors.
var exceptionNames = [...]string{
	0: "#DE divide error", 1: "#DB debug", 2: "NMI", 3: "#BP breakpoint", 4: "#OF overflow",
	5: "#BR bound range", 6: "#UD invalid opcode", 7: "#NM device not available", 8: "#DF double fault",
	10: "#TS invalid TSS", 11: "#NP segment not present", 12: "#SS stack fault", 13: "#GP general protection",
	14: "#PF page fault", 16: "#MF x87 error", 17: "#AC alignment check", 18: "#MC machine check",
	19: "#XM SIMD error", 20: "#VE virtualization", 21: "#CP control protection",
}

// VectorName names an interrupt vector, e.g. "#UD invalid opcode" or
// "vector 0x80".
func VectorName(v int) string {
	if v >= 0 && v < len(exceptionNames) && exceptionNames[v] != "" {
		return exceptionNames[v]
	}
	return fmt.Sprintf("vector %#x", v)
}

// hasErrorCode reports whether an exception pushes an error code.
func hasErrorCode(v int) bool {
	switch v {
	case 8, 10, 11, 12, 13, 14, 17, 21, 29, 30:
		return true
	}
	return false
}

// sys returns the `info registers` state of before, else after.
func (a *annotator) sys() *x86.SysRegs {
	if a.b.Sys != nil {
		return a.b.Sys
	}
	return a.a.Sys
}

// gate reads IDT entry v, if the IDT was read.
func (a *annotator) gate(v int) (x86.Gate, bool) {
	sys := a.sys()
	if sys == nil || v < 0 || uint64(v)*16+15 > uint64(sys.IDTLimit) {
		return x86.Gate{}, false
	}
	b, ok := a.readStatic(sys.IDTBase+uint64(v)*16, 16)
	if !ok {
		return x86.Gate{}, false
	}
	return x86.DecodeGate(b)
}

// tss reads the TSS, if it was read.
func (a *annotator) tss() (x86.TSS, bool) {
	sys := a.sys()
	if sys == nil {
		return x86.TSS{}, false
	}
	b, ok := a.readStatic(sys.TR().Base, x86.TSSSize)
	if !ok {
		return x86.TSS{}, false
	}
	return x86.DecodeTSS(b)
}

// vectorOf finds the vector whose IDT gate points at the handler, by
// scanning the IDT if it was read. It returns -1 when none does.
func (a *annotator) vectorOf(handler uint64) int {
	sys := a.sys()
	if sys == nil {
		return -1
	}
	n := (int(sys.IDTLimit) + 1) / 16
	for v := 0; v < n && v < 256; v++ {
		if g, ok := a.gate(v); ok && g.Present && g.Offset == handler {
			return v
		}
	}
	return -1
}

// softwareException explains int n, int3, int1 and ud2.
func (a *annotator) softwareException() {
	switch a.op.kind {
	case opUD:
		a.note(KindControl, "ud2 always raises #UD (invalid opcode): kernels use it for BUG() and WARN()")
		a.note(KindControl, "#UD is a fault: the CPU saves the address of the ud2 itself, not of the next instruction, so returning as is would run it again; a handler that treats it as a system call must advance pt_regs->ip by its %d bytes", a.op.length(a.s.Inst))
		a.enter(6, false, mechanism.UD2.Instruction())
	default:
		v := a.op.vector
		what := fmt.Sprintf("int $%#x", v)
		if a.s.Inst.Op == x86asm.INT && len(a.s.Bytes) > 0 && a.s.Bytes[0] == 0xcc {
			what = "int3"
		} else if a.s.Inst.Op == x86asm.ICEBP {
			what = "int1"
		}
		g, gateOK := a.gate(v)
		if c := cpl(a.b); gateOK && a.s.Inst.Op == x86asm.INT && g.DPL < c {
			a.note(KindPrivilege, "IDT[%#x] has DPL %d < CPL %d: software may not use this gate, so %s raises #GP(%#x) instead", v, g.DPL, c, what, v*8+2)
			a.enter(13, false, what+" through a privileged gate")
			return
		}
		if c := cpl(a.b); what == "int3" && gateOK && c >= 0 {
			a.note(KindPrivilege, "int3 from CPL %d passes the gate's check: IDT[3] has DPL %d ≥ CPL (a gate with DPL < %[1]d would turn it into #GP(0x1a))", c, g.DPL)
		}
		if what == "int3" {
			a.note(KindControl, "#BP is a trap: the CPU saves the address of the instruction after the int3 (%s), so a handler that returns as is goes on there", a.sym(a.next))
		}
		a.enter(v, true, what)
	}
}

// faulted reports whether a step that is not itself a control transfer ended
// somewhere else than its next instruction: an exception or an interrupt.
func faulted(inst x86asm.Inst, o op, addr uint64, before, after *x86.State) bool {
	switch o.kind {
	case opSyscall, opSysret, opSysenter, opSysexit, opInt, opUD, opIret, opFarCall, opFarRet:
		return false
	}
	n := o.length(inst)
	rip, ok := after.Get(x86.RIP)
	if n == 0 || !ok {
		return false
	}
	if isBranch(inst) {
		from, to := cpl(before), cpl(after)
		return to >= 0 && from > to
	}
	if rip == addr && inst.Prefix[0] != 0 && isString(inst) {
		return false // one iteration of a rep-prefixed string instruction
	}
	return rip != addr+uint64(n)
}

// isString reports whether inst is a string instruction, which a rep prefix
// repeats one iteration per step.
func isString(inst x86asm.Inst) bool {
	switch inst.Op {
	case x86asm.MOVSB, x86asm.MOVSW, x86asm.MOVSD, x86asm.MOVSQ, x86asm.STOSB, x86asm.STOSW, x86asm.STOSD, x86asm.STOSQ,
		x86asm.LODSB, x86asm.LODSW, x86asm.LODSD, x86asm.LODSQ, x86asm.CMPSB, x86asm.CMPSW, x86asm.CMPSD, x86asm.CMPSQ,
		x86asm.SCASB, x86asm.SCASW, x86asm.SCASD, x86asm.SCASQ, x86asm.INSB, x86asm.INSW, x86asm.INSD,
		x86asm.OUTSB, x86asm.OUTSW, x86asm.OUTSD:
		return true
	}
	return false
}

// exceptionCheck looks for an exception or interrupt taken by an ordinary
// instruction, and explains the entry when it finds one.
func (a *annotator) exceptionCheck() bool {
	if !faulted(a.s.Inst, a.op, a.s.Addr, a.b, a.a) {
		return false
	}
	rip, _ := a.a.Get(x86.RIP)
	v := a.vectorOf(rip)
	trap := false
	if rsp, ok := a.a.Get(x86.RSP); ok && !isFault(v) {
		// The frame tells a fault (RIP of this instruction) from a trap or
		// an interrupt delivered after it (RIP of the next one).
		if w, ok := a.words(rsp, 2, 8, true); ok {
			trap = w[0] == a.next || w[1] == a.next
		}
	}
	cause := "an exception"
	if trap {
		cause = "an interrupt or trap after the instruction"
	}
	if v >= 0 {
		cause = VectorName(v)
	}
	a.note(KindControl, "rip %s → %s instead of the next instruction: %s was delivered", a.sym(a.s.Addr), a.sym(rip), cause)
	a.enter(v, trap, Mnemonic(a.s.Inst, a.s.Bytes, a.s.Addr, a.operandSymbols()))
	return true
}

// isFault reports whether vector v is an exception that reports the
// faulting instruction's address (rather than the next one's).
func isFault(v int) bool {
	switch v {
	case 0, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18, 19, 20, 21:
		return true
	}
	return false
}

// mnemonic names the step's instruction by its canonical mnemonic, "?"
// when it is none.
func (a *annotator) mnemonic() string {
	return cmp.Or(CanonicalMnemonic(a.s.Inst, a.s.Bytes), "?")
}

// operandSymbols names the step's operands as the trace's own rendering
// of the instruction does (OperandSymbols), when the context's symbols are
// a symbol table; nil, numbers only, otherwise.
func (a *annotator) operandSymbols() x86asm.SymLookup {
	if t, ok := a.c.Symbols.(*symtab.Table); ok && t != nil {
		return OperandSymbols(a.s.Inst, t)
	}
	return nil
}

// enter explains the delivery of vector v (-1 if unknown) through the IDT:
// the gate, the stack switch, the frame the CPU pushed and the flags. trap
// says the frame's RIP is the next instruction rather than this one.
func (a *annotator) enter(v int, trap bool, cause string) {
	a.entered = true
	a.stackDone = true
	a.explained(x86.RIP, x86.RSP, x86.RFLAGS, x86.CS, x86.SS)
	from, to := cpl(a.b), cpl(a.a)
	g, gateOK := a.gate(v)
	vec := "an unknown vector"
	if v >= 0 {
		vec = VectorName(v)
	}
	if a.softwareInterrupt(v) {
		// int n is a software interrupt, not an exception: no error code,
		// and the saved RIP is the next instruction.
		a.privilegeChange(fmt.Sprintf("%s: software interrupt, %s delivered", cause, vec), -1)
		a.mark(EventInterrupt)
		a.compatEntry(cause)
	} else if v >= 32 && a.op.kind != opInt {
		// Not raised by the instruction: an external interrupt arrives
		// between two instructions, and the frame's RIP is the one that
		// has not run yet.
		a.privilegeChange(fmt.Sprintf("%s delivered before %s ran: an external interrupt (vectors 32-255 come from the interrupt controller, not from an instruction); %s runs after the handler returns", vec, cause, cause), -1)
		a.mark(EventException)
	} else {
		a.privilegeChange(fmt.Sprintf("%s: %s delivered", cause, vec), -1)
		a.mark(EventException)
	}

	rip, ripOK := a.a.Get(x86.RIP)
	switch {
	case gateOK && ripOK:
		if g.Offset == rip && g.Present {
			a.add(KindControl, OK, "rip = %s: the handler in IDT[%#x] (%s)", a.sym(rip), v, g)
		} else {
			a.add(KindControl, Finding, "rip = %s, but IDT[%#x] points to %#x (%s)", a.sym(rip), v, g.Offset, g)
		}
		if cs, ok := a.a.Get(x86.CS); ok && cs&^3 != uint64(g.Selector)&^3 {
			a.add(KindRegister, Finding, "cs = %#x, but the gate's selector is %#x", cs, g.Selector)
		}
	case ripOK:
		a.unread(KindControl, "rip = %s: the handler (IDT entry not read)", a.sym(rip))
	}

	// The frame: [error code], RIP, CS, RFLAGS, RSP, SS.
	errCode := v >= 0 && hasErrorCode(v) && !trap && a.op.kind != opInt
	a.checkFrame(v, trap, &errCode)
	size := uint64(40)
	if errCode {
		size = 48
	}
	a.interruptStack(g, gateOK, from, to, size)
	if gateOK && g.IST == 0 && from > to && to >= 0 {
		a.note(KindStack, "IDT[%#x] has IST 0: the CPU takes the stack of the new privilege level, TSS.RSP%d; a gate with IST n would switch to TSS.IST%[3]s whatever the privilege level (for NMI, #DF, #MC, which may arrive on a broken stack)", v, to, "n")
	}
	if v == 14 && errCode {
		a.pageFault(from)
	}
	if v == 13 && errCode {
		a.gpFault(from)
	}
	a.interruptFlags(g, gateOK)
	ret := a.s.Addr
	if trap {
		ret = a.next
	}
	if from > 0 || a.k.Entry == nil {
		a.recordEntry(cause, ret)
		if e := a.k.Entry; e != nil && e.Step == a.s.Index && !trap && isFault(v) {
			e.Fault, e.InsnLen = true, a.op.length(a.s.Inst)
		}
	}
}

// pageFault explains what a #PF reports: the error code the CPU pushed
// (at RSP after the step) bit by bit, and CR2, the linear address the
// access tried to reach.
func (a *annotator) pageFault(from int) {
	if rsp, ok := a.a.Get(x86.RSP); ok {
		if w, ok := a.words(rsp, 1, 8, true); ok {
			e := x86.PFError(w[0])
			a.note(KindFrame, "error code %#x: %s (bit 0 P: %s; bit 1 W/R: %s; bit 2 U/S: %s)", w[0], e,
				pick(e&x86.PFProtection != 0, "a protection violation on a present page", "the page is not present"),
				pick(e&x86.PFWrite != 0, "a write", "a read"),
				pick(e&x86.PFUser != 0, "the access was made at CPL 3", "the access was made at CPL 0-2"))
			if user := e&x86.PFUser != 0; user != (from == 3) && from >= 0 {
				a.add(KindFrame, Finding, "the error code's U/S bit says %s, but the CPU was at CPL %d", pick(user, "user", "supervisor"), from)
			}
		}
	}
	if cr2, ok := a.a.Get(x86.CR2); ok {
		a.note(KindRegister, "cr2 = %s: the linear address the access tried to reach; the handler must read it before anything can fault again", a.sym(cr2))
	}
}

// privileged lists the instructions that run only at CPL 0 and raise
// #GP(0) elsewhere (SDM Vol. 3A, 5.9 "Privileged Instructions"; CLI and STI
// depend on IOPL instead, and are left out).
var privileged = map[x86asm.Op]bool{
	x86asm.HLT: true, x86asm.LGDT: true, x86asm.LIDT: true, x86asm.LLDT: true, x86asm.LTR: true,
	x86asm.LMSW: true, x86asm.CLTS: true, x86asm.INVD: true, x86asm.WBINVD: true, x86asm.INVLPG: true,
	x86asm.RDMSR: true, x86asm.WRMSR: true, x86asm.SWAPGS: true,
}

// gpFault explains what a #GP reports: the error code the CPU pushed (at
// RSP after the step), which names a selector or vector when the fault
// came from loading a descriptor and is 0 otherwise (SDM Vol. 3A, 6.15,
// "Interrupt 13"), and, for a privileged instruction run above CPL 0, why
// it faulted.
func (a *annotator) gpFault(from int) {
	if rsp, ok := a.a.Get(x86.RSP); ok {
		if w, ok := a.words(rsp, 1, 8, true); ok {
			e := w[0]
			if e == 0 {
				a.note(KindFrame, "error code 0: the fault did not come from loading a segment or gate descriptor (then it would hold the selector or vector); a privileged instruction, a non-canonical address or a limit or type check gives 0")
			} else {
				table := "the GDT"
				switch {
				case e&2 != 0:
					table = "the IDT"
				case e&4 != 0:
					table = "the LDT"
				}
				a.note(KindFrame, "error code %#x: the descriptor at index %d of %s (bit 0 EXT %d: %s; bit 1 IDT %d; bit 2 TI %d; bits 15-3 the index)", e, e>>3&0x1fff, table,
					e&1, pick(e&1 != 0, "an event external to the program caused it", "the program's own instruction caused it"), e>>1&1, e>>2&1)
			}
		}
	}
	if op, n := a.s.Inst.Op, a.op.length(a.s.Inst); privileged[op] && from > 0 {
		a.note(KindPrivilege, "%s is a privileged instruction: at CPL %d (> 0) the CPU does not run it and raises #GP(0); the saved RIP is the %[1]s itself, so a handler that lets the program go on must move it past its %[3]d %[4]s", a.mnemonic(), from, n, pick(n == 1, "byte", "bytes"))
	}
}

// pick returns yes when cond holds, else no.
func pick(cond bool, yes, no string) string {
	if cond {
		return yes
	}
	return no
}

// softwareInterrupt reports whether the step delivered vector v as the
// int n instruction (opcode 0xcd) it is: a software interrupt rather than
// an exception. int3 and int1 raise the #BP and #DB exceptions.
func (a *annotator) softwareInterrupt(v int) bool {
	return a.op.kind == opInt && a.s.Inst.Op == x86asm.INT && len(a.s.Bytes) > 0 && a.s.Bytes[0] == 0xcd && v == a.op.vector
}

// checkFrame checks the frame the CPU pushed at RSP after the step.
// *errCode says whether an error code is expected; when the vector is
// unknown it is worked out from the frame.
func (a *annotator) checkFrame(v int, trap bool, errCode *bool) {
	rsp, ok := a.a.Get(x86.RSP)
	if !ok {
		return
	}
	w, ok := a.words(rsp, 5, 8, true)
	if !ok {
		a.unread(KindCheck, "the interrupt frame at %#x was not read: cannot check what the CPU pushed", rsp)
		return
	}
	// The sixth word is the frame's last when an error code was pushed; a
	// frame without one ends below it, where the stack's top may be.
	sixth, ok := a.words(rsp+5*8, 1, 8, true)
	if ok {
		w = append(w, sixth[0])
	} else if *errCode {
		a.unread(KindCheck, "the interrupt frame's last word at %#x was not read: cannot check what the CPU pushed after the error code", rsp+5*8)
		return
	}
	wantRIP := a.s.Addr
	if trap {
		wantRIP = a.next
	}
	cs, _ := a.b.Get(x86.CS)
	if !*errCode && len(w) == 6 && w[0] != wantRIP && w[1] == wantRIP && w[2]&0xffff == cs&0xffff {
		*errCode = true
	}
	if from := cpl(a.b); from == 0 {
		// A kernel-mode exception: the frame is its own.
		top := rsp + 40
		if *errCode {
			top += 8
		}
		name := "exception"
		if v >= 0 {
			name = strings.Fields(VectorName(v))[0]
		}
		a.k.nested = &nestedFrame{top: top, vector: name, errCode: *errCode}
		a.note(KindFrame, "a %s taken in kernel mode: the CPU pushed a frame of its own on the stack in use, below whatever was there; its words are this exception's, not the user's pt_regs", name)
	}
	f := w[:5]
	at := rsp
	if *errCode {
		a.note(KindFrame, "error code %#x pushed at %#x%s", w[0], rsp, a.slot(rsp))
		f, at = w[1:6], rsp+8
	}
	type slot struct {
		name     string
		got      uint64
		reg      x86.Reg
		mask     uint64
		want     uint64
		wantText string
	}
	slots := []slot{
		{"rip", f[0], x86.RIP, ^uint64(0), wantRIP, "the faulting instruction"},
		{"cs", f[1], x86.CS, 0xffff, 0, "CS before"},
		{"rflags", f[2], x86.RFLAGS, ^uint64(x86.FlagRF), 0, "RFLAGS before"},
		{"rsp", f[3], x86.RSP, ^uint64(0), 0, "RSP before"},
		{"ss", f[4], x86.SS, 0xffff, 0, "SS before"},
	}
	if trap {
		slots[0].wantText = "the next instruction"
	}
	var good []string
	for i, s := range slots {
		if i > 0 {
			v, ok := a.b.Get(s.reg)
			if !ok {
				continue
			}
			s.want = v
		} else if trap && !a.hasNext {
			continue
		}
		if s.got&s.mask != s.want&s.mask {
			a.add(KindFrame, Finding, "pushed %s = %#x at %#x%s, expected %#x (%s)", s.name, s.got, at+uint64(8*i), a.slot(at+uint64(8*i)), s.want, s.wantText)
			continue
		}
		good = append(good, fmt.Sprintf("%s %#x%s", s.name, s.got, a.slot(at+uint64(8*i))))
	}
	if len(good) > 0 {
		a.add(KindFrame, OK, "CPU pushed at %#x: %s", at, strings.Join(good, ", "))
	}
}

// interruptStack checks the stack the CPU switched to: an IST stack, TSS.RSP0
// on a privilege change, or the current stack, aligned to 16 bytes.
func (a *annotator) interruptStack(g x86.Gate, gateOK bool, from, to int, size uint64) {
	before, bOK := a.b.Get(x86.RSP)
	after, aOK := a.a.Get(x86.RSP)
	if !aOK {
		return
	}
	tss, tssOK := a.tss()
	switch {
	case gateOK && g.IST != 0:
		if tssOK {
			want := tss.IST[g.IST]&^15 - size
			a.add(KindStack, verdict(after == want), "IST%d stack: rsp = %#x (TSS.IST%d %#x, aligned to 16, minus the %d-byte frame; expected %#x) in the %s", g.IST, after, g.IST, tss.IST[g.IST], size, want, a.stackName(after))
		} else {
			a.unread(KindStack, "switched to the IST%d stack: rsp = %#x in the %s (TSS not read)", g.IST, after, a.stackName(after))
		}
		a.mark(EventStackSwitch)
	case from > to && to >= 0:
		if ss, ok := a.a.Get(x86.SS); ok {
			a.add(KindRegister, verdict(ss == uint64(to)), "ss = %#x: on a privilege change in 64-bit mode the CPU loads a null SS with RPL %d", ss, to)
		}
		top := after + size
		if tssOK {
			want := tss.RSP[to]&^15 - size
			a.add(KindStack, verdict(after == want), "stack switch: %s → %s, rsp = %#x from TSS.RSP%d %#x (aligned to 16, minus the %d-byte frame; expected %#x)", a.stackName(before), a.stackName(after), after, to, tss.RSP[to], size, want)
			a.mark(EventStackSwitch)
		} else {
			a.note(KindStack, "stack switch: %s → %s, rsp %#x → %#x: TSS.RSP%d & ~0xf = %#x (inferred: rsp + the %d-byte frame)", a.stackName(before), a.stackName(after), before, after, to, top, size)
			a.mark(EventStackSwitch)
			if to == 0 {
				if old := learnFact(&a.k.RSP0, Fact{Value: top, Known: ^uint64(15), Source: SourceInferred, Step: a.s.Index, How: "stack the CPU switched to on an interrupt from user mode"}); old != nil {
					a.note(KindStack, "TSS.RSP0 differs from the %#x seen before (%s): the kernel changed it (another task?)", old.Value, old.Provenance())
				}
			}
		}
		if r, ok := a.c.RegionOf(after); !ok || r.FrameTop == 0 {
			learnFact(&a.k.FrameTop, Fact{Value: top, Known: ^uint64(0), Source: SourceInferred, Step: a.s.Index, How: "top of the interrupt frame pushed on entry"})
		}
	case bOK:
		want := before&^15 - size
		a.add(KindStack, verdict(after == want), "same privilege level: no stack switch; rsp %#x → %#x (aligned to 16, then the %d-byte frame pushed; expected %#x)", before, after, size, want)
	}
}

// interruptFlags checks the flags an interrupt or trap gate changes.
func (a *annotator) interruptFlags(g x86.Gate, gateOK bool) {
	bf, ok1 := a.b.Get(x86.RFLAGS)
	af, ok2 := a.a.Get(x86.RFLAGS)
	if !ok1 || !ok2 {
		return
	}
	if x86.Flags(af)&(x86.FlagTF|x86.FlagNT|x86.FlagVM) != 0 {
		a.add(KindFlags, Finding, "rflags %#x: TF, NT and VM must be clear in a handler entered through a gate", af)
	}
	switch {
	case gateOK && g.Type == x86.GateInterrupt:
		a.add(KindPrivilege, verdict(x86.Flags(af)&x86.FlagIF == 0), "IF %d → %d: an interrupt gate clears IF", bit(bf, x86.FlagIF), bit(af, x86.FlagIF))
	case gateOK && g.Type == x86.GateTrap:
		a.add(KindPrivilege, verdict(x86.Flags(af)&x86.FlagIF == x86.Flags(bf)&x86.FlagIF), "IF %d → %d: a trap gate leaves IF alone", bit(bf, x86.FlagIF), bit(af, x86.FlagIF))
	case x86.Flags(af)&x86.FlagIF == 0 && x86.Flags(bf)&x86.FlagIF != 0:
		a.note(KindPrivilege, "IF 1 → 0: IF cleared, so this was an interrupt gate")
	case x86.Flags(af)&x86.FlagIF != 0:
		a.note(KindPrivilege, "IF still 1: a trap gate")
	}
}

func bit[T ~uint64](v uint64, mask T) int {
	if v&uint64(mask) != 0 {
		return 1
	}
	return 0
}

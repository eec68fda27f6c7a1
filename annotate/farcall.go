package annotate

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/x86"
	"golang.org/x/arch/x86/x86asm"
)

// gdtEntry reads the GDT bytes for a selector, n bytes long.
func (a *annotator) gdtEntry(sel uint16, n int) ([]byte, bool) {
	sys, s := a.sys(), x86.Selector(sel)
	off := uint64(s.Index()) * 8
	if sys == nil || s.LDT() || off+uint64(n)-1 > uint64(sys.GDTLimit) {
		return nil, false
	}
	return a.readStatic(sys.GDTBase+off, n)
}

// farPointer reads the m16:64 (or m16:32) operand of a far call.
func (a *annotator) farPointer() (off uint64, sel uint16, ok bool) {
	m, _, isMem := memArg(a.s.Inst)
	if !isMem {
		return 0, 0, false
	}
	addr, ok := linear(a.s.Inst, m, a.b, a.next, a.hasNext)
	if !ok {
		return 0, 0, false
	}
	size := farOffsetSize(a.s.Inst)
	b, ok := a.read(addr, size+2, false)
	if !ok {
		return 0, 0, false
	}
	if size == 8 {
		off = binary.LittleEndian.Uint64(b)
	} else {
		off = uint64(binary.LittleEndian.Uint32(b))
	}
	return off, binary.LittleEndian.Uint16(b[size:]), true
}

// farOffsetSize is the size of a far pointer's offset.
func farOffsetSize(inst x86asm.Inst) int {
	switch inst.DataSize {
	case 64:
		return 8
	case 16:
		return 2
	}
	return 4
}

// farCall explains a far CALL through memory: through a 64-bit call gate it
// changes privilege, switches to the TSS stack and pushes SS, RSP, CS and
// RIP; to a code segment it pushes CS and RIP.
func (a *annotator) farCall() {
	a.explained(x86.RIP, x86.RSP, x86.CS, x86.SS)
	a.stackDone = true
	off, sel, ok := a.farPointer()
	if !ok {
		a.unread(KindCheck, "the far pointer operand was not read: the gate cannot be decoded")
		a.farCallStack(x86.Gate{}, false)
		return
	}
	a.note(KindControl, "far call through the pointer %#x:%#x (%s)", sel, off, x86.Selector(sel))
	desc, ok := a.gdtEntry(sel, 16)
	if !ok {
		a.unread(KindCheck, "the GDT entry for selector %#x was not read: the gate cannot be decoded", sel)
		a.farCallStack(x86.Gate{}, false)
		return
	}
	d, _ := x86.DecodeDescriptor(desc)
	if !d.System {
		a.note(KindControl, "selector %#x is a code segment, not a gate: a far call at the same privilege level; the offset %#x is the target", sel, off)
		a.expect(KindControl, x86.RIP, off, "the far pointer's offset", "a far call to a code segment jumps to the pointer's offset")
		a.farCallStack(x86.Gate{}, false)
		return
	}
	g, _ := x86.DecodeGate(desc)
	if g.Type != x86.GateCall {
		a.add(KindControl, Finding, "GDT[%d] is a %s, not a call gate: the far call should have raised #GP", x86.Selector(sel).Index(), g.TypeName())
		return
	}
	a.note(KindControl, "GDT[%d] is a 64-bit call gate: %s; the pointer's offset %#x is ignored", x86.Selector(sel).Index(), g, off)
	if c := cpl(a.b); c >= 0 && (g.DPL < c || g.DPL < x86.Selector(sel).RPL()) {
		a.add(KindPrivilege, Finding, "the gate's DPL %d is below CPL %d or RPL %d: the call should have raised #GP", g.DPL, c, x86.Selector(sel).RPL())
	}
	a.expect(KindControl, x86.RIP, g.Offset, "the call gate's offset: "+a.sym(g.Offset), "a call through a gate jumps to the gate's offset")
	newCPL := -1
	if cd, ok := a.gdtEntry(g.Selector, 8); ok {
		if t, ok := x86.DecodeDescriptor(cd); ok && !t.System {
			newCPL = t.DPL
		}
	}
	if cs, ok := a.a.Get(x86.CS); ok {
		a.add(KindRegister, verdict(cs&^3 == uint64(g.Selector)&^3), "cs = %s: the gate's code segment %#x", x86.Selector(cs), g.Selector)
	}
	a.privilegeChange("call gate", newCPL)
	a.farCallStack(g, true)
	a.recordEntry(mechanism.CallGate.Instruction(), a.next)
}

// farCallStack checks the stack switch and the pushed frame of a far call.
func (a *annotator) farCallStack(g x86.Gate, gate bool) {
	before, bOK := a.b.Get(x86.RSP)
	after, aOK := a.a.Get(x86.RSP)
	if !aOK {
		return
	}
	from, to := cpl(a.b), cpl(a.a)
	outer := from > to && to >= 0
	n := 2
	if outer {
		n = 4
		if ss, ok := a.a.Get(x86.SS); ok {
			a.add(KindRegister, verdict(ss == uint64(to)), "ss = %#x: a call gate to an inner level in 64-bit mode loads a null SS with RPL %d", ss, to)
		}
		if tss, ok := a.tss(); ok {
			want := tss.RSP[to] - 32
			a.add(KindStack, verdict(after == want), "stack switch: %s → %s, rsp = %#x: TSS.RSP%d %#x minus the four pushed words (expected %#x)", a.stackName(before), a.stackName(after), after, to, tss.RSP[to], want)
			a.mark(EventStackSwitch)
		} else {
			a.note(KindStack, "stack switch: %s → %s, rsp %#x → %#x: TSS.RSP%d = %#x (inferred: rsp + four pushed words)", a.stackName(before), a.stackName(after), before, after, to, after+32)
			a.mark(EventStackSwitch)
			if to == 0 {
				learnFact(&a.k.RSP0, Fact{Value: after + 32, Known: ^uint64(0), Source: SourceInferred, Step: a.s.Index, How: "stack the CPU switched to on a call gate"})
			}
		}
	} else if bOK {
		a.add(KindStack, verdict(after == before-16), "no privilege change: no stack switch; CS and RIP pushed, rsp %#x → %#x", before, after)
	}
	if bf, ok := a.b.Get(x86.RFLAGS); ok && gate {
		if af, ok := a.a.Get(x86.RFLAGS); ok {
			a.add(KindPrivilege, verdict(x86.Flags(af)&x86.FlagIF == x86.Flags(bf)&x86.FlagIF), "IF %d → %d: a call gate does not change IF (unlike an interrupt gate)", bit(bf, x86.FlagIF), bit(af, x86.FlagIF))
		}
	}
	w, ok := a.words(after, n, 8, true)
	if !ok {
		a.unread(KindCheck, "the frame at %#x was not read: cannot check what the call pushed", after)
		return
	}
	names := []string{"rip", "cs", "rsp", "ss"}
	regs := []x86.Reg{x86.RIP, x86.CS, x86.RSP, x86.SS}
	var good []string
	for i := 0; i < n; i++ {
		want, ok := a.b.Get(regs[i])
		mask := ^uint64(0)
		if i == 0 {
			want, ok = a.next, a.hasNext
		}
		if regs[i] == x86.CS || regs[i] == x86.SS {
			mask = 0xffff
		}
		if !ok {
			continue
		}
		if (w[i]^want)&mask != 0 {
			a.add(KindFrame, Finding, "pushed %s = %#x at %#x, expected %#x (the caller's %s)", names[i], w[i], after+uint64(8*i), want, names[i])
			continue
		}
		good = append(good, fmt.Sprintf("%s %#x", names[i], w[i]))
	}
	if len(good) > 0 {
		a.add(KindFrame, OK, "the CPU pushed at %#x: %s", after, strings.Join(good, ", "))
	}
	if outer && to == 0 {
		learnFact(&a.k.FrameTop, Fact{Value: after + 32, Known: ^uint64(0), Source: SourceInferred, Step: a.s.Index, How: "top of the call-gate frame"})
	}
}

// farRetImm returns lret's immediate: bytes of parameters to release.
func farRetImm(inst x86asm.Inst) uint64 {
	if imm, ok := inst.Args[0].(x86asm.Imm); ok {
		return uint64(uint16(imm))
	}
	return 0
}

// farRet explains a far RET: it pops RIP and CS, and on a return to an outer
// privilege level RSP and SS too.
func (a *annotator) farRet() {
	a.explained(x86.RIP, x86.RSP, x86.CS, x86.SS)
	a.stackDone = true
	size := 8
	if !a.op.wide {
		size = 4
	}
	rsp, ok := a.b.Get(x86.RSP)
	if !ok {
		return
	}
	w, ok := a.words(rsp, 2, size, false)
	if !ok {
		a.privilegeChange("far return", -1)
		a.unread(KindCheck, "the return frame at %#x was not read", rsp)
		a.iretStack(rsp) // the switch shows in RSP itself
		return
	}
	imm := farRetImm(a.s.Inst)
	rip, cs := w[0], w[1]&0xffff
	from, to := cpl(a.b), int(cs&3)
	a.privilegeChange(fmt.Sprintf("far return popping rip %#x, cs %#x", rip, cs), max(from, to))
	a.expectMasked(KindControl, x86.RIP, rip, ^uint64(0), "the popped RIP: "+a.sym(rip), "far RET loads RIP from the stack")
	a.expectMasked(KindRegister, x86.CS, cs, 0xffff, "the popped CS", "far RET loads CS from the stack")
	if imm != 0 {
		a.note(KindStack, "releases %d bytes of parameters", imm)
	}
	if from < 0 || to <= from {
		a.expectMasked(KindStack, x86.RSP, rsp+uint64(2*size)+imm, ^uint64(0), "same privilege level: only RIP and CS popped", "far RET to the same level pops two slots")
		return
	}
	w2, ok := a.words(rsp+uint64(2*size)+imm, 2, size, false)
	if !ok {
		a.unread(KindCheck, "the outer RSP and SS at %#x were not read", rsp+uint64(2*size)+imm)
		a.iretStack(rsp)
		return
	}
	a.expectMasked(KindStack, x86.RSP, w2[0], ^uint64(0), "the popped RSP: return to the outer level's stack", "far RET to an outer level pops RSP")
	a.expectMasked(KindRegister, x86.SS, w2[1]&0xffff, 0xffff, "the popped SS", "far RET to an outer level pops SS")
	a.iretStack(rsp)
	a.k.Entry = nil
}

package annotate

import (
	"fmt"

	"github.com/sctrace/sctrace/x86"
	"golang.org/x/arch/x86/x86asm"
)

// crFields decodes a CR3 value with the PCIDE bit of a state's CR4.
func crFields(v uint64, st *x86.State) x86.CR3Fields {
	cr4, _ := st.Get(x86.CR4)
	return x86.CR3Fields{Value: v, PCIDE: x86.CR4Flags(cr4)&x86.CR4PCIDE != 0}
}

// decodeCR renders a control register value.
func decodeCR(r x86.Reg, v uint64, st *x86.State) string {
	switch r {
	case x86.CR0:
		return x86.CR0Flags(v).String()
	case x86.CR3:
		return crFields(v, st).String()
	case x86.CR4:
		return x86.CR4Flags(v).String()
	case x86.CR2:
		return "the last page-fault address"
	case x86.CR8:
		return fmt.Sprintf("task priority %d", v&0xf)
	}
	return ""
}

// movCR explains MOV to and from control registers.
func (a *annotator) movCR() {
	dst, _ := a.s.Inst.Args[0].(x86asm.Reg)
	src, _ := a.s.Inst.Args[1].(x86asm.Reg)
	if c := cpl(a.b); c > 0 {
		a.add(KindPrivilege, Finding, "mov to or from a control register at CPL %d should raise #GP", c)
	}
	if dst >= x86asm.CR0 && dst <= x86asm.CR15 {
		a.writeCR(dst, src)
		return
	}
	cr, _, _, ok := regInfo(src)
	gpr, _, _, ok2 := regInfo(dst)
	if !ok || !ok2 {
		a.note(KindCheck, "mov from %s: sctrace does not see that register", src)
		return
	}
	a.explained(gpr)
	if v, ok := a.b.Get(cr); ok {
		a.expect(KindCR3, gpr, v, fmt.Sprintf("reads %s (%s)", cr, decodeCR(cr, v, a.b)), "MOV from "+cr.String()+" copies it")
	}
}

// writeCR explains a MOV to a control register.
func (a *annotator) writeCR(dst, src x86asm.Reg) {
	cr, _, _, ok := regInfo(dst)
	if !ok {
		a.note(KindCheck, "mov to %s: sctrace does not see that register", dst)
		return
	}
	a.explained(cr)
	v, ok1 := regVal(a.b, src)
	old, ok2 := a.b.Get(cr)
	nw, ok3 := a.a.Get(cr)
	if !ok1 || !ok3 {
		a.note(KindCheck, "mov to %s: the source or the new value is unknown", cr)
		return
	}
	if cr != x86.CR3 {
		switch {
		case !ok2:
			a.note(KindCR3, "%s := %#x (%s)", cr, nw, decodeCR(cr, nw, a.a))
		case cr == x86.CR0 || cr == x86.CR4:
			a.note(KindCR3, "%s %#x → %#x: %s", cr, old, nw, bitsChanged(cr, old, nw))
		default:
			a.note(KindCR3, "%s %#x → %#x (%s)", cr, old, nw, decodeCR(cr, nw, a.a))
		}
		if cr == x86.CR4 && (old^nw)&(1<<7) != 0 {
			a.note(KindCR3, "toggling CR4.PGE flushes the whole TLB, global entries included")
		}
		a.add(KindCR3, verdict(nw == v), "%s = %#x: the value written from %s", cr, nw, lowerReg(src))
		return
	}
	f := crFields(v, a.b)
	if nw != v && !(f.PCIDE && nw == v&^(1<<63)) {
		a.add(KindCR3, Finding, "cr3 = %#x after the write, but %s held %#x", nw, lowerReg(src), v)
	} else {
		a.add(KindCR3, OK, "cr3 = %#x: the value written from %s", nw, lowerReg(src))
	}
	nf := crFields(nw, a.a)
	text := fmt.Sprintf("cr3: %s → %s", crFields(old, a.b), nf)
	if !ok2 {
		text = fmt.Sprintf("cr3 := %s", nf)
	}
	of := crFields(old, a.b)
	switch {
	case !ok2:
	case old == nw:
		text += ": the same page tables reloaded, which flushes their non-global TLB entries"
	case of.PGD()&^x86.KPTIUserBit == nf.PGD()&^x86.KPTIUserBit && of.KPTIUser() != nf.KPTIUser():
		if nf.KPTIUser() {
			text += ": switch to the user page tables (KPTI: the kernel is unmapped again; Linux's SWITCH_TO_USER_CR3 sets bit 12)"
		} else {
			text += ": switch to the kernel page tables (KPTI: the kernel becomes mapped; Linux's SWITCH_TO_KERNEL_CR3 clears bit 12)"
		}
	case of.PGD() != nf.PGD():
		text += ": switch to another address space"
	}
	if f.PCIDE {
		if f.NoFlush() {
			text += fmt.Sprintf("; bit 63 set: PCID %d keeps its TLB entries", f.PCID())
		} else {
			text += fmt.Sprintf("; PCID %d's TLB entries are flushed", f.PCID())
		}
	}
	a.note(KindCR3, "%s", text)
}

// bitsChanged names the bits of CR0 or CR4 set and cleared.
func bitsChanged(r x86.Reg, old, nw uint64) string {
	name := func(v uint64) string {
		if r == x86.CR0 {
			return x86.CR0Flags(v).String()
		}
		return x86.CR4Flags(v).String()
	}
	var s string
	if set := nw &^ old; set != 0 {
		s = "sets " + name(set)
	}
	if clr := old &^ nw; clr != 0 {
		if s != "" {
			s += ", "
		}
		s += "clears " + name(clr)
	}
	if s == "" {
		return "unchanged"
	}
	return s
}

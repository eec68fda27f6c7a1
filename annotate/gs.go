package annotate

import (
	"fmt"

	"github.com/sctrace/sctrace/x86"
	"golang.org/x/arch/x86/x86asm"
)

// isPerCPU reports whether a GS base is the per-CPU area: a percpu Region
// holds it, or it is the kernel GS base seen before.
func (a *annotator) isPerCPU(base uint64) (bool, string) {
	if r, ok := a.c.RegionOfKind(base, RegionPerCPU); ok {
		return true, r.label()
	}
	if f := a.k.PerCPU; f != nil && f.Value == base {
		return true, "per-CPU area, " + f.Provenance()
	}
	return false, ""
}

// perCPURegion returns the first per-CPU region the context names.
func (a *annotator) perCPURegion() (Region, bool) {
	for _, r := range a.c.Regions {
		if r.Kind == RegionPerCPU {
			return r, true
		}
	}
	return Region{}, false
}

// swapgs explains SWAPGS: GS base and IA32_KERNEL_GS_BASE are exchanged.
func (a *annotator) swapgs() {
	a.explained(x86.GSBase, x86.KernelGSBase)
	if c := cpl(a.b); c > 0 {
		a.add(KindPrivilege, Finding, "swapgs at CPL %d should raise #GP: it is a ring-0 instruction", c)
	}
	gs, ok1 := a.b.Get(x86.GSBase)
	kgs, ok2 := a.b.Get(x86.KernelGSBase)
	ngs, ok3 := a.a.Get(x86.GSBase)
	nkgs, ok4 := a.a.Get(x86.KernelGSBase)
	if !(ok1 && ok2 && ok3 && ok4) {
		a.note(KindCheck, "swapgs: gs_base or k_gs_base unknown, cannot check the exchange")
		return
	}
	if ngs != kgs || nkgs != gs {
		a.add(KindGS, Finding, "swapgs did not swap: gs_base %#x → %#x, k_gs_base %#x → %#x; expected gs_base %#x and k_gs_base %#x", gs, ngs, kgs, nkgs, kgs, gs)
		return
	}
	if e := a.k.Entry; e != nil {
		e.Swapgs++
	}
	why := ""
	active, aName := a.isPerCPU(ngs)
	parked, pName := a.isPerCPU(nkgs)
	switch {
	case active:
		why = fmt.Sprintf(" (%s now active)", aName)
	case parked:
		why = fmt.Sprintf(" (%s parked in k_gs_base, user GS base active)", pName)
	case cpl(a.b) == 0 && a.k.Entry != nil && a.k.Entry.FromCPL == 3 && a.k.Entry.Swapgs == 1:
		// The first swapgs after an entry from user mode brings in the
		// kernel's base.
		learnFact(&a.k.PerCPU, Fact{Value: ngs, Known: ^uint64(0), Source: SourceInferred, Step: a.s.Index, How: "GS base after the first swapgs following a user-mode entry"})
		why = " (per-CPU area now active: inferred, first swapgs after a user-mode entry)"
	}
	if gs == ngs {
		why += "; both held the same value"
	}
	a.add(KindGS, OK, "swapgs: gs_base %#x ⇄ k_gs_base %#x%s", gs, kgs, why)
}

// returnGS checks a return from the kernel to user mode: the user's GS base
// must be active again. A per-CPU base still in gs_base means the way out
// skipped its swapgs: user code now holds the kernel's base, k_gs_base
// holds the user's, and the next entry's swapgs will give the kernel the
// user's base.
func (a *annotator) returnGS() {
	if cpl(a.b) != 0 || cpl(a.a) != 3 {
		return
	}
	gs, ok := a.a.Get(x86.GSBase)
	if !ok {
		return
	}
	pc, what := a.isPerCPU(gs)
	if !pc {
		return
	}
	kgs := "unknown"
	if v, ok := a.a.Get(x86.KernelGSBase); ok {
		kgs = fmt.Sprintf("%#x", v)
	}
	a.add(KindGS, Finding, "back in user mode with gs_base %#x, the %s: the way out skipped swapgs, so user code runs with the kernel's GS base and k_gs_base (%s) holds the user's; the next entry's swapgs will hand the kernel the user's base (missing swapgs)", gs, what, kgs)
}

// fsgsBase explains RDFSBASE, RDGSBASE, WRFSBASE and WRGSBASE.
func (a *annotator) fsgsBase() {
	seg, reg := "fs", x86.FSBase
	switch a.s.Inst.Op {
	case x86asm.RDGSBASE, x86asm.WRGSBASE:
		seg, reg = "gs", x86.GSBase
	}
	if cr4, ok := a.b.Get(x86.CR4); ok && x86.CR4Flags(cr4)&x86.CR4FSGSBASE == 0 {
		a.add(KindGS, Finding, "CR4.FSGSBASE is clear: %s should have raised #UD", a.mnemonic())
	}
	arg, ok := a.s.Inst.Args[0].(x86asm.Reg)
	if !ok {
		return
	}
	r, bits, _, ok := regInfo(arg)
	if !ok {
		return
	}
	mask := ^uint64(0)
	if bits == 32 {
		mask = 0xffffffff
	}
	if a.op.kind == opWrBase {
		a.explained(reg)
		if v, ok := a.b.Get(r); ok {
			a.expect(KindGS, reg, v&mask, fmt.Sprintf("written from %s (%s base set without wrmsr)", lowerReg(arg), seg), "WR"+map[string]string{"fs": "FS", "gs": "GS"}[seg]+"BASE loads the base from the register")
		}
		return
	}
	a.explained(r)
	if v, ok := a.b.Get(reg); ok {
		a.expectMasked(KindGS, r, v&mask, ^uint64(0), fmt.Sprintf("the %s base read without rdmsr", seg), "RD"+map[string]string{"fs": "FS", "gs": "GS"}[seg]+"BASE copies the base into the register")
	}
}

// segmentAccesses explains FS- and GS-relative memory operands: the linear
// address, its symbol and region, and what moved through it.
func (a *annotator) segmentAccesses() {
	m, idx, ok := memArg(a.s.Inst)
	if !ok || (m.Segment != x86asm.GS && m.Segment != x86asm.FS) || a.s.Inst.Op == x86asm.LEA {
		return
	}
	seg, baseReg := "gs", x86.GSBase
	if m.Segment == x86asm.FS {
		seg, baseReg = "fs", x86.FSBase
	}
	base, ok := a.b.Get(baseReg)
	off, ok2 := a.effAddr(m)
	if !ok || !ok2 {
		a.note(KindGS, "%s-relative access: the %s base or the address registers are unknown", seg, seg)
		return
	}
	lin := base + off
	name := a.symbol(lin)
	if name == "" && seg == "gs" {
		// Linux links per-CPU variables at offsets from 0.
		if n := a.symbol(off); n != "" {
			name = n
		}
	}
	desc := fmt.Sprintf("%s:%#x = %#x", seg, off, lin)
	if name != "" {
		desc += " <" + name + ">"
	}
	desc += a.where(lin)

	dir := a.accessDir(idx)
	what := a.accessValue(idx, dir)
	text := fmt.Sprintf("%s %s%s", dir, desc, what)
	if a.entered {
		// A faulting instruction's only effect is the fault: nothing
		// was loaded or stored.
		text = fmt.Sprintf("the access to %s faulted: nothing was %s", desc, map[bool]string{true: "stored", false: "loaded"}[dir == "stores to" || dir == "updates"])
	}
	v := NoVerdict
	if seg == "gs" && cpl(a.b) == 0 {
		if pa, _ := a.isPerCPU(base); !pa {
			if f := a.k.PerCPU; f != nil && f.Value != base {
				v = Finding
				text += fmt.Sprintf("; but gs_base %#x is not the per-CPU base %#x (%s): a kernel access through the wrong GS (missing swapgs?)", base, f.Value, f.Provenance())
			} else if r, ok := a.perCPURegion(); ok {
				v = Finding
				text += fmt.Sprintf("; but gs_base %#x is not in the %s [%#x, %#x): a kernel access through the wrong GS (missing swapgs?)", base, r.label(), r.Start, r.End)
			}
		}
	}
	if !a.entered {
		text += a.rspSlot(idx, dir, lin)
	}
	a.add(KindGS, v, "%s", text)
	a.mark(EventPerCPU)
}

// accessDir says whether the memory operand at index idx is read or written.
func (a *annotator) accessDir(idx int) string {
	switch a.s.Inst.Op {
	case x86asm.MOV, x86asm.MOVZX, x86asm.MOVSX, x86asm.MOVSXD, x86asm.MOVQ, x86asm.MOVD:
		if idx == 0 {
			return "stores to"
		}
		return "loads from"
	case x86asm.PUSH, x86asm.CMP, x86asm.TEST, x86asm.BT:
		return "reads"
	case x86asm.POP:
		return "stores to"
	}
	if idx == 0 {
		return "updates"
	}
	return "reads"
}

// accessValue renders the value that moved, when the registers show it.
func (a *annotator) accessValue(idx int, dir string) string {
	args := a.s.Inst.Args
	switch {
	case dir == "stores to" && idx == 0 && args[1] != nil:
		switch src := args[1].(type) {
		case x86asm.Reg:
			if v, ok := regVal(a.b, src); ok {
				return fmt.Sprintf(" the value of %s, %#x", lowerReg(src), v)
			}
		case x86asm.Imm:
			return fmt.Sprintf(" the constant %#x", uint64(src))
		}
	case dir == "loads from" && idx == 1:
		if dst, ok := args[0].(x86asm.Reg); ok {
			if v, ok := regVal(a.a, dst); ok {
				return fmt.Sprintf(": %s = %#x", lowerReg(dst), v)
			}
		}
	}
	return ""
}

func lowerReg(r x86asm.Reg) string {
	s := []byte(r.String())
	for i, c := range s {
		if c >= 'A' && c <= 'Z' {
			s[i] = c + 'a' - 'A'
		}
	}
	return string(s)
}

// rspSlot recognises the entry code parking the user RSP in a per-CPU slot
// and taking it back, and loading the kernel stack top.
func (a *annotator) rspSlot(idx int, dir string, lin uint64) string {
	args := a.s.Inst.Args
	if a.s.Inst.Op != x86asm.MOV || cpl(a.b) != 0 {
		return ""
	}
	label := "the per-CPU scratch slot"
	if r, ok := a.c.RegionOf(lin); ok && r.Kind == RegionScratch {
		label = r.label()
	}
	switch {
	case dir == "stores to" && args[1] == x86asm.RSP:
		rsp := a.b.Val(x86.RSP)
		if r, ok := a.c.RegionOf(rsp); (ok && r.Kind == RegionUserStack) || (!ok && !x86.KernelHalf(rsp)) || (a.k.Entry != nil && a.k.Entry.CallerRSP == rsp) {
			learnFact(&a.k.UserRSPSlot, Fact{Value: lin, Known: ^uint64(0), Source: SourceInferred, Step: a.s.Index, How: "store of the user RSP after syscall"})
			return " — " + label + ": user RSP saved"
		}
	case dir == "loads from" && args[0] == x86asm.RSP:
		if f := a.k.UserRSPSlot; f != nil && f.Value == lin {
			return " — " + label + ": user RSP restored"
		}
		if rsp, ok := a.a.Get(x86.RSP); ok && x86.KernelHalf(rsp) {
			if e := a.k.Entry; e != nil && e.FromCPL == 3 && e.Step < a.s.Index && len(a.frameTops(rsp-8)) == 0 {
				// After an entry from user mode the entry code builds
				// (or copies) pt_regs at the top of the task stack it
				// just loaded, as Linux does after syscall and
				// entry_INT80_compat.
				learnFact(&a.k.FrameTop, Fact{Value: rsp, Known: ^uint64(0), Source: SourceInferred, Step: a.s.Index, How: "stack top loaded by the syscall entry code"})
			}
			return " — a kernel stack pointer kept in the per-CPU area"
		}
	}
	return ""
}

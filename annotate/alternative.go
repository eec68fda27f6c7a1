package annotate

import (
	"fmt"
	"math/bits"
	"strings"

	"github.com/sctrace/sctrace/x86"
	"golang.org/x/arch/x86/x86asm"
)

// cr3BitNames say what the CR3 bits Linux's page-table isolation edits
// mean (arch/x86/entry/calling.h: PTI_USER_PGTABLE_BIT is PAGE_SHIFT, 12;
// X86_CR3_PTI_PCID_USER_BIT is 11; X86_CR3_PCID_NOFLUSH is bit 63).
var cr3BitNames = map[int]string{
	12: "bit 12 (the user half of KPTI's page-table pair)",
	11: "bit 11 (the user PCID: KPTI gives the user page tables PCID | 0x800)",
	63: "bit 63 (no TLB flush on the write)",
}

// cr3Edit explains an and, or, bts or btr with an immediate on a register
// holding CR3's value: which page-table bits the entry code clears or sets
// before writing it back. It returns "" for anything else.
func (a *annotator) cr3Edit() string {
	inst := a.s.Inst
	dst, ok := inst.Args[0].(x86asm.Reg)
	if !ok || inst.Args[1] == nil {
		return ""
	}
	imm, ok := inst.Args[1].(x86asm.Imm)
	if !ok {
		return ""
	}
	v, ok1 := regVal(a.b, dst)
	cr3, ok2 := a.b.Get(x86.CR3)
	if !ok1 || !ok2 || v != cr3 {
		return ""
	}
	var verb string
	var mask uint64
	switch inst.Op {
	case x86asm.AND:
		verb, mask = "clears", ^uint64(imm)
	case x86asm.OR:
		verb, mask = "sets", uint64(imm)
	case x86asm.BTR:
		verb, mask = "clears", 1<<(uint64(imm)&63)
	case x86asm.BTS:
		verb, mask = "sets", 1<<(uint64(imm)&63)
	default:
		return ""
	}
	var names []string
	for m := mask; m != 0; m &= m - 1 {
		b := bits.TrailingZeros64(m)
		if n, ok := cr3BitNames[b]; ok {
			names = append(names, n)
		} else {
			names = append(names, fmt.Sprintf("bit %d", b))
		}
	}
	if len(names) == 0 || len(names) > 3 {
		return ""
	}
	return fmt.Sprintf("%s %s of the CR3 value (mask %#x)", verb, strings.Join(names, " and "), mask)
}

// cr3EditNote notes a CR3-value edit on an ordinary register.
func (a *annotator) cr3EditNote() {
	if a.k.scratchRSP {
		return // scratchRSP says it on RSP
	}
	if text := a.cr3Edit(); text != "" {
		a.note(KindCR3, "%s", text)
	}
}

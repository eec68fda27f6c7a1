package trace

import (
	"strings"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/annotate"
)

// Disasm renders an instruction in the chosen syntax. It starts from
// x86asm's output (through annotate.Mnemonic, which also names the few
// instructions x86asm leaves undecoded, such as stac, clac and endbr64) and
// takes objdump's name (annotate.Spell) for the return instructions whose
// width x86asm hides: it prints a REX.W it considers unused as a "rex.W"
// prefix, or drops it, which hides that sysret, sysexit and lret here
// return to 64-bit code.
func Disasm(inst x86asm.Inst, code []byte, pc uint64, symname x86asm.SymLookup, syn Syntax) string {
	wide := inst.Prefix[0]&x86asm.PrefixREXW != 0 || hasREXW(inst)
	if syn == ATT {
		s := strings.TrimPrefix(annotate.Mnemonic(inst, code, pc, symname), "rex.W ")
		// x86asm spells every sysret "sysretq"; without REX.W it
		// returns to 32-bit code.
		if inst.Op == x86asm.SYSRET || wide && inst.Op == x86asm.SYSEXIT {
			s = annotate.Spell(inst, code).ATT
		}
		return s
	}
	if inst.Op == 0 {
		// Undecoded by x86asm: the AT&T name has no operands to reorder.
		return annotate.Mnemonic(inst, code, pc, symname)
	}
	s := x86asm.IntelSyntax(inst, pc, symname)
	if wide {
		switch inst.Op {
		case x86asm.SYSRET, x86asm.SYSEXIT:
			s = annotate.Spell(inst, code).Intel
		case x86asm.LRET:
			s = strings.Replace(s, "ret far", annotate.Spell(inst, code).Intel, 1)
		}
	}
	return s
}

func hasREXW(inst x86asm.Inst) bool {
	for _, p := range inst.Prefix {
		if p == 0 {
			break
		}
		if p&0xf0 == x86asm.PrefixREX && p&x86asm.PrefixREXW != 0 {
			return true
		}
	}
	return false
}

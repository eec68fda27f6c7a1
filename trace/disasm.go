package trace

import (
	"slices"
	"strings"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/symbols"
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

// minMappedAddr is the lowest address Linux lets user space map by default
// (vm.mmap_min_addr, 64 KiB); the teaching kernel maps nothing below it
// either. A value below it is a number, not an address.
const minMappedAddr = 0x10000

// OperandSymbols returns the name lookup for disassembling inst: tab's
// symbols, except that an immediate operand is named only where it can be an
// address. x86asm offers every 32-bit immediate of a MOV or PUSH for naming;
// most are constants (pushq $0x2b pushes the user SS selector), and a
// System.map's per-CPU symbols sit at small link-time offsets that would
// name them (__per_cpu_start+43). An immediate is named when its value is
// at least minMappedAddr and falls in a symbol that is neither absolute (nm
// type A: a value, such as a per-CPU offset in kallsyms) nor a linker
// marker. Memory and branch operands are named as before.
func OperandSymbols(inst x86asm.Inst, tab *symbols.Table) x86asm.SymLookup {
	var imms []uint64
	for _, a := range inst.Args {
		if a == nil {
			break
		}
		if v, ok := a.(x86asm.Imm); ok {
			imms = append(imms, uint64(v))
		}
	}
	return func(addr uint64) (string, uint64) {
		s, off, ok := tab.Lookup(addr)
		if !ok {
			return "", 0
		}
		if slices.Contains(imms, addr) && !immAddress(addr, s) {
			return "", 0
		}
		return s.Name, addr - off
	}
}

// immAddress says whether an immediate v, which falls in s, is taken for an
// address.
func immAddress(v uint64, s symbols.Symbol) bool {
	return v >= minMappedAddr && s.Type != 'A' && s.Type != 'a' && !symbols.IsMarker(s.Name)
}

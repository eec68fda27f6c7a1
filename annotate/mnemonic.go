package annotate

import (
	"strings"

	"golang.org/x/arch/x86/x86asm"
)

// Spelling is the mnemonic of an instruction, without prefixes or
// operands, in AT&T and in Intel syntax.
type Spelling struct {
	ATT, Intel string
}

// Spell names a decoded instruction the way objdump -d (GNU binutils 2.40,
// x86-64) does. It is the one place that knows objdump's spellings of the
// instructions that enter and leave the kernel, which x86asm spells
// otherwise: objdump gives their operand size (sysretq and sysretl,
// sysexitq, iretq, lretq, which Intel syntax spells retfq), where x86asm
// prints a REX.W it takes for unused as a prefix ("rex.W lretq") or drops
// the size ("sysret", "ret far"). It names int3 and int1 apart from int n,
// and names the instructions x86asm leaves undecoded (clac, stac,
// endbr64). Every other instruction is named by its x86asm operation,
// lower-cased (mov, call, jne), in both syntaxes. code is the instruction's
// bytes (needed for the undecoded ones and for int3); an instruction that
// is not one (Op 0, unknown bytes) has an empty Spelling.
func Spell(inst x86asm.Inst, code []byte) Spelling {
	o := classify(inst, code)
	if o.name != "" {
		return Spelling{o.name, o.name}
	}
	switch inst.Op {
	case 0:
		return Spelling{}
	case x86asm.SYSRET:
		if o.wide {
			return Spelling{"sysretq", "sysretq"}
		}
		return Spelling{"sysretl", "sysretd"}
	case x86asm.SYSEXIT:
		if o.wide {
			return Spelling{"sysexitq", "sysexitq"}
		}
		return Spelling{"sysexitl", "sysexitd"}
	case x86asm.IRETQ:
		return Spelling{"iretq", "iretq"}
	case x86asm.IRETD:
		return Spelling{"iret", "iret"}
	case x86asm.IRET:
		return Spelling{"iretw", "iretw"}
	case x86asm.LRET:
		switch inst.DataSize {
		case 64:
			return Spelling{"lretq", "retfq"}
		case 16:
			return Spelling{"lretw", "retfw"}
		}
		return Spelling{"lret", "retf"}
	case x86asm.LCALL:
		return Spelling{"lcall", "call"}
	case x86asm.INT:
		// cc and cd 03 both decode as INT 3; only the one-byte form is
		// int3 (a breakpoint: no IOPL check in virtual-8086 mode).
		if inst.Len > 0 && inst.Len <= len(code) && code[inst.Len-1] == 0xcc && o.vector == 3 {
			return Spelling{"int3", "int3"}
		}
		return Spelling{"int", "int"}
	case x86asm.ICEBP:
		return Spelling{"int1", "int1"}
	}
	n := strings.ToLower(inst.Op.String())
	return Spelling{n, n}
}

// CanonicalMnemonic returns the mnemonic sctrace names an instruction by
// when it compares instructions: objdump's AT&T name (Spell), such as
// "syscall", "sysretq", "lretq", "int", "int3", "call" or "jne". It is ""
// for bytes that are no instruction.
func CanonicalMnemonic(inst x86asm.Inst, code []byte) string {
	return Spell(inst, code).ATT
}

// mnemonicAliases maps the other names objdump and assemblers give an
// instruction to its canonical mnemonic: Intel syntax, objdump -M suffix,
// older binutils (callq, retq), x86asm's Intel spelling (jnz, sysret).
var mnemonicAliases = map[string]string{
	"sysret":   "sysretl",
	"sysretd":  "sysretl",
	"sysexit":  "sysexitl",
	"sysexitd": "sysexitl",
	"iretd":    "iret",
	"iretl":    "iret",
	"retfq":    "lretq",
	"retf":     "lret",
	"retfd":    "lret",
	"retfl":    "lret",
	"lretl":    "lret",
	"retfw":    "lretw",
	"lcalll":   "lcall",
	"lcallq":   "lcall",
	"callq":    "call",
	"retq":     "ret",
	"icebp":    "int1",
	"ud2a":     "ud2",
	"jz":       "je",
	"jnz":      "jne",
}

// NormalizeMnemonic returns the canonical mnemonic (CanonicalMnemonic) for
// a mnemonic written in any of the spellings objdump uses, in either
// syntax: "retfq" and "LRETQ" give "lretq", "sysretd" gives "sysretl",
// "callq" gives "call". A name it does not know is returned lower-cased.
func NormalizeMnemonic(name string) string {
	name = strings.ToLower(strings.TrimSpace(name))
	if c, ok := mnemonicAliases[name]; ok {
		return c
	}
	return name
}

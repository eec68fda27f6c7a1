package annotate

import (
	"bytes"
	"errors"
	"slices"

	"golang.org/x/arch/x86/x86asm"

	symtab "github.com/sctrace/sctrace/symbols"
)

// opKind groups instructions by the family that explains them.
type opKind int

const (
	opOther opKind = iota
	opSyscall
	opSysret
	opSysenter
	opSysexit
	opInt // int n, int3, int1
	opUD  // ud2: raises #UD by definition
	opIret
	opFarCall
	opFarRet
	opSwapgs
	opRdBase
	opWrBase
	opWrmsr
	opRdmsr
	opMovCR
	opStac // x86asm does not decode these; recognised from the bytes
	opClac
	opEndbr
)

// op is a classified instruction.
type op struct {
	kind   opKind
	name   string // mnemonic for instructions x86asm does not know
	rawLen int    // their length
	vector int    // for opInt and opUD: the vector raised
	wide   bool   // REX.W form (sysretq, sysexitq, iretq, lretq, lcall m16:64)
}

// length returns the instruction's length in bytes, 0 if unknown.
func (o op) length(inst x86asm.Inst) int {
	if o.rawLen > 0 {
		return o.rawLen
	}
	if inst.Op != 0 {
		return inst.Len
	}
	return 0
}

// rawInsts are instructions golang.org/x/arch/x86/x86asm leaves undecoded
// (it returns Op 0 for them) that appear on the system-call path.
var rawInsts = []struct {
	code []byte
	kind opKind
	name string
}{
	{[]byte{0x0f, 0x01, 0xcb}, opStac, "stac"},
	{[]byte{0x0f, 0x01, 0xca}, opClac, "clac"},
	{[]byte{0xf3, 0x0f, 0x1e, 0xfa}, opEndbr, "endbr64"},
	{[]byte{0xf3, 0x0f, 0x1e, 0xfb}, opEndbr, "endbr32"},
}

func classify(inst x86asm.Inst, code []byte) op {
	if inst.Op == 0 {
		for _, r := range rawInsts {
			if bytes.HasPrefix(code, r.code) {
				return op{kind: r.kind, name: r.name, rawLen: len(r.code)}
			}
		}
		return op{}
	}
	wide := inst.DataSize == 64
	switch inst.Op {
	case x86asm.SYSCALL:
		return op{kind: opSyscall}
	case x86asm.SYSRET:
		return op{kind: opSysret, wide: wide}
	case x86asm.SYSENTER:
		return op{kind: opSysenter}
	case x86asm.SYSEXIT:
		return op{kind: opSysexit, wide: wide}
	case x86asm.INT:
		v := 0
		if imm, ok := inst.Args[0].(x86asm.Imm); ok {
			v = int(uint8(imm))
		}
		return op{kind: opInt, vector: v}
	case x86asm.ICEBP:
		return op{kind: opInt, vector: 1}
	case x86asm.UD2, x86asm.UD1, x86asm.UD0:
		return op{kind: opUD, vector: 6}
	case x86asm.IRET, x86asm.IRETD, x86asm.IRETQ:
		return op{kind: opIret, wide: inst.Op == x86asm.IRETQ || wide}
	case x86asm.LCALL:
		return op{kind: opFarCall, wide: wide}
	case x86asm.LRET:
		return op{kind: opFarRet, wide: wide}
	case x86asm.SWAPGS:
		return op{kind: opSwapgs}
	case x86asm.RDFSBASE, x86asm.RDGSBASE:
		return op{kind: opRdBase}
	case x86asm.WRFSBASE, x86asm.WRGSBASE:
		return op{kind: opWrBase}
	case x86asm.WRMSR:
		return op{kind: opWrmsr}
	case x86asm.RDMSR:
		return op{kind: opRdmsr}
	case x86asm.MOV:
		for _, arg := range inst.Args {
			if r, ok := arg.(x86asm.Reg); ok && r >= x86asm.CR0 && r <= x86asm.CR15 {
				return op{kind: opMovCR}
			}
		}
	}
	return op{}
}

// ErrUndecoded is returned by Decode for bytes that are not an instruction
// it knows.
var ErrUndecoded = errors.New("annotate: cannot decode instruction")

// Decode decodes one instruction in 64-bit mode and returns its length. It
// covers the instructions golang.org/x/arch/x86/x86asm returns without an
// opcode (endbr64, stac, clac): for those inst.Op is 0 and the length comes
// from the bytes, and Mnemonic names them.
func Decode(code []byte) (inst x86asm.Inst, length int, err error) {
	inst, err = x86asm.Decode(code, 64)
	if err == nil && inst.Op != 0 {
		return inst, inst.Len, nil
	}
	if o := classify(x86asm.Inst{}, code); o.rawLen > 0 {
		return x86asm.Inst{Mode: 64, Len: o.rawLen}, o.rawLen, nil
	}
	if err == nil {
		err = ErrUndecoded
	}
	return inst, 0, err
}

// Mnemonic renders an instruction in AT&T syntax, as objdump would, naming
// the instructions x86asm does not decode. symname may be nil.
func Mnemonic(inst x86asm.Inst, code []byte, pc uint64, symname x86asm.SymLookup) string {
	if o := classify(inst, code); o.name != "" {
		return o.name
	}
	if inst.Op == 0 {
		return "(bad)"
	}
	return x86asm.GNUSyntax(inst, pc, symname)
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
func OperandSymbols(inst x86asm.Inst, tab *symtab.Table) x86asm.SymLookup {
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
func immAddress(v uint64, s symtab.Symbol) bool {
	return v >= minMappedAddr && s.Type != 'A' && s.Type != 'a' && !symtab.IsMarker(s.Name)
}

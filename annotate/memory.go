package annotate

import (
	"github.com/sctrace/sctrace/x86"
	"golang.org/x/arch/x86/x86asm"
)

// maxTable caps the bytes of a descriptor table read at once.
const maxTable = 4096

// MemoryBefore returns the guest memory Annotate wants read before the step:
// the frame IRETQ or far RET will pop, the IDT gate an INT will use, the far
// pointer and GDT of a far call, and the TSS for the stack switch. The
// recorder reads what it can and hands it over in Step.Mem.
func MemoryBefore(inst x86asm.Inst, addr uint64, before *x86.State) []Range {
	if before == nil {
		return nil
	}
	o := classify(inst, nil)
	var out []Range
	rsp, rspOK := before.Get(x86.RSP)
	sys := before.Sys
	switch o.kind {
	case opIret:
		if rspOK {
			size := 8
			if !o.wide {
				size = 4
			}
			out = append(out, Range{rsp, 5 * size})
		}
	case opFarRet:
		if rspOK {
			size := 8
			if !o.wide {
				size = 4
			}
			out = append(out, Range{rsp, 2 * size}, Range{rsp + uint64(2*size) + farRetImm(inst), 2 * size})
		}
	case opFarCall:
		if m, _, ok := memArg(inst); ok {
			next := addr + uint64(inst.Len)
			if lin, ok := linear(inst, m, before, next, inst.Len > 0); ok {
				out = append(out, Range{lin, farOffsetSize(inst) + 2})
			}
		}
		if sys != nil {
			out = append(out, Range{sys.GDTBase, tableLen(sys.GDTLimit)})
			out = append(out, tssRange(sys)...)
		}
	case opInt, opUD, opSysenter:
		v := o.vector
		if o.kind == opSysenter {
			v = 6 // AMD CPUs raise #UD
		}
		out = append(out, gateRanges(sys, v)...)
	case opSyscall:
		if syscallMayUD(before) {
			out = append(out, gateRanges(sys, 6)...)
		}
	case opSysret, opSysexit:
		// A #GP from a ring-3 sysret or a non-canonical RCX.
		if c := cpl(before); c > 0 {
			out = append(out, gateRanges(sys, 13)...)
		}
	}
	if r, ok := skippedRange(inst, addr, before); ok {
		out = append(out, r) // the code a jmp skips: a patched-out ALTERNATIVE?
	}
	return out
}

// syscallMayUD reports whether a syscall from this state may raise #UD:
// with EFER.SCE clear, or from compatibility mode (an Intel CPU).
func syscallMayUD(before *x86.State) bool {
	if efer, ok := before.Get(x86.EFER); ok && x86.EFERFlags(efer)&x86.EFERSCE == 0 {
		return true
	}
	return before.Sys.CompatMode()
}

// gateRanges asks for IDT entry v and the TSS.
func gateRanges(sys *x86.SysRegs, v int) []Range {
	if sys == nil || uint64(v)*16+15 > uint64(sys.IDTLimit) {
		return nil
	}
	return append([]Range{{sys.IDTBase + uint64(v)*16, 16}}, tssRange(sys)...)
}

// tssRange asks for the TSS.
func tssRange(sys *x86.SysRegs) []Range {
	tr := sys.TR()
	if tr.Limit+1 < x86.TSSSize {
		return nil
	}
	return []Range{{tr.Base, x86.TSSSize}}
}

// tableLen is a descriptor table's length from its limit, capped.
func tableLen(limit uint32) int {
	return min(int(limit)+1, maxTable)
}

// MemoryAfter returns the guest memory Annotate wants read after the step:
// the frame the CPU pushed on an interrupt, exception or call gate (and,
// when an ordinary instruction ended up in a handler, the IDT to find which
// vector it was), and the value a push from memory stored.
func MemoryAfter(inst x86asm.Inst, addr uint64, before, after *x86.State) []Range {
	if before == nil || after == nil {
		return nil
	}
	o := classify(inst, nil)
	rsp, ok := after.Get(x86.RSP)
	if !ok {
		return nil
	}
	// The five words every frame has, then the sixth apart: without an
	// error code the frame ends at the top of its stack, and the word above
	// may be unmapped (the entry stack's top under the user page tables),
	// which would fail a read of all six at once.
	frame := []Range{{rsp, 5 * 8}, {rsp + 5*8, 8}}
	switch o.kind {
	case opInt, opUD, opSysenter:
		return frame
	case opFarCall:
		return []Range{{rsp, 4 * 8}}
	case opSyscall:
		if syscallMayUD(before) {
			return frame // #UD
		}
		return nil
	case opSysret, opSysexit:
		if cpl(after) == 0 {
			return frame // #GP
		}
		return nil
	}
	if faulted(inst, o, addr, before, after) {
		out := frame
		sys := after.Sys
		if sys == nil {
			sys = before.Sys
		}
		if sys != nil {
			out = append(out, Range{sys.IDTBase, tableLen(sys.IDTLimit)})
			out = append(out, tssRange(sys)...)
		}
		return out
	}
	if inst.Op == x86asm.PUSH {
		if _, ok := inst.Args[0].(x86asm.Mem); ok {
			return []Range{{rsp, 8}}
		}
	}
	return nil
}

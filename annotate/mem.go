package annotate

import (
	"encoding/binary"

	"github.com/sctrace/sctrace/x86"
	"golang.org/x/arch/x86/x86asm"
)

// read returns n bytes at addr from the memory read after (or before) the
// step.
func (a *annotator) read(addr uint64, n int, after bool) ([]byte, bool) {
	for _, m := range a.s.Mem {
		if m.After != after || addr < m.Addr {
			continue
		}
		off := addr - m.Addr
		if off > uint64(len(m.Data)) || uint64(len(m.Data))-off < uint64(n) {
			continue
		}
		return m.Data[off : off+uint64(n)], true
	}
	return nil, false
}

// readStatic reads a descriptor table or TSS, which an instruction does not
// change, from whichever read has it.
func (a *annotator) readStatic(addr uint64, n int) ([]byte, bool) {
	if b, ok := a.read(addr, n, false); ok {
		return b, true
	}
	return a.read(addr, n, true)
}

// words reads n little-endian slots of size bytes (4 or 8) at addr, each
// from whichever read holds it (a frame may have been read in parts).
func (a *annotator) words(addr uint64, n, size int, after bool) ([]uint64, bool) {
	out := make([]uint64, n)
	for i := range out {
		b, ok := a.read(addr+uint64(i*size), size, after)
		if !ok {
			return nil, false
		}
		if size == 4 {
			out[i] = uint64(binary.LittleEndian.Uint32(b))
		} else {
			out[i] = binary.LittleEndian.Uint64(b)
		}
	}
	return out, true
}

// gprs maps x86asm's encoding order to target registers.
var gprs = [16]x86.Reg{
	x86.RAX, x86.RCX, x86.RDX, x86.RBX, x86.RSP, x86.RBP, x86.RSI, x86.RDI,
	x86.R8, x86.R9, x86.R10, x86.R11, x86.R12, x86.R13, x86.R14, x86.R15,
}

// regInfo maps an x86asm register to the target register holding it, its
// width in bits and its bit offset (8 for AH..BH).
func regInfo(r x86asm.Reg) (reg x86.Reg, bits int, shift uint, ok bool) {
	switch {
	case r >= x86asm.AL && r <= x86asm.BL:
		return gprs[r-x86asm.AL], 8, 0, true
	case r >= x86asm.AH && r <= x86asm.BH:
		return gprs[r-x86asm.AH], 8, 8, true
	case r >= x86asm.SPB && r <= x86asm.R15B:
		return gprs[r-x86asm.SPB+4], 8, 0, true
	case r >= x86asm.AX && r <= x86asm.R15W:
		return gprs[r-x86asm.AX], 16, 0, true
	case r >= x86asm.EAX && r <= x86asm.R15L:
		return gprs[r-x86asm.EAX], 32, 0, true
	case r >= x86asm.RAX && r <= x86asm.R15:
		return gprs[r-x86asm.RAX], 64, 0, true
	case r == x86asm.RIP:
		return x86.RIP, 64, 0, true
	case r >= x86asm.ES && r <= x86asm.GS:
		return []x86.Reg{x86.ES, x86.CS, x86.SS, x86.DS, x86.FS, x86.GS}[r-x86asm.ES], 16, 0, true
	}
	switch r {
	case x86asm.CR0:
		return x86.CR0, 64, 0, true
	case x86asm.CR2:
		return x86.CR2, 64, 0, true
	case x86asm.CR3:
		return x86.CR3, 64, 0, true
	case x86asm.CR4:
		return x86.CR4, 64, 0, true
	case x86asm.CR8:
		return x86.CR8, 64, 0, true
	}
	return 0, 0, 0, false
}

// regVal reads an x86asm register (or part of one) from a state.
func regVal(st *x86.State, r x86asm.Reg) (uint64, bool) {
	reg, bits, shift, ok := regInfo(r)
	if !ok {
		return 0, false
	}
	v, ok := st.Get(reg)
	if !ok {
		return 0, false
	}
	v >>= shift
	if bits < 64 {
		v &= 1<<bits - 1
	}
	return v, true
}

// effAddr computes a memory operand's offset (without the segment base)
// from the registers before the step.
func (a *annotator) effAddr(m x86asm.Mem) (uint64, bool) {
	return effAddr(a.s.Inst, m, a.b, a.next, a.hasNext)
}

func effAddr(inst x86asm.Inst, m x86asm.Mem, st *x86.State, next uint64, hasNext bool) (uint64, bool) {
	ea := uint64(m.Disp)
	if m.Base != 0 {
		if m.Base == x86asm.RIP || m.Base == x86asm.EIP {
			if !hasNext {
				return 0, false
			}
			ea += next
		} else {
			v, ok := regVal(st, m.Base)
			if !ok {
				return 0, false
			}
			ea += v
		}
	}
	if m.Index != 0 && m.Scale != 0 {
		v, ok := regVal(st, m.Index)
		if !ok {
			return 0, false
		}
		ea += v * uint64(m.Scale)
	}
	if inst.AddrSize == 32 {
		ea &= 0xffffffff
	}
	return ea, true
}

// linear returns a memory operand's linear address: the FS or GS base plus
// the offset (other segment bases are zero in 64-bit mode).
func linear(inst x86asm.Inst, m x86asm.Mem, st *x86.State, next uint64, hasNext bool) (uint64, bool) {
	ea, ok := effAddr(inst, m, st, next, hasNext)
	if !ok {
		return 0, false
	}
	switch m.Segment {
	case x86asm.FS:
		base, ok := st.Get(x86.FSBase)
		return base + ea, ok
	case x86asm.GS:
		base, ok := st.Get(x86.GSBase)
		return base + ea, ok
	}
	return ea, true
}

// memArg returns the instruction's memory operand and its index.
func memArg(inst x86asm.Inst) (x86asm.Mem, int, bool) {
	for i, arg := range inst.Args {
		if arg == nil {
			break
		}
		if m, ok := arg.(x86asm.Mem); ok {
			return m, i, true
		}
	}
	return x86asm.Mem{}, -1, false
}

// MemoryAddress returns the linear address of inst's memory operand when
// it runs at st (length is the instruction's length in bytes, for a
// RIP-relative operand), or false when inst has none or a register it
// needs is unknown.
func MemoryAddress(inst x86asm.Inst, length int, st *x86.State) (uint64, bool) {
	m, _, ok := memArg(inst)
	if !ok {
		return 0, false
	}
	rip, ok := st.Get(x86.RIP)
	return linear(inst, m, st, rip+uint64(length), ok)
}

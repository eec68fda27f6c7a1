package x86

import (
	"encoding/binary"
	"fmt"
)

// Descriptor is a decoded 8-byte segment descriptor from the GDT or LDT:
// the fields sctrace checks, not the base and limit.
type Descriptor struct {
	Type    int  // the 4-bit type field
	System  bool // S bit clear: a gate, TSS or LDT
	DPL     int
	Present bool
	Long    bool // L bit: a 64-bit code segment
}

// DecodeDescriptor decodes the 8-byte segment descriptor at b. It reports
// false when b is too short.
func DecodeDescriptor(b []byte) (Descriptor, bool) {
	if len(b) < 8 {
		return Descriptor{}, false
	}
	return Descriptor{
		Type:    int(b[5] & 0xf),
		System:  b[5]&0x10 == 0,
		DPL:     int(b[5]>>5) & 3,
		Present: b[5]&0x80 != 0,
		Long:    b[6]&0x20 != 0,
	}, true
}

// Types of 64-bit system descriptors that are gates.
const (
	GateCall      = 0xc // a call gate (GDT or LDT)
	GateInterrupt = 0xe // an interrupt gate (IDT): clears IF
	GateTrap      = 0xf // a trap gate (IDT): leaves IF alone
)

// GateSize is the size of a long-mode gate descriptor.
const GateSize = 16

// Gate is a decoded 16-byte long-mode gate descriptor (IDT interrupt or
// trap gate, GDT call gate).
type Gate struct {
	Offset   uint64 // handler address
	Selector uint16 // code segment of the handler
	IST      int    // interrupt stack table index, 0 for none
	Type     int    // GateInterrupt, GateTrap or GateCall for a 64-bit gate
	DPL      int    // the highest CPL allowed to use the gate from software (int n, lcall)
	Present  bool
}

// DecodeGate decodes a 16-byte long-mode gate descriptor. It reports false
// when b is too short.
func DecodeGate(b []byte) (Gate, bool) {
	if len(b) < GateSize {
		return Gate{}, false
	}
	return Gate{
		Offset:   uint64(binary.LittleEndian.Uint16(b[0:])) | uint64(binary.LittleEndian.Uint16(b[6:]))<<16 | uint64(binary.LittleEndian.Uint32(b[8:]))<<32,
		Selector: binary.LittleEndian.Uint16(b[2:]),
		IST:      int(b[4] & 7),
		Type:     int(b[5] & 0xf),
		DPL:      int(b[5]>>5) & 3,
		Present:  b[5]&0x80 != 0,
	}, true
}

// TypeName names the gate type.
func (g Gate) TypeName() string {
	switch g.Type {
	case GateInterrupt:
		return "interrupt gate"
	case GateTrap:
		return "trap gate"
	case GateCall:
		return "call gate"
	}
	return fmt.Sprintf("type %#x (not a 64-bit gate)", g.Type)
}

// String renders e.g. "interrupt gate, DPL 3, IST 0, selector 0x10, offset 0x...".
func (g Gate) String() string {
	s := fmt.Sprintf("%s, DPL %d, IST %d, selector %#x, offset %#x", g.TypeName(), g.DPL, g.IST, g.Selector, g.Offset)
	if !g.Present {
		s += ", not present"
	}
	return s
}

// Offsets in the 64-bit task-state segment.
const (
	TSSRSP0 = 0x04 // RSP0: the stack for an entry to CPL 0
	TSSRSP1 = 0x0c
	TSSRSP2 = 0x14 // unused by the CPU in long mode (Linux parks the user RSP here)
	TSSIST1 = 0x24 // IST1..IST7, 8 bytes each
	TSSSize = 0x68 // the TSS without an I/O permission bitmap
)

// TSS is the part of a 64-bit task-state segment the CPU uses to switch
// stacks.
type TSS struct {
	RSP [3]uint64 // RSP0..RSP2
	IST [8]uint64 // IST1..IST7 at [1..7], as a gate's IST field numbers them; [0] unused
}

// DecodeTSS decodes a 64-bit TSS. It reports false when b is shorter than
// TSSSize.
func DecodeTSS(b []byte) (TSS, bool) {
	if len(b) < TSSSize {
		return TSS{}, false
	}
	var t TSS
	for i := range t.RSP {
		t.RSP[i] = binary.LittleEndian.Uint64(b[TSSRSP0+8*i:])
	}
	for i := 1; i < len(t.IST); i++ {
		t.IST[i] = binary.LittleEndian.Uint64(b[TSSIST1+8*(i-1):])
	}
	return t, true
}

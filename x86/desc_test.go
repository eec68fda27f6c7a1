package x86

import (
	"encoding/binary"
	"testing"
)

func TestDecodeDescriptor(t *testing.T) {
	// The teaching kernel's user code segment: 64-bit, DPL 3, present.
	b := binary.LittleEndian.AppendUint64(nil, 0x0020fb0000000000)
	d, ok := DecodeDescriptor(b)
	if !ok || d.System || d.DPL != 3 || !d.Present || !d.Long || d.Type != 0xb {
		t.Errorf("DecodeDescriptor(%x) = %+v, %v", b, d, ok)
	}
	if _, ok := DecodeDescriptor(b[:7]); ok {
		t.Error("DecodeDescriptor accepted 7 bytes")
	}
}

func TestDecodeGate(t *testing.T) {
	b := make([]byte, GateSize)
	var off uint64 = 0xffffffff81001234
	binary.LittleEndian.PutUint16(b[0:], uint16(off))
	binary.LittleEndian.PutUint16(b[2:], 0x10)
	b[4] = 2
	b[5] = 0x80 | 3<<5 | GateInterrupt
	binary.LittleEndian.PutUint16(b[6:], uint16(off>>16))
	binary.LittleEndian.PutUint32(b[8:], uint32(off>>32))
	g, ok := DecodeGate(b)
	if !ok || g.Offset != off || g.Selector != 0x10 || g.IST != 2 || g.Type != GateInterrupt || g.DPL != 3 || !g.Present {
		t.Errorf("DecodeGate = %+v", g)
	}
	if got, want := g.String(), "interrupt gate, DPL 3, IST 2, selector 0x10, offset 0xffffffff81001234"; got != want {
		t.Errorf("Gate.String = %q, want %q", got, want)
	}
	if _, ok := DecodeGate(make([]byte, 8)); ok {
		t.Error("DecodeGate accepted 8 bytes")
	}
}

func TestDecodeTSS(t *testing.T) {
	b := make([]byte, TSSSize)
	binary.LittleEndian.PutUint64(b[TSSRSP0:], 0x1000)
	binary.LittleEndian.PutUint64(b[TSSRSP2:], 0x2000)
	binary.LittleEndian.PutUint64(b[TSSIST1+8*6:], 0x7000)
	tss, ok := DecodeTSS(b)
	if !ok || tss.RSP[0] != 0x1000 || tss.RSP[2] != 0x2000 || tss.IST[7] != 0x7000 || tss.IST[1] != 0 {
		t.Errorf("DecodeTSS = %+v", tss)
	}
	if _, ok := DecodeTSS(b[:TSSSize-1]); ok {
		t.Error("DecodeTSS accepted a short TSS")
	}
}

func TestAddressHalves(t *testing.T) {
	tests := []struct {
		addr                               uint64
		kernelHalf, canonical, canonicalKH bool
	}{
		{0x401000, false, true, false},
		{0x00007fffffffffff, false, true, false},
		{0x0000800000000000, false, false, false},
		{0xffff800000000000, true, true, true},
		{0xffffffff81000000, true, true, true},
		{0x8000000000000000, true, false, false},
	}
	for _, tt := range tests {
		if got := KernelHalf(tt.addr); got != tt.kernelHalf {
			t.Errorf("KernelHalf(%#x) = %v", tt.addr, got)
		}
		if got := Canonical(tt.addr); got != tt.canonical {
			t.Errorf("Canonical(%#x) = %v", tt.addr, got)
		}
		if got := CanonicalKernel(tt.addr); got != tt.canonicalKH {
			t.Errorf("CanonicalKernel(%#x) = %v", tt.addr, got)
		}
	}
}

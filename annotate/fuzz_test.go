package annotate

import (
	"encoding/binary"
	"testing"

	"github.com/sctrace/sctrace/x86"
	"golang.org/x/arch/x86/x86asm"
)

// fuzzState builds a state from bytes: a known mask, then register values.
func fuzzState(b []byte) *x86.State {
	s := &x86.State{}
	if len(b) < 8 {
		return s
	}
	known := binary.LittleEndian.Uint64(b)
	b = b[8:]
	for r := x86.Reg(0); r < x86.NumRegs; r++ {
		if known&(1<<r) == 0 {
			continue
		}
		var v uint64
		if len(b) >= 8 {
			v, b = binary.LittleEndian.Uint64(b), b[8:]
		} else if len(b) > 0 {
			v, b = uint64(b[0]), b[1:]
		}
		s.Set(r, v)
	}
	if known>>63 != 0 {
		s.Sys = &x86.SysRegs{CPL: int(known>>60) & 3, Segments: map[string]x86.Segment{"TR": {Base: s.R[x86.RSP], Limit: 0x67}},
			GDTBase: s.R[x86.RAX], GDTLimit: uint32(known >> 40), IDTBase: s.R[x86.RBX], IDTLimit: uint32(known >> 48)}
	}
	return s
}

func FuzzAnnotate(f *testing.F) {
	f.Add(insSyscall, qwords(^uint64(0), 1, 2, 3), qwords(^uint64(0), 4, 5, 6), qwords(7, 8, 9))
	f.Add(insIretq, qwords(0x8000000000ffffff, 0, 0, 0, 0, 0, 0, 0, 0x1000), qwords(0xff), qwords(1, 2, 3, 4, 5, 6))
	f.Add(insInt80, qwords(1<<63|0xfff<<48|0xff<<40|0x3ffff), qwords(0), qwords(0))
	f.Add(insLcall, qwords(^uint64(0)), qwords(^uint64(0)), qwords(0, 0))
	f.Add(insSaveRSP, qwords(^uint64(0)), qwords(^uint64(0)), []byte{})
	f.Add(insEndbr64, []byte{}, []byte{}, []byte{})
	f.Add([]byte{0xff, 0xff, 0xff}, qwords(3), qwords(3), qwords(3))
	f.Fuzz(func(t *testing.T, code, before, after, mem []byte) {
		if len(code) > 16 {
			code = code[:16]
		}
		inst, _, _ := Decode(code)
		s := Step{Index: 1, Bytes: code, Inst: inst, Before: fuzzState(before), After: fuzzState(after)}
		s.Addr = s.Before.R[x86.RIP]
		// Hand the annotator whatever it asks for, filled from mem.
		for i, r := range append(MemoryBefore(inst, s.Addr, s.Before), MemoryAfter(inst, s.Addr, s.Before, s.After)...) {
			n := min(r.Len, 1<<16)
			data := make([]byte, n)
			copy(data, mem)
			s.Mem = append(s.Mem, Memory{Addr: r.Addr, Data: data, After: i%2 == 1})
		}
		s.Mem = append(s.Mem, Memory{Addr: s.Before.R[x86.RSP], Data: mem}, Memory{Addr: s.After.R[x86.RSP], Data: mem, After: true})
		c := &Context{
			Symbols: testSyms,
			Regions: []Region{{Name: "r", Kind: RegionKernelStack, Start: s.Before.R[x86.RSP] &^ 0xfff, End: s.Before.R[x86.RSP]&^0xfff + 0x1000, FrameTop: s.Before.R[x86.RSP]&^0xfff + 0x1000}},
		}
		for i := 0; i < 2; i++ { // twice, so knowledge from the first is checked
			effects := Annotate(s, c)
			for _, e := range effects {
				if e.Kind == "" || e.Text == "" || (e.Verdict != NoVerdict && e.Verdict != OK && e.Verdict != Finding) {
					t.Fatalf("malformed effect %+v", e)
				}
			}
			Events(s, effects, c)
		}
		_ = Mnemonic(inst, code, s.Addr, nil)
		if sp := Spell(inst, code); inst.Op != 0 && (sp.ATT == "" || sp.Intel == "" || NormalizeMnemonic(sp.ATT) != sp.ATT) {
			t.Fatalf("Spell(% x) = %+v: a decoded instruction needs a canonical name in both syntaxes", code, sp)
		}
	})
}

// TestAnnotateNil checks that missing states and context are tolerated.
func TestAnnotateNil(t *testing.T) {
	inst, _ := x86asm.Decode(insSyscall, 64)
	effects := Annotate(Step{Inst: inst, Bytes: insSyscall}, nil)
	for _, e := range effects {
		if e.Verdict == Finding {
			t.Errorf("finding from an empty step: %q", e.Text)
		}
	}
	if len(Events(Step{Inst: inst}, effects, nil)) == 0 {
		t.Error("no syscall event for a syscall")
	}
}

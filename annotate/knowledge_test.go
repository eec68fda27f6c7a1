package annotate

import (
	"encoding/json"
	"testing"

	"github.com/sctrace/sctrace/x86"
)

func TestKnowledgeLearn(t *testing.T) {
	k := NewKnowledge()
	k.Learn(MSR{Index: x86.MSRFMASK, Value: 0x200, Known: 0x244, Source: SourceInferred, Step: 1, How: "syscall"})
	// More bits, agreeing on the common ones.
	k.Learn(MSR{Index: x86.MSRFMASK, Value: 0x600, Known: 0x641, Source: SourceInferred, Step: 5, How: "syscall"})
	m := k.MSR(x86.MSRFMASK)
	if m.Value != 0x600 || m.Known != 0x645 || m.Step != 1 || len(m.Also) != 1 || m.Also[0].Step != 5 {
		t.Fatalf("after two agreeing observations: %+v", m)
	}
	// A confirmation only counts.
	k.Learn(MSR{Index: x86.MSRFMASK, Value: 0x200, Known: 0x200, Source: SourceInferred, Step: 6})
	if m := k.MSR(x86.MSRFMASK); m.Confirmed != 1 || len(m.Also) != 1 {
		t.Errorf("confirmation: %+v", m)
	}
	// A stronger source takes the lead, keeping the older observation.
	k.Learn(MSR{Index: x86.MSRFMASK, Value: 0x600, Known: ^uint64(0), Source: SourceProbed, Step: 9, How: "rdmsr probe"})
	if m := k.MSR(x86.MSRFMASK); m.Source != SourceProbed || m.Step != 9 || m.Known != ^uint64(0) || m.Also[len(m.Also)-1].Source != SourceInferred {
		t.Errorf("probe: %+v", m)
	}
	// A contradiction replaces.
	bad := MSR{Index: x86.MSRFMASK, Value: 0, Known: 0x200, Source: SourceInferred, Step: 10}
	if c := k.Conflict(bad); c != 0x200 {
		t.Errorf("Conflict = %#x, want 0x200", c)
	}
	k.Learn(bad)
	if m := k.MSR(x86.MSRFMASK); m.Known != 0x200 || m.Value != 0 || m.Step != 10 || m.Also != nil {
		t.Errorf("after a contradiction: %+v", m)
	}
}

func TestKnowledgeSortedAndStrings(t *testing.T) {
	k := NewKnowledge()
	k.Learn(MSR{Index: x86.MSRLSTAR, Value: lstar, Known: ^uint64(0), Source: SourceInferred, Step: 3, How: "RIP after syscall"})
	k.Learn(MSR{Index: x86.MSRSysenterCS, Value: 0x10, Known: 0xfffc, Source: SourceInferred, Step: 4})
	k.Learn(MSR{Index: x86.MSRSTAR, Value: 0x10 << 32, Known: 0xffff << 32, Source: SourceRead, Step: 5})
	got := k.Sorted()
	if len(got) != 3 || got[0].Index != x86.MSRSysenterCS || got[1].Index != x86.MSRSTAR || got[2].Index != x86.MSRLSTAR {
		t.Fatalf("Sorted = %+v", got)
	}
	if s, want := got[2].String(), "IA32_LSTAR = 0xffffffff81c00080 (inferred at step 3: RIP after syscall)"; s != want {
		t.Errorf("String = %q, want %q", s, want)
	}
	if s, want := got[0].ValueString(), "0x10 (known bits 0xfffc)"; s != want {
		t.Errorf("ValueString = %q, want %q", s, want)
	}
	if x86.MSRName(0x1234) != "MSR 0x1234" || x86.MSRName(x86.MSRKernelGSBase) != "IA32_KERNEL_GS_BASE" {
		t.Errorf("MSRName: %q, %q", x86.MSRName(0x1234), x86.MSRName(x86.MSRKernelGSBase))
	}
	b, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	var back Knowledge
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if m := back.MSR(x86.MSRLSTAR); m == nil || m.Value != lstar || m.Source != SourceInferred {
		t.Errorf("JSON round trip lost LSTAR: %s", b)
	}
	var nilK *Knowledge
	if nilK.Sorted() != nil || nilK.MSR(x86.MSRLSTAR) != nil {
		t.Error("nil Knowledge is not empty")
	}
}

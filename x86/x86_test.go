package x86

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

func TestParseReg(t *testing.T) {
	tests := []struct {
		name string
		want Reg
		ok   bool
	}{
		{"rax", RAX, true},
		{"RIP", RIP, true},
		{"eflags", RFLAGS, true},
		{"rflags", RFLAGS, true},
		{"k_gs_base", KernelGSBase, true},
		{"kernel_gs_base", KernelGSBase, true},
		{"efer", EFER, true},
		{"xmm0", 0, false},
	}
	for _, tt := range tests {
		got, ok := ParseReg(tt.name)
		if ok != tt.ok || got != tt.want {
			t.Errorf("ParseReg(%q) = %v, %v; want %v, %v", tt.name, got, ok, tt.want, tt.ok)
		}
		if ok && tt.name == strings.ToLower(tt.name) && got.String() != tt.name && tt.name != "rflags" && tt.name != "kernel_gs_base" {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), tt.name)
		}
	}
}

func TestStateKnownAndCPL(t *testing.T) {
	var s State
	if s.CPL() != -1 {
		t.Errorf("CPL with CS unknown = %d, want -1", s.CPL())
	}
	if _, ok := s.Get(CR3); ok {
		t.Error("CR3 known in a zero State")
	}
	s.Set(CS, 0x33)
	s.Set(CR3, 0x1000)
	if s.CPL() != 3 || !s.User() {
		t.Errorf("CPL with CS=0x33 = %d", s.CPL())
	}
	next := s
	next.Set(CS, 0x10)
	next.Set(RCX, 0)
	ch := s.Changed(&next)
	if len(ch) != 2 || ch[0] != RCX || ch[1] != CS {
		t.Errorf("Changed = %v, want [rcx cs] (rcx became known as zero)", ch)
	}
}

func TestDecoders(t *testing.T) {
	tests := []struct {
		name, got, want string
	}{
		{"rflags", Flags(0x246).String(), "IF ZF PF"},
		{"rflags iopl", Flags(0x3202).String(), "IF IOPL=3"},
		{"rflags none", Flags(0x2).String(), "-"},
		{"cr0", CR0Flags(0x80050033).String(), "PE MP ET NE WP AM PG"},
		{"cr4", CR4Flags(0x3206b0).String(), "PSE PAE PGE OSFXSR OSXMMEXCPT PCIDE SMEP SMAP"},
		{"efer", EFERFlags(0xd01).String(), "SCE LME LMA NXE"},
		{"cr3 kernel", CR3Fields{Value: 0x10a000}.String(), "pgd 0x10a000 (kernel half)"},
		{"cr3 user", CR3Fields{Value: 0x10b000}.String(), "pgd 0x10b000 (kpti user half)"},
		{"cr3 pcid", CR3Fields{Value: 1<<63 | 0x10b000 | 0x801, PCIDE: true}.String(), "pgd 0x10b000 (kpti user half) pcid 2049 noflush"},
		{"selector user cs", Selector(0x33).String(), "0x33 (GDT[6] RPL3)"},
		{"selector null", Selector(0x3).String(), "0x3 (null RPL3)"},
		{"selector ldt", Selector(0x0f).String(), "0xf (LDT[1] RPL3)"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

func TestParseInfoRegisters(t *testing.T) {
	tests := []struct {
		file     string
		cpl      int
		tr       Segment
		gdtBase  uint64
		idtLimit uint32
		efer     uint64
		csDPL    int
	}{
		{"info-registers-reset.txt", 0, Segment{Selector: 0, Base: 0, Limit: 0xffff, Attr: 0x8b00}, 0, 0xffff, 0, 0},
		{"info-registers-long.txt", 3, Segment{Selector: 0x40, Base: 0xfffffe0000003000, Limit: 0x4087, Attr: 0x8b00}, 0xfffffe0000001000, 0xfff, 0xd01, 3},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			text, err := os.ReadFile("testdata/" + tt.file)
			if err != nil {
				t.Fatal(err)
			}
			s, err := ParseInfoRegisters(string(text))
			if err != nil {
				t.Fatal(err)
			}
			if s.CPL != tt.cpl || s.TR() != tt.tr || s.GDTBase != tt.gdtBase || s.IDTLimit != tt.idtLimit || s.EFER != tt.efer {
				t.Errorf("got CPL %d TR %+v GDT %#x IDT limit %#x EFER %#x", s.CPL, s.TR(), s.GDTBase, s.IDTLimit, s.EFER)
			}
			if got := s.Segments["CS"].DPL(); got != tt.csDPL {
				t.Errorf("CS DPL = %d, want %d", got, tt.csDPL)
			}
		})
	}
}

func TestParseInfoRegistersErrors(t *testing.T) {
	tests := []struct{ name, text, want string }{
		{"empty", "", "no CPL"},
		{"no TR", "RIP=0 RFL=2 CPL=0\n", "no TR"},
		{"bad CPL", "CPL=9\n", "bad CPL"},
		{"short segment", "CPL=0\nCS =0010 0000\n", "segment line"},
		{"bad base", "CPL=0\nCS =0010 zz ffffffff 00a09b00\n", "base"},
	}
	for _, tt := range tests {
		_, err := ParseInfoRegisters(tt.text)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want it to mention %q", tt.name, err, tt.want)
		}
	}
}

func TestStateJSONRoundTrip(t *testing.T) {
	var s State
	s.Set(RAX, 39)
	s.Set(RIP, 0xffffffff81c00080)
	s.Set(KernelGSBase, 0)
	b, err := s.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"rax":"0x27","rip":"0xffffffff81c00080","k_gs_base":"0x0"}`
	if string(b) != want {
		t.Fatalf("MarshalJSON = %s, want %s", b, want)
	}
	var back State
	if err := back.UnmarshalJSON(b); err != nil {
		t.Fatal(err)
	}
	if back.R != s.R || back.Known != s.Known {
		t.Errorf("round trip: got %+v, want %+v", back, s)
	}
}

func TestStateJSONErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{`[]`, "registers"},
		{`{"xmm0":"0x1"}`, "unknown register"},
		{`{"rax":"12"}`, "not a 0x-prefixed"},
		{`{"rax":"0x1ffffffffffffffff"}`, "not a 64-bit"},
	}
	for _, tt := range tests {
		var s State
		err := s.UnmarshalJSON([]byte(tt.in))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("UnmarshalJSON(%s) = %v, want error containing %q", tt.in, err, tt.want)
		}
	}
}

// TestStateJSONFastPath checks that the allocation-free reading of the
// shape MarshalJSON writes agrees with the general one, and that anything
// else falls through to it.
func TestStateJSONFastPath(t *testing.T) {
	tests := []struct {
		in   string
		fast bool
	}{
		{`{}`, true},
		{` { "rax" : "0x27" ,` + "\n" + ` "rip":"0xFFFFffff81c00080" } `, true},
		{`{"rax":"0x0000000000000000027"}`, false}, // more than 16 digits
		{`{"RAX":"0x27"}`, false},                  // another spelling
		{`{"rflags":"0x2"}`, false},                // an alias
		{`{"r\u0061x":"0x27"}`, false},             // an escape
		{`{"rax":"0X27"}`, false},
		{`{"rax":"0x27",}`, false},
		{`{"rax":"0x27"} x`, false},
		{`{"rax":"0x"}`, false},
	}
	for _, tt := range tests {
		fast, ok := parseStateFast([]byte(tt.in))
		if ok != tt.fast {
			t.Errorf("parseStateFast(%s) ok = %v, want %v", tt.in, ok, tt.fast)
		}
		var m map[string]string
		if err := json.Unmarshal([]byte(tt.in), &m); err != nil {
			continue // the general path refuses it too
		}
		var general State
		for name, v := range m {
			r, known := ParseReg(name)
			x, err := ParseHex(v)
			if !known || err != nil {
				general.Known = ^uint64(0) // mark: the general path fails
				break
			}
			general.Set(r, x)
		}
		if ok && (fast.R != general.R || fast.Known != general.Known) {
			t.Errorf("parseStateFast(%s) = %+v, the general path %+v", tt.in, fast, general)
		}
	}
}

func TestHexJSON(t *testing.T) {
	tests := []struct {
		in   string
		want Hex
		err  string
	}{
		{`"0x27"`, 0x27, ""},
		{`"0xffffffffffffffff"`, 0xffffffffffffffff, ""},
		{`"0X1f"`, 0x1f, ""},
		{`"0x\u0031"`, 1, ""},
		{`"27"`, 0, "not a 0x-prefixed"},
		{`27`, 0, "want a hex string"},
		{`"0x10000000000000000"`, 0, "not a 64-bit"},
	}
	for _, tt := range tests {
		var h Hex
		err := h.UnmarshalJSON([]byte(tt.in))
		if tt.err == "" && (err != nil || h != tt.want) || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("Hex.UnmarshalJSON(%s) = %#x, %v; want %#x, %q", tt.in, h, err, tt.want, tt.err)
		}
	}
}

func TestIsBzImage(t *testing.T) {
	hdr := func(sig string, n int) []byte {
		b := make([]byte, n)
		copy(b[0x202:], sig)
		return b
	}
	for _, tt := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"boot header", hdr("HdrS", 0x240), true},
		{"just long enough", hdr("HdrS", 0x206), true},
		{"other signature", hdr("HdrX", 0x240), false},
		{"too short", []byte("MZ"), false},
		{"ELF", []byte("\x7fELF"), false},
	} {
		if got := IsBzImage(tt.b); got != tt.want {
			t.Errorf("%s: IsBzImage = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestPFError checks the #PF error code's reading against the SDM's
// definition (Vol. 3A, §4.7): bit 0 P, 1 W/R, 2 U/S, 3 RSVD, 4 I/D, 5 PK,
// 6 SS, 15 SGX.
func TestPFError(t *testing.T) {
	tests := []struct {
		code PFError
		want string
	}{
		{0x0, "not present, read, supervisor"},
		{0x4, "not present, read, user"},
		{0x6, "not present, write, user"},
		{0x7, "protection violation, write, user"},
		{0x15, "protection violation, read, user, instruction fetch"},
		{0x9, "protection violation, read, supervisor, reserved bit set"},
		{0x20 | 0x4, "not present, read, user, protection key"},
		{0x40 | 0x7, "protection violation, write, user, shadow stack"},
		{0x8000 | 0x1, "protection violation, read, supervisor, SGX"},
	}
	for _, tt := range tests {
		if got := tt.code.String(); got != tt.want {
			t.Errorf("PFError(%#x) = %q, want %q", uint64(tt.code), got, tt.want)
		}
	}
}

// TestCompatMode reads the mode from the CS line of `info registers`: a
// 64-bit code segment (QEMU's CS64, L set) and the 32-bit one a 32-bit
// Linux process runs in: __USER32_CS, GDT_ENTRY_INIT(0xc0fb, 0, 0xfffff)
// in Linux's segment.h (L clear, D and G set), 00cffb00 as QEMU shows the
// descriptor's flags.
func TestCompatMode(t *testing.T) {
	long, err := os.ReadFile("testdata/info-registers-long.txt")
	if err != nil {
		t.Fatal(err)
	}
	cs64 := "CS =0033 0000000000000000 ffffffff 00a0fb00 DPL=3 CS64 [-RA]"
	if !strings.Contains(string(long), cs64) {
		t.Fatalf("testdata/info-registers-long.txt lacks %q", cs64)
	}
	compat := strings.Replace(string(long), cs64, "CS =0023 0000000000000000 ffffffff 00cffb00 DPL=3 CS32 [-RA]", 1)
	for _, tt := range []struct {
		name, text string
		want       bool
	}{
		{"64-bit", string(long), false},
		{"compatibility", compat, true},
	} {
		s, err := ParseInfoRegisters(tt.text)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := s.CompatMode(); got != tt.want {
			t.Errorf("%s: CompatMode() = %v, want %v", tt.name, got, tt.want)
		}
	}
	var none *SysRegs
	if none.CompatMode() {
		t.Error("CompatMode of no registers read")
	}
}

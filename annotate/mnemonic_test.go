package annotate

import "testing"

// TestSpell checks Spell against what objdump -d (GNU binutils 2.40) prints
// for the same bytes in 64-bit mode, in AT&T and with -M intel.
func TestSpell(t *testing.T) {
	tests := []struct {
		name       string
		code       []byte
		att, intel string
	}{
		{"syscall", []byte{0x0f, 0x05}, "syscall", "syscall"},
		{"sysret to 64-bit code", []byte{0x48, 0x0f, 0x07}, "sysretq", "sysretq"},
		{"sysret to 32-bit code", []byte{0x0f, 0x07}, "sysretl", "sysretd"},
		{"sysenter", []byte{0x0f, 0x34}, "sysenter", "sysenter"},
		{"sysexit to 64-bit code", []byte{0x48, 0x0f, 0x35}, "sysexitq", "sysexitq"},
		{"sysexit to 32-bit code", []byte{0x0f, 0x35}, "sysexitl", "sysexitd"},
		{"iretq", []byte{0x48, 0xcf}, "iretq", "iretq"},
		{"iret, 32-bit frame", []byte{0xcf}, "iret", "iret"},
		{"iret, 16-bit frame", []byte{0x66, 0xcf}, "iretw", "iretw"},
		{"far return to 64-bit code", []byte{0x48, 0xcb}, "lretq", "retfq"},
		{"far return, 32-bit", []byte{0xcb}, "lret", "retf"},
		{"far return, 16-bit", []byte{0x66, 0xcb}, "lretw", "retfw"},
		{"far return popping bytes", []byte{0x48, 0xca, 0x08, 0x00}, "lretq", "retfq"},
		{"far call through memory", []byte{0xff, 0x1c, 0x25, 0, 0, 0x40, 0}, "lcall", "call"},
		{"far call, REX.W", []byte{0x48, 0xff, 0x1c, 0x25, 0, 0, 0x40, 0}, "lcall", "call"},
		{"int $0x80", []byte{0xcd, 0x80}, "int", "int"},
		{"int3", []byte{0xcc}, "int3", "int3"},
		{"int $0x3 (two bytes)", []byte{0xcd, 0x03}, "int", "int"},
		{"int $0xcc", []byte{0xcd, 0xcc}, "int", "int"},
		{"int1 (icebp)", []byte{0xf1}, "int1", "int1"},
		{"ud2", []byte{0x0f, 0x0b}, "ud2", "ud2"},
		{"ud1", []byte{0x0f, 0xb9, 0x00}, "ud1", "ud1"},
		{"swapgs", []byte{0x0f, 0x01, 0xf8}, "swapgs", "swapgs"},
		{"clac (undecoded by x86asm)", []byte{0x0f, 0x01, 0xca}, "clac", "clac"},
		{"endbr64 (undecoded by x86asm)", []byte{0xf3, 0x0f, 0x1e, 0xfa}, "endbr64", "endbr64"},
		{"call rel32", []byte{0xe8, 0, 0, 0, 0}, "call", "call"},
		{"call through memory", []byte{0xff, 0x15, 0, 0, 0, 0}, "call", "call"},
		{"notrack call", []byte{0x3e, 0xff, 0xd0}, "call", "call"},
		{"bnd call", []byte{0xf2, 0xe8, 0, 0, 0, 0}, "call", "call"},
		{"ret", []byte{0xc3}, "ret", "ret"},
		{"repz ret", []byte{0xf3, 0xc3}, "ret", "ret"},
		{"jne", []byte{0x75, 0x02}, "jne", "jne"},
		{"wrmsr", []byte{0x0f, 0x30}, "wrmsr", "wrmsr"},
		{"mov to cr3", []byte{0x0f, 0x22, 0xd8}, "mov", "mov"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inst, _, err := Decode(tt.code)
			if err != nil {
				t.Fatalf("Decode(% x): %v", tt.code, err)
			}
			got := Spell(inst, tt.code)
			if got.ATT != tt.att || got.Intel != tt.intel {
				t.Errorf("Spell(% x) = %+v, want {ATT:%s Intel:%s}", tt.code, got, tt.att, tt.intel)
			}
			if c := CanonicalMnemonic(inst, tt.code); c != tt.att {
				t.Errorf("CanonicalMnemonic(% x) = %q, want %q", tt.code, c, tt.att)
			}
			// Both spellings name the same instruction, but for a far
			// call: Intel syntax spells it call, as a near one.
			if n := NormalizeMnemonic(got.Intel); n != tt.att && tt.att != "lcall" {
				t.Errorf("NormalizeMnemonic(%q) = %q, want %q", got.Intel, n, tt.att)
			}
		})
	}
}

func TestSpellUndecoded(t *testing.T) {
	code := []byte{0xce} // into: invalid in 64-bit mode
	inst, _, err := Decode(code)
	if err == nil {
		t.Fatalf("Decode(% x) succeeded", code)
	}
	if got := Spell(inst, code); got != (Spelling{}) {
		t.Errorf("Spell(% x) = %+v, want nothing", code, got)
	}
}

// TestNormalizeMnemonic covers every spelling objdump uses for the
// system-call instructions (AT&T, -M intel, -M suffix, older binutils).
func TestNormalizeMnemonic(t *testing.T) {
	tests := []struct{ in, want string }{
		{"syscall", "syscall"},
		{"SYSCALL", "syscall"},
		{"sysretq", "sysretq"},
		{"sysretl", "sysretl"},
		{"sysretd", "sysretl"},
		{"sysret", "sysretl"},
		{"sysenter", "sysenter"},
		{"sysexitq", "sysexitq"},
		{"sysexitl", "sysexitl"},
		{"sysexitd", "sysexitl"},
		{"sysexit", "sysexitl"},
		{"iretq", "iretq"},
		{"iret", "iret"},
		{"iretl", "iret"},
		{"iretd", "iret"},
		{"iretw", "iretw"},
		{"lretq", "lretq"},
		{"retfq", "lretq"},
		{"lret", "lret"},
		{"lretl", "lret"},
		{"retf", "lret"},
		{"retfw", "lretw"},
		{"lcall", "lcall"},
		{"lcalll", "lcall"},
		{"lcallq", "lcall"},
		{"int", "int"},
		{"int3", "int3"},
		{"int1", "int1"},
		{"icebp", "int1"},
		{"ud2", "ud2"},
		{"ud2a", "ud2"},
		{"swapgs", "swapgs"},
		{"call", "call"},
		{"callq", "call"},
		{"retq", "ret"},
		{"jnz", "jne"},
		{" Jne ", "jne"},
		{"vmcall", "vmcall"},
	}
	for _, tt := range tests {
		if got := NormalizeMnemonic(tt.in); got != tt.want {
			t.Errorf("NormalizeMnemonic(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

package symbols

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestLoadELF(t *testing.T) {
	tab, err := Load("testdata/tiny.elf")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tab.Source, "tiny.elf") {
		t.Errorf("Source = %q", tab.Source)
	}
	tests := []struct {
		addr uint64
		want string
	}{
		{0xffffffff81000000, "entry"},
		{0xffffffff81000001, "entry+0x1"},
		{0xffffffff81000002, "inner"}, // a label inside a function names what follows it
		{0xffffffff81000003, "inner+0x1"},
		{0xffffffff81000004, "after"},
		{0xffffffff81000005, "after+0x1"},
		{0xffffffff81001000, "counter"},
		{0xffffffff80ffffff, ""},
		{0x1000, ""},
	}
	for _, tt := range tests {
		if got := tab.Symbolize(tt.addr); got != tt.want {
			t.Errorf("Symbolize(%#x) = %q, want %q", tt.addr, got, tt.want)
		}
	}
	s, ok := tab.Find("counter")
	if !ok || s.Size != 8 || s.Type != 'D' {
		t.Errorf("Find(counter) = %+v, %v", s, ok)
	}
	if s, ok := tab.Find("inner"); !ok || s.Type != 't' {
		t.Errorf("Find(inner) = %+v, %v; want a local text symbol", s, ok)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, path, want string
		is               error
	}{
		{"missing", filepath.Join(dir, "none"), "no such file", nil},
		{"i386 ELF", "testdata/i386.elf", "want x86-64", nil},
		{"corrupt ELF", write("bad.elf", "\x7fELF\x02\x01\x01garbage"), "symbols from", nil},
		{"not a map", write("notes.txt", "hello world\n"), "line 1", ErrFormat},
		{"bad address", write("map.txt", "zzzz T start\n"), "bad address", ErrFormat},
		{"empty", write("empty.map", "\n# nothing\n"), "no symbols", ErrFormat},
		// The whole System.map of linux-image-6.1.0-57-cloud-amd64-unsigned
		// and of linux-image-6.12.118+deb12-cloud-amd64-unsigned.
		{"Debian placeholder", "testdata/System.map-debian-placeholder", "the real one is in the kernel's -dbg package", ErrPlaceholder},
		{"name with spaces", write("spaces.map", "ffffffff81000000 T two words\n"), "a name with spaces", ErrFormat},
		// A bzImage's first bytes: "MZ", then the boot protocol's header
		// signature "HdrS" at 0x202 (Documentation/arch/x86/boot.rst).
		{"bzImage", write("vmlinuz", "MZ"+strings.Repeat("\x00", 0x200)+"HdrS\x0f\x02"), "a bzImage (a compressed, stripped kernel) holds no symbol table", ErrFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.path)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load(%s) = %v, want error containing %q", tt.path, err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
		})
	}
}

func TestParseMap(t *testing.T) {
	const m = `ffffffff81000000 T _text
ffffffff81c00000 T entry_SYSCALL_64
ffffffff81c00080 T entry_SYSCALL_64_safe_stack
ffffffff81c000a0 t entry_SYSCALL_64_after_hwframe
ffffffffc0000000 t init_module	[dummy]
`
	tab, err := ParseMap(strings.NewReader(m))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr uint64
		want string
	}{
		{0xffffffff81c00000, "entry_SYSCALL_64"},
		{0xffffffff81c00010, "entry_SYSCALL_64+0x10"},
		{0xffffffff81c000b2, "entry_SYSCALL_64_after_hwframe+0x12"},
		{0xffffffff81000000 + 1<<20, ""}, // beyond 64 KiB of _text with nothing nearer
		{0xffffffffc0000004, "init_module+0x4"},
	}
	for _, tt := range tests {
		if got := tab.Symbolize(tt.addr); got != tt.want {
			t.Errorf("Symbolize(%#x) = %q, want %q", tt.addr, got, tt.want)
		}
	}
	if a, ok := tab.Addr("entry_SYSCALL_64"); !ok || a != 0xffffffff81c00000 {
		t.Errorf("Addr(entry_SYSCALL_64) = %#x, %v", a, ok)
	}
}

func TestMergeAndNil(t *testing.T) {
	var nilTab *Table
	if nilTab.Symbolize(1) != "" || nilTab.Len() != 0 {
		t.Error("nil table should name nothing")
	}
	a := New("a", []Symbol{{Name: "x", Addr: 0x1000, Size: 0x10}})
	b := New("b", []Symbol{{Name: "y", Addr: 0x2000, Size: 0x10}})
	m := a.Merge(b)
	if m.Len() != 2 || m.Symbolize(0x2004) != "y+0x4" || m.Source != "a + b" {
		t.Errorf("merged: len %d, %q, source %q", m.Len(), m.Symbolize(0x2004), m.Source)
	}
	if nilTab.Merge(b) != b || a.Merge(nil) != a {
		t.Error("merging with nil should return the other table")
	}
}

func TestNewEscapesControlCharacters(t *testing.T) {
	tab := New("list\x1b[2J", []Symbol{{Name: "evil\x1b]0;pwned\x07", Addr: 0x1000, Size: 0x10}, {Name: "entry_SYSCALL_64", Addr: 0x2000}})
	if s := tab.Symbolize(0x1004); s != `evil\x1b]0;pwned\x07+0x4` {
		t.Errorf("Symbolize = %q", s)
	}
	if tab.Source != `list\x1b[2J` {
		t.Errorf("Source = %q", tab.Source)
	}
	if a, ok := tab.Addr("entry_SYSCALL_64"); !ok || a != 0x2000 {
		t.Errorf("a clean name no longer found: %#x %v", a, ok)
	}
}

// TestLookupPrefersFunctionsOverMarkers names addresses where several Linux
// symbols start, from excerpts of the real kallsyms tables of Debian's 6.1
// and 6.12 kernels. The facts: in arch/x86/entry/entry_64.S
// common_interrupt_return is a local function whose first instruction is
// also the global label swapgs_restore_regs_and_return_to_usermode, and the
// linker script ends .irqentry.text (__irqentry_text_end) at the same
// address; in arch/x86/lib/retpoline.S __x86_indirect_thunk_array starts
// with the label __x86_indirect_thunk_rax; scripts/kallsyms.c puts linker
// markers after the other names at one address. A marker must never win.
func TestLookupPrefersFunctionsOverMarkers(t *testing.T) {
	tests := []struct {
		file    string
		addr    uint64
		want    string
		aliases []string
	}{
		{"kallsyms-6.1.0-57.map", 0xffffffff81c010d0, "swapgs_restore_regs_and_return_to_usermode", []string{"common_interrupt_return"}},
		{"kallsyms-6.1.0-57.map", 0xffffffff81c010f3, "swapgs_restore_regs_and_return_to_usermode+0x23", []string{"common_interrupt_return"}},
		{"kallsyms-6.1.0-57.map", 0xffffffff81e01740, "__x86_indirect_thunk_rax", []string{"__x86_indirect_thunk_array"}},
		{"kallsyms-6.1.0-57.map", 0xffffffff81e0174c, "__x86_indirect_thunk_rax+0xc", []string{"__x86_indirect_thunk_array"}},
		{"kallsyms-6.1.0-57.map", 0xffffffff81000000, "startup_64", nil},
		{"kallsyms-6.1.0-57.map", 0xffffffff81e01ee0, "its_return_thunk", nil},
		// Only markers start here: one of them is all there is.
		{"kallsyms-6.1.0-57.map", 0xffffffff81e01730, "__static_call_text_end", nil},
		{"kallsyms-6.12.118.map", 0xffffffff81e01830, "swapgs_restore_regs_and_return_to_usermode", []string{"common_interrupt_return"}},
		{"kallsyms-6.12.118.map", 0xffffffff81e018a0, "swapgs_restore_regs_and_return_to_usermode+0x70", []string{"common_interrupt_return"}},
		{"kallsyms-6.12.118.map", 0xffffffff81ca5085, "__x86_indirect_thunk_rax+0x5", []string{"__x86_indirect_thunk_array"}},
		{"kallsyms-6.12.118.map", 0xffffffff81e00080, "entry_SYSCALL_64", nil},
	}
	for _, tt := range tests {
		tab, err := Load(filepath.Join("testdata", tt.file))
		if err != nil {
			t.Fatal(err)
		}
		if got := tab.Symbolize(tt.addr); got != tt.want {
			t.Errorf("%s: Symbolize(%#x) = %q, want %q", tt.file, tt.addr, got, tt.want)
		}
		if got := tab.Aliases(tt.addr); !slices.Equal(got, tt.aliases) {
			t.Errorf("%s: Aliases(%#x) = %q, want %q", tt.file, tt.addr, got, tt.aliases)
		}
	}
}

// TestLookupSameAddressELF keeps the teaching kernel's names: a global
// label on the entering instruction names it rather than the sized stub
// around it, and the smaller of two sized data symbols at one address names
// its bytes.
func TestLookupSameAddressELF(t *testing.T) {
	tab := New("test", []Symbol{
		{Name: "user_syscall_raw", Addr: 0x400011, Size: 3, Type: 'T'},
		{Name: "user_syscall_insn", Addr: 0x400011, Type: 'T'},
		{Name: "cpu_entry_area", Addr: 0x1000, Size: 0xd000, Type: 'B'},
		{Name: "gdt", Addr: 0x1000, Size: 0x60, Type: 'B'},
		{Name: "__entry_text_start", Addr: 0x2000, Type: 'T'},
	})
	tests := []struct {
		addr    uint64
		want    string
		aliases []string
	}{
		{0x400011, "user_syscall_insn", []string{"user_syscall_raw"}},
		{0x1008, "gdt+0x8", []string{"cpu_entry_area"}},
		{0x1100, "cpu_entry_area+0x100", nil},
		{0x2004, "cpu_entry_area+0x1004", nil}, // a sized symbol beats a marker
	}
	for _, tt := range tests {
		if got := tab.Symbolize(tt.addr); got != tt.want {
			t.Errorf("Symbolize(%#x) = %q, want %q", tt.addr, got, tt.want)
		}
		if got := tab.Aliases(tt.addr); !slices.Equal(got, tt.aliases) {
			t.Errorf("Aliases(%#x) = %q, want %q", tt.addr, got, tt.aliases)
		}
	}
}

func TestIsMarker(t *testing.T) {
	for name, want := range map[string]bool{
		"__irqentry_text_end": true, "__static_call_text_end": true, "__entry_text_start": true,
		"__per_cpu_start": true, "__start___ex_table": true, "__stop___ex_table": true, "_stext": true, "_etext": true,
		"entry_SYSCALL_64": false, "common_interrupt_return": false, "__x86_indirect_thunk_rax": false,
		"its_return_thunk": false, "user_start": false, "__switch_to_asm": false,
	} {
		if got := IsMarker(name); got != want {
			t.Errorf("IsMarker(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestSameFunction(t *testing.T) {
	for _, c := range []struct {
		query, name string
		want        bool
	}{
		{"do_execveat_common", "do_execveat_common", true},
		{"do_execveat_common", "do_execveat_common.isra.0", true},
		{"copy_strings", "copy_strings.isra.0", true},
		{"copy_strings", "copy_strings.constprop.0", true},
		{"copy_strings", "copy_strings.constprop.0.isra.0", true},
		{"__do_sys_foo", "__do_sys_foo.part.0", true},
		{"bprm_execve", "bprm_execve.cold", true},
		{"bprm_execve", "bprm_execve.cold.12", true},
		{"f", "f.lto_priv.0", true},
		{"f", "f.llvm.123456", true},
		// The full name matches too.
		{"do_execveat_common.isra.0", "do_execveat_common.isra.0", true},
		// Not a prefix search: another function that starts the same.
		{"copy_string", "copy_strings.isra.0", false},
		{"copy_strings", "copy_strings_kernel", false},
		// A dotted part that is no compiler suffix keeps the name whole.
		{"foo", "foo.bar", false},
		{"foo", "foo.isra", true},
		{"foo", "foo.", false},
		{"", ".isra.0", false},
	} {
		if got := SameFunction(c.query, c.name); got != c.want {
			t.Errorf("SameFunction(%q, %q) = %v, want %v", c.query, c.name, got, c.want)
		}
	}
}

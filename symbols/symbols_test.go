package symbols

import (
	"errors"
	"os"
	"path/filepath"
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

// Package symbols names kernel addresses. A Table is loaded from an ELF
// symbol table (the teaching kernel, a vmlinux), a System.map, a plain
// "address type name" list, or built from symbols read elsewhere (Linux's
// kallsyms in guest memory), and answers "which symbol is this address in".
package symbols

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/sctrace/sctrace/internal/termtext"
	"github.com/sctrace/sctrace/x86"
)

// Symbol is one named address.
type Symbol struct {
	Name string
	Addr uint64
	Size uint64 // 0 when unknown (System.map, labels)
	Type byte   // nm-style type letter: 'T' text, 'D' data, 'B' bss, 'A' absolute...
}

// Table is a set of symbols sorted by address. The zero value is an empty
// table; its methods are safe on a nil *Table.
type Table struct {
	Source string // where the symbols came from, e.g. "ELF symtab of k.elf"
	syms   []Symbol
	byName map[string]int
}

// New builds a table from syms, which need not be sorted. Names come from
// files and guest memory and end up on terminals: control characters in
// them are escaped (see termtext.Line).
func New(source string, syms []Symbol) *Table {
	t := &Table{Source: termtext.Line(source), syms: append([]Symbol(nil), syms...)}
	for i := range t.syms {
		t.syms[i].Name = termtext.Line(t.syms[i].Name)
	}
	sort.SliceStable(t.syms, func(i, j int) bool {
		a, b := t.syms[i], t.syms[j]
		if a.Addr != b.Addr {
			return a.Addr < b.Addr
		}
		// Prefer sized, global symbols first at the same address.
		return a.Size > b.Size
	})
	t.byName = make(map[string]int, len(t.syms))
	for i, s := range t.syms {
		if _, dup := t.byName[s.Name]; !dup {
			t.byName[s.Name] = i
		}
	}
	return t
}

// Len returns the number of symbols.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return len(t.syms)
}

// Symbols returns the symbols in address order. The slice must not be
// modified.
func (t *Table) Symbols() []Symbol {
	if t == nil {
		return nil
	}
	return t.syms
}

// maxLabelDistance bounds how far past an unsized symbol an address may lie
// and still be named after it.
const maxLabelDistance = 1 << 16

// Lookup returns the symbol containing addr and the offset into it. A sized
// symbol contains the addresses it covers; an unsized one (a label, or any
// System.map entry) covers addresses up to the next symbol, within 64 KiB.
//
// Where several symbols contain addr from the same address, Lookup prefers,
// in this order: a name that is not a linker marker (see IsMarker), a text
// symbol, a symbol that is not weak, and then the innermost one: the label
// placed inside a function over the function, the smaller of two sized
// symbols. Linux's kallsyms (scripts/kallsyms.c) sorts the markers of a
// section boundary after the functions at the same address, and an inner
// label after the function that holds it, so the innermost non-marker is the
// last non-marker in table order: swapgs_restore_regs_and_return_to_usermode
// rather than __irqentry_text_end, __x86_indirect_thunk_rax rather than
// __x86_indirect_thunk_array. Aliases lists the other names.
func (t *Table) Lookup(addr uint64) (Symbol, uint64, bool) {
	k := t.candidates(addr)
	if len(k) == 0 {
		return Symbol{}, 0, false
	}
	best := k[0]
	for _, j := range k[1:] {
		if rank(t.syms[j]) >= rank(t.syms[best]) {
			best = j
		}
	}
	s := t.syms[best]
	return s, addr - s.Addr, true
}

// Aliases returns the names, other than the one Lookup gives, of the
// symbols that start at the same address as it and contain addr, leaving
// out linker markers: common_interrupt_return beside
// swapgs_restore_regs_and_return_to_usermode, user_syscall_raw beside
// user_syscall_insn.
func (t *Table) Aliases(addr uint64) []string {
	s, _, ok := t.Lookup(addr)
	if !ok {
		return nil
	}
	var out []string
	for _, j := range t.candidates(addr) {
		o := t.syms[j]
		if o.Name != s.Name && !IsMarker(o.Name) && !slices.Contains(out, o.Name) {
			out = append(out, o.Name)
		}
	}
	return out
}

// candidates returns the indices of the symbols that contain addr and start
// at the same address as the nearest one that does, in table order.
func (t *Table) candidates(addr uint64) []int {
	if t == nil || len(t.syms) == 0 {
		return nil
	}
	i := sort.Search(len(t.syms), func(i int) bool { return t.syms[i].Addr > addr }) - 1
	if i < 0 {
		return nil
	}
	top := t.syms[i].Addr
	// contains says whether syms[j] holds addr: a sized symbol holds what
	// it covers; an unsized one only when it is at the highest address at
	// or below addr, and within maxLabelDistance of it.
	contains := func(j int) bool {
		s := t.syms[j]
		off := addr - s.Addr
		if s.Size > 0 {
			return off < s.Size
		}
		return s.Addr == top && off < maxLabelDistance
	}
	// Walk back over symbols at or below addr: the nearest address holding
	// a symbol that contains addr wins, so that a label inside a function
	// names the code after it, and a sized symbol that ended before addr
	// gives way to an enclosing one.
	// Only markers at the nearest address give way to a sized symbol
	// further back that still contains addr: the end of a section inside
	// a function's bytes does not rename them.
	var found []int
	for j := i; j >= 0 && i-j < 64; j-- {
		if !contains(j) {
			continue
		}
		at := t.syms[j].Addr
		var out []int
		for k := j; k >= 0 && t.syms[k].Addr == at; k-- {
			if contains(k) {
				out = append(out, k)
			}
		}
		slices.Reverse(out)
		if !allMarkers(t.syms, out) {
			return out
		}
		if found == nil {
			found = out
		}
		j = out[0]
	}
	return found
}

// allMarkers reports whether every symbol syms[k], k in idx, is a linker
// marker.
func allMarkers(syms []Symbol, idx []int) bool {
	for _, k := range idx {
		if !IsMarker(syms[k].Name) {
			return false
		}
	}
	return true
}

// rank orders symbols at one address by how well they name it; higher is
// better.
func rank(s Symbol) int {
	r := 0
	if !IsMarker(s.Name) {
		r += 4
	}
	switch s.Type {
	case 'T', 't', 'W', 'w':
		r += 2
	}
	if s.Type != 'W' && s.Type != 'w' && s.Type != 'V' && s.Type != 'v' {
		r++
	}
	return r
}

// markerNames are the boundary symbols of Linux's linker script that follow
// no pattern IsMarker knows.
var markerNames = map[string]bool{
	"_text": true, "_stext": true, "_etext": true, "_sdata": true, "_edata": true,
	"_sinittext": true, "_einittext": true, "_sbss": true, "_ebss": true, "_end": true,
	"_brk_start": true, "_brk_end": true,
}

// IsMarker reports whether name is a linker marker: a symbol that marks
// where a section or a table starts or ends, rather than naming code or
// data. These are the names Linux's scripts/kallsyms.c takes for linker
// script symbols ("__start_X", "__stop_X", "__end_X", "__X_start",
// "__X_end", such as __irqentry_text_end, __static_call_text_end,
// __entry_text_start, __per_cpu_start), and the section boundaries _text,
// _stext, _etext, _sdata, _edata, _end and their kin.
func IsMarker(name string) bool {
	if markerNames[name] {
		return true
	}
	if len(name) < 8 || !strings.HasPrefix(name, "__") {
		return false
	}
	rest := name[2:]
	return strings.HasPrefix(rest, "start_") || strings.HasPrefix(rest, "stop_") || strings.HasPrefix(rest, "end_") ||
		strings.HasSuffix(rest, "_start") || strings.HasSuffix(rest, "_end")
}

// cloneSuffixes are the words of the suffixes GCC and Clang add to the
// name of a function they have specialised, split or renamed: .isra.N
// (scalar replacement of arguments), .constprop.N (constant propagation),
// .part.N (partial inlining), .cold and .cold.N (the unlikely part moved
// out), .lto_priv.N and .llvm.N (local symbols made unique at link time).
var cloneSuffixes = map[string]bool{
	"isra": true, "constprop": true, "part": true, "cold": true,
	"lto_priv": true, "llvm": true, "clone": true,
}

// BaseName returns the name of the source function a compiled symbol
// comes from: name without the compiler's suffixes, in any combination
// (do_execveat_common.isra.0 and copy_strings.constprop.0.isra.0 give
// do_execveat_common and copy_strings). A name with any other dotted part
// is returned unchanged.
func BaseName(name string) string {
	base, rest, ok := strings.Cut(name, ".")
	if !ok || base == "" {
		return name
	}
	for _, w := range strings.Split(rest, ".") {
		if !cloneSuffixes[w] && !isDigits(w) {
			return name
		}
	}
	return base
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// SameFunction reports whether the symbol name is the function query:
// the name itself, or the name with the compiler's suffixes (BaseName).
func SameFunction(query, name string) bool {
	return name == query || BaseName(name) == query
}

// Symbolize renders addr as "name+0x12", "name", or "" when no symbol
// contains it.
func (t *Table) Symbolize(addr uint64) string {
	s, off, ok := t.Lookup(addr)
	if !ok {
		return ""
	}
	if off == 0 {
		return s.Name
	}
	return s.Name + "+" + "0x" + strconv.FormatUint(off, 16)
}

// Addr returns the address of the named symbol.
func (t *Table) Addr(name string) (uint64, bool) {
	s, ok := t.Find(name)
	return s.Addr, ok
}

// Find returns the named symbol.
func (t *Table) Find(name string) (Symbol, bool) {
	if t == nil {
		return Symbol{}, false
	}
	i, ok := t.byName[name]
	if !ok {
		return Symbol{}, false
	}
	return t.syms[i], true
}

// Merge returns a table with the symbols of t and o; o's source is appended
// to the description.
func (t *Table) Merge(o *Table) *Table {
	if t == nil {
		return o
	}
	if o == nil {
		return t
	}
	all := append(append([]Symbol(nil), t.syms...), o.syms...)
	return New(t.Source+" + "+o.Source, all)
}

// ErrFormat is returned (wrapped) when a file is neither an ELF nor a symbol
// list.
var ErrFormat = errors.New("not an ELF file, System.map or address list")

// ErrPlaceholder is returned (wrapped) for the System.map Debian ships in
// its linux-image packages: a single line, "ffffffffffffffff B The real
// System.map is in the linux-image-<version>-dbg package", that names
// nothing.
var ErrPlaceholder = errors.New("a placeholder System.map: the real one is in the kernel's -dbg package")

// placeholderText is what Debian's placeholder System.map says.
const placeholderText = "The real System.map is in the"

// Load reads symbols from path, detecting its format: an ELF (its .symtab,
// or .dynsym when stripped) or a text list in System.map form.
func Load(path string) (*Table, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("symbols: %w", err)
	}
	if x86.IsBzImage(data) {
		return nil, fmt.Errorf("symbols from %s: a bzImage (a compressed, stripped kernel) holds no symbol table: give its vmlinux (Debian: the -dbg package) or a System.map, or leave --symbols out to read the guest's own kallsyms: %w", path, ErrFormat)
	}
	if bytes.HasPrefix(data, []byte(elf.ELFMAG)) {
		t, err := FromELF(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("symbols from %s: %w", path, err)
		}
		t.Source = "ELF symtab of " + path
		return t, nil
	}
	t, err := ParseMap(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("symbols from %s: %w", path, err)
	}
	t.Source = "symbol list " + path
	return t, nil
}

// FromELF reads the symbol table of an x86-64 ELF file. Section and file
// symbols are left out.
func FromELF(r io.ReaderAt) (*Table, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 || f.Class != elf.ELFCLASS64 {
		return nil, fmt.Errorf("ELF for %v %v, want x86-64 (ELFCLASS64, EM_X86_64)", f.Class, f.Machine)
	}
	syms, err := f.Symbols()
	if errors.Is(err, elf.ErrNoSymbols) {
		syms, err = f.DynamicSymbols()
	}
	if err != nil {
		return nil, fmt.Errorf("read symbols: %w", err)
	}
	out := make([]Symbol, 0, len(syms))
	for _, s := range syms {
		typ := elf.ST_TYPE(s.Info)
		if s.Name == "" || typ == elf.STT_SECTION || typ == elf.STT_FILE {
			continue
		}
		out = append(out, Symbol{Name: s.Name, Addr: s.Value, Size: s.Size, Type: nmType(f, s)})
	}
	if len(out) == 0 {
		return nil, errors.New("ELF has no named symbols")
	}
	return New("ELF symtab", out), nil
}

// nmType gives the nm letter for an ELF symbol: T/t for code, D/d for
// data, B/b for bss, A for absolute; upper case when global.
func nmType(f *elf.File, s elf.Symbol) byte {
	c := byte('d')
	switch {
	case s.Section == elf.SHN_ABS:
		c = 'a'
	case int(s.Section) < len(f.Sections):
		sec := f.Sections[s.Section]
		switch {
		case sec.Flags&elf.SHF_EXECINSTR != 0:
			c = 't'
		case sec.Type == elf.SHT_NOBITS:
			c = 'b'
		case sec.Flags&elf.SHF_WRITE == 0:
			c = 'r'
		}
	}
	if elf.ST_BIND(s.Info) != elf.STB_LOCAL {
		c -= 'a' - 'A'
	}
	return c
}

// ParseMap reads a System.map or any list of "address type name" lines
// (nm's output, /proc/kallsyms). Trailing "[module]" fields are ignored;
// blank lines and lines starting with '#' are skipped. It fails on the first
// line that is not of that form, naming it, and with ErrPlaceholder on
// Debian's placeholder System.map.
func ParseMap(r io.Reader) (*Table, error) {
	var out []Symbol
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if strings.Contains(line, placeholderText) {
			return nil, fmt.Errorf("line %d %q: a placeholder without symbols: %w", n, trunc(line), ErrPlaceholder)
		}
		f := strings.Fields(line)
		if len(f) > 3 && !strings.HasPrefix(f[3], "[") {
			return nil, fmt.Errorf("line %d %q: a name with spaces: %w", n, trunc(line), ErrFormat)
		}
		if len(f) < 3 || len(f[1]) != 1 {
			return nil, fmt.Errorf("line %d %q: want \"address type name\": %w", n, trunc(line), ErrFormat)
		}
		addr, err := strconv.ParseUint(f[0], 16, 64)
		if err != nil {
			return nil, fmt.Errorf("line %d %q: bad address: %w", n, trunc(line), ErrFormat)
		}
		out = append(out, Symbol{Name: f[2], Addr: addr, Type: f[1][0]})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no symbols: %w", ErrFormat)
	}
	return New("symbol list", out), nil
}

func trunc(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}

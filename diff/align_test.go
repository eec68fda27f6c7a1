package diff

import (
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/trace"
)

// Instruction bytes used by the tables, as the assembler encodes them.
const (
	swapgs    = "0f01f8"               // swapgs
	nop3      = "0f1f00"               // nopl (%rax)
	nop5      = "0f1f440000"           // nopl 0x0(%rax,%rax,1)
	pushRAX   = "50"                   // push %rax
	popRAX    = "58"                   // pop %rax
	pushRDI   = "57"                   // push %rdi
	movCR3RSP = "0f20dc"               // mov %cr3,%rsp
	movRSPCR3 = "0f22dc"               // mov %rsp,%cr3
	xorEAX    = "31c0"                 // xor %eax,%eax
	ret       = "c3"                   // ret
	movGS1    = "65488b2425501b0200"   // mov %gs:0x21b50,%rsp (absolute)
	movGS2    = "65488b25a34f237e"     // mov %gs:0x7e234fa3(%rip),%rsp
	movImmK   = "48c7c000001081"       // mov $0xffffffff81100000,%rax
	movImmK2  = "48c7c000002081"       // mov $0xffffffff81200000,%rax
	movImmN   = "48c7c0daffffff"       // mov $-0x26,%rax
	movImmN2  = "48c7c0dbffffff"       // mov $-0x25,%rax
	movDisp8  = "488b4708"             // mov 0x8(%rdi),%rax
	movDisp10 = "488b4710"             // mov 0x10(%rdi),%rax
	callRel   = "e800000000"           // call (the next step says where to)
	jmpRel    = "e900000000"           // jmp
	mfence    = "0faef0"               // mfence
	endbr64   = "f30f1efa"             // endbr64 (x86asm leaves it undecoded)
	rdtsc     = "0f31"                 // rdtsc
	movRAX    = "48b80000000000000000" // movabs $0x0,%rax
)

// step is one line of a table's trace: "sym+0xoff insn" or "- insn" for
// a step without symbol. A call's next step is at its target.
func build(t *testing.T, kernel string, lines ...string) *trace.Trace {
	t.Helper()
	tr := &trace.Trace{Header: trace.Header{Kernel: kernel, Mechanism: "syscall"}}
	base := uint64(0xffffffff81000000)
	var steps []trace.Step
	for i, l := range lines {
		where, code, ok := strings.Cut(l, " ")
		if !ok {
			t.Fatalf("bad line %q", l)
		}
		b, err := hex.DecodeString(code)
		if err != nil {
			t.Fatal(err)
		}
		s := trace.Step{Bytes: b, CPL: 0}
		if where != "-" {
			s.Symbol = where
			fn, off := splitSymbol(where)
			s.RIP = trace.Hex(base + uint64(len(fn))*0x1000 + off)
		} else {
			s.RIP = trace.Hex(0x401000 + uint64(i))
		}
		steps = append(steps, s)
	}
	for i := range steps {
		s := &steps[i]
		// Calls and jumps go to the next step, wherever it is.
		if i+1 < len(steps) && (s.Bytes[0] == 0xe8 || s.Bytes[0] == 0xe9) {
			rel := int32(uint64(steps[i+1].RIP) - uint64(s.RIP) - uint64(len(s.Bytes)))
			s.Bytes = trace.Bytes{s.Bytes[0], byte(rel), byte(rel >> 8), byte(rel >> 16), byte(rel >> 24)}
		}
		if inst, _, err := annotate.Decode(s.Bytes); err == nil {
			s.Op = inst.Op
			s.Mnemonic = annotate.CanonicalMnemonic(inst, s.Bytes)
			s.ATT = x86asm.GNUSyntax(inst, uint64(s.RIP), nil)
		}
		if s.Op == 0 {
			s.Mnemonic = "endbr64"
			s.ATT = "endbr64"
		}
		tr.Append(*s)
	}
	return tr
}

// ops renders an alignment as its ops, "=" "~" "-" "+", one per pair.
func ops(r *Result) string {
	var b strings.Builder
	for _, p := range r.Pairs {
		b.WriteByte(byte(p.Op))
	}
	return b.String()
}

func TestAlign(t *testing.T) {
	entry := []string{
		"entry+0x0 " + endbr64,
		"entry+0x4 " + swapgs,
		"entry+0x7 " + nop5,
		"entry+0xc " + movCR3RSP,
		"entry+0xf " + movRSPCR3,
		"entry+0x12 " + movGS2,
		"entry+0x1a " + pushRAX,
		"entry+0x1b " + callRel,
		"work+0x0 " + xorEAX,
		"work+0x2 " + ret,
		"entry+0x20 " + popRAX,
	}
	// The same path with the CR3 block jumped over (pti=off).
	noPTI := []string{
		"entry+0x0 " + endbr64,
		"entry+0x4 " + swapgs,
		"entry+0x7 " + jmpRel,
		"entry+0x12 " + movGS2,
		"entry+0x1a " + pushRAX,
		"entry+0x1b " + callRel,
		"work+0x0 " + xorEAX,
		"work+0x2 " + ret,
		"entry+0x20 " + popRAX,
	}
	// Another build: every offset moved, per-CPU access absolute, an
	// extra instruction at the start.
	rebuilt := []string{
		"entry+0x0 " + endbr64,
		"entry+0x4 " + pushRDI,
		"entry+0x5 " + swapgs,
		"entry+0x8 " + nop5,
		"entry+0xd " + movCR3RSP,
		"entry+0x10 " + movRSPCR3,
		"entry+0x13 " + movGS1,
		"entry+0x1c " + pushRAX,
		"entry+0x1d " + callRel,
		"work+0x0 " + xorEAX,
		"work+0x2 " + ret,
		"entry+0x22 " + popRAX,
	}
	// A long call inserted before the one both make, whose callee runs
	// the same instructions as work: it must not take work's place.
	longCall := []string{"entry+0x1a " + pushRAX, "entry+0x1b " + callRel}
	for range 40 {
		longCall = append(longCall, "other+0x0 "+xorEAX)
	}
	longCall = append(longCall, "other+0x2 "+ret, "entry+0x1b "+callRel, "work+0x0 "+xorEAX, "work+0x2 "+ret, "entry+0x20 "+popRAX)
	strip := func(lines []string) []string {
		var out []string
		for _, l := range lines {
			_, code, _ := strings.Cut(l, " ")
			out = append(out, "- "+code)
		}
		return out
	}
	tests := []struct {
		name       string
		ka, kb     string // kernel banners
		a, b       []string
		want       string
		bySymbol   bool
		sameBuild  bool
		notes      int
		wantEvents int
	}{
		{name: "itself", ka: "k1", kb: "k1", a: entry, b: entry, want: strings.Repeat("=", len(entry)), bySymbol: true, sameBuild: true},
		{name: "pti off: the jmp at the place of the nop, the CR3 block removed", ka: "k1", kb: "k1", a: entry, b: noPTI,
			want: "==~--======", bySymbol: true, sameBuild: true},
		{name: "pti on, the other way", ka: "k1", kb: "k1", a: noPTI, b: entry,
			want: "==~++======", bySymbol: true, sameBuild: true},
		{name: "another build: offsets and per-CPU addressing differ, one push added", ka: "k1", kb: "k2", a: entry, b: rebuilt,
			want: "=+" + strings.Repeat("=", 9) + "=", bySymbol: true},
		{name: "a long call inserted is one insertion", ka: "k1", kb: "k1",
			a: []string{"entry+0x1a " + pushRAX, "entry+0x1b " + callRel, "work+0x0 " + xorEAX, "work+0x2 " + ret, "entry+0x20 " + popRAX},
			b: longCall, want: "=" + strings.Repeat("+", 42) + "====", bySymbol: true, sameBuild: true},
		{name: "a function called from a caller the other trace lacks still pairs", ka: "k1", kb: "k1",
			a: []string{"entry+0x0 " + callRel, "p1+0x0 " + pushRAX, "p1+0x1 " + callRel, "f+0x0 " + xorEAX, "f+0x2 " + ret,
				"p1+0x6 " + popRAX, "p1+0x7 " + ret, "entry+0x5 " + popRAX},
			b: []string{"entry+0x0 " + callRel, "p2+0x0 " + pushRAX, "p2+0x1 " + callRel, "f+0x0 " + xorEAX, "f+0x2 " + ret,
				"p2+0x6 " + popRAX, "p2+0x7 " + ret, "entry+0x5 " + popRAX},
			want: "~--++==--++=", bySymbol: true, sameBuild: true},
		{name: "no symbols: instruction alone", ka: "k1", kb: "k1", a: strip(entry), b: strip(noPTI),
			want: "==~--======", sameBuild: true, notes: 1},
		{name: "symbols in one only", ka: "k1", kb: "k1", a: entry, b: strip(entry),
			want: strings.Repeat("=", len(entry)), sameBuild: true, notes: 1},
		{name: "addresses in immediates do not count, numbers do", ka: "k1", kb: "k2",
			a:    []string{"f+0x0 " + movImmK, "f+0x7 " + movImmN, "f+0xe " + movDisp8},
			b:    []string{"f+0x0 " + movImmK2, "f+0x7 " + movImmN2, "f+0xe " + movDisp10},
			want: "=~~", bySymbol: true},
		{name: "every nop is the same nop", ka: "k1", kb: "k1", a: []string{"f+0x0 " + nop3}, b: []string{"f+0x0 " + nop5},
			want: "=", bySymbol: true, sameBuild: true},
		{name: "a replaced instruction", ka: "k1", kb: "k1",
			a:    []string{"f+0x0 " + pushRAX, "f+0x1 " + swapgs, "f+0x4 " + ret},
			b:    []string{"f+0x0 " + pushRAX, "f+0x1 " + nop3, "f+0x4 " + ret},
			want: "=~=", bySymbol: true, sameBuild: true},
		{name: "same function, other path: other places differ", ka: "k1", kb: "k1",
			a:    []string{"f+0x0 " + pushRAX, "f+0x10 " + xorEAX, "f+0x12 " + ret},
			b:    []string{"f+0x0 " + pushRAX, "f+0x20 " + xorEAX, "f+0x22 " + ret},
			want: "=--++", bySymbol: true, sameBuild: true},
		{name: "empty B", ka: "k1", kb: "k1", a: []string{"f+0x0 " + pushRAX, "f+0x1 " + mfence}, b: nil,
			want: "--", bySymbol: true, sameBuild: true},
		{name: "undecoded instructions compare by mnemonic", ka: "k1", kb: "k2",
			a: []string{"f+0x0 " + endbr64, "f+0x4 " + rdtsc}, b: []string{"f+0x0 " + endbr64, "f+0x4 " + movRAX},
			want: "=~", bySymbol: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := build(t, tt.ka, tt.a...), build(t, tt.kb, tt.b...)
			r := Compare(a, b)
			if got := ops(r); got != tt.want {
				t.Errorf("alignment %s, want %s", got, tt.want)
			}
			if r.BySymbol != tt.bySymbol || r.SameBuild != tt.sameBuild || len(r.Notes) != tt.notes {
				t.Errorf("by symbol %v, same build %v, notes %q; want %v, %v, %d notes", r.BySymbol, r.SameBuild, r.Notes, tt.bySymbol, tt.sameBuild, tt.notes)
			}
			checkCover(t, r)
		})
	}
}

// checkCover checks that every step of A and of B is in exactly one pair,
// in order, and that the counts add up to both totals.
func checkCover(t *testing.T, r *Result) {
	t.Helper()
	na, nb := 0, 0
	for _, p := range r.Pairs {
		if p.A >= 0 {
			if p.A != na {
				t.Fatalf("pair %v: A's step %d expected next", p, na)
			}
			na++
		}
		if p.B >= 0 {
			if p.B != nb {
				t.Fatalf("pair %v: B's step %d expected next", p, nb)
			}
			nb++
		}
		if (p.Op == Equal || p.Op == Changed) != (p.A >= 0 && p.B >= 0) || p.Op == Removed && p.B >= 0 || p.Op == Added && p.A >= 0 {
			t.Fatalf("pair %+v is inconsistent", p)
		}
	}
	if na != r.A.Len() || nb != r.B.Len() {
		t.Fatalf("pairs cover %d steps of A and %d of B; they have %d and %d", na, nb, r.A.Len(), r.B.Len())
	}
	var sum Counts
	for _, f := range r.Functions {
		sum.Equal += f.Equal
		sum.Changed += f.Changed
		sum.Removed += f.Removed
		sum.Added += f.Added
	}
	if sum != r.Total || sum.InA() != r.A.Len() || sum.InB() != r.B.Len() {
		t.Fatalf("functions add up to %+v, total %+v, A %d, B %d", sum, r.Total, r.A.Len(), r.B.Len())
	}
}

func TestSplitSymbol(t *testing.T) {
	tests := []struct {
		in   string
		fn   string
		off  uint64
		want string
	}{
		{"entry_SYSCALL_64+0x1a", "entry_SYSCALL_64", 0x1a, ""},
		{"entry_SYSCALL_64", "entry_SYSCALL_64", 0, ""},
		{"", "", 0, ""},
		{"odd+name", "odd+name", 0, ""},
	}
	for _, tt := range tests {
		fn, off := splitSymbol(tt.in)
		if fn != tt.fn || off != tt.off {
			t.Errorf("splitSymbol(%q) = %q, %#x; want %q, %#x", tt.in, fn, off, tt.fn, tt.off)
		}
	}
}

// FuzzCompare aligns traces made of a few functions and instructions, in
// the order the input bytes say, and checks that every step of both is
// paired once, in order, and that the counts add up.
func FuzzCompare(f *testing.F) {
	f.Add([]byte{1, 2, 3, 0xff, 1, 3}, false)
	f.Add([]byte{0x10, 0x21, 0x32, 0x43, 0xff, 0x43, 0x32, 0x21}, true)
	insns := []string{pushRAX, popRAX, xorEAX, swapgs, nop3, movCR3RSP, callRel, ret}
	fns := []string{"f", "g", "h"}
	f.Fuzz(func(t *testing.T, data []byte, rebuilt bool) {
		if len(data) > 400 {
			return
		}
		var a, b []string
		cur := &a
		for _, c := range data {
			if c == 0xff {
				cur = &b
				continue
			}
			fn, insn := fns[int(c>>4)%len(fns)], insns[int(c&0xf)%len(insns)]
			*cur = append(*cur, fmt.Sprintf("%s+%#x %s", fn, int(c&0x70), insn))
		}
		kb := "k1"
		if rebuilt {
			kb = "k2"
		}
		r := Compare(build(t, "k1", a...), build(t, kb, b...))
		checkCover(t, r)
	})
}

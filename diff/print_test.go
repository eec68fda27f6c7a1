package diff

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/trace"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// noSwapgs returns the recorded int $0x80 round trip in trace/testdata
// (A) and a copy (B) made the way the teaching kernel's bug variant and a
// pti=off kernel change it: the exit swapgs patched into a NOP of its
// length, and the entry's CR3 switch left out.
func noSwapgs(t *testing.T) (*trace.Trace, *trace.Trace) {
	t.Helper()
	a, err := trace.ReadFile("../trace/testdata/int80.json")
	if err != nil {
		t.Fatal(err)
	}
	b := &trace.Trace{Header: a.Header}
	for i := range a.Len() {
		s := *a.Step(i)
		if s.Symbol == "entry_INT80+0x5" || s.Symbol == "entry_INT80+0x8" || s.Symbol == "entry_INT80+0xf" {
			continue
		}
		if s.Op == x86asm.SWAPGS && i > a.Len()/2 {
			s.Bytes, s.Op, s.Mnemonic, s.ATT, s.Intel = trace.Bytes{0x0f, 0x1f, 0x00}, x86asm.NOP, "nop", "nopl (%rax)", "nop DWORD PTR [rax]"
			s.Events, s.Effects = nil, nil
		}
		b.Append(s)
	}
	return a, b
}

// TestGolden prints the diff of noSwapgs's traces in each format and
// compares it with testdata/*.golden (rewritten with -update).
func TestGolden(t *testing.T) {
	a, b := noSwapgs(t)
	r := Compare(a, b)
	o := Options{NameA: "int80.json", NameB: "int80-patched.json", Syntax: trace.ATT}
	for _, f := range []struct {
		file  string
		write func(*bytes.Buffer) error
	}{
		{"int80.txt", func(w *bytes.Buffer) error { return WriteText(w, r, o) }},
		{"int80-expand.txt", func(w *bytes.Buffer) error { o := o; o.Expand = true; return WriteText(w, r, o) }},
		{"int80.md", func(w *bytes.Buffer) error { return WriteMarkdown(w, r, o) }},
		{"int80.json", func(w *bytes.Buffer) error { return WriteJSON(w, r, o) }},
	} {
		t.Run(f.file, func(t *testing.T) {
			var got bytes.Buffer
			if err := f.write(&got); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", f.file+".golden")
			if *update {
				if err := os.WriteFile(path, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to write it)", err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("%s differs from %s (go test -update rewrites it):\n%s", f.file, path, got.String())
			}
			if strings.HasSuffix(f.file, ".txt") {
				for i, l := range strings.Split(got.String(), "\n") {
					if n := utf8.RuneCountInString(l); n > Width {
						t.Errorf("line %d: %d columns", i+1, n)
					}
				}
			}
			if strings.HasSuffix(f.file, ".json") && !json.Valid(got.Bytes()) {
				t.Error("not valid JSON")
			}
		})
	}
	// What the goldens must say, from how B was made.
	if r.Total.Changed != 1 || r.Total.Removed != 3 || r.Total.Added != 0 || r.Total.Equal != a.Len()-4 {
		t.Errorf("total %+v", r.Total)
	}
}

package trace

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// writeBigTrace writes a trace of n steps to a file in dir, made by
// repeating the steps of testdata/int80.json, as JSON (version 1) or as a
// trace file (version 2), and returns its path and size.
func writeBigTrace(tb testing.TB, dir string, n int, asJSON bool) (string, int64) {
	tb.Helper()
	src := readTestTrace(tb)
	big := withSteps(src, nil)
	for i := range n {
		big.Append(*src.Step(i % src.Len()))
	}
	path := filepath.Join(dir, "big.sctrace")
	write := big.Write
	if asJSON {
		path, write = filepath.Join(dir, "big.json"), big.WriteJSON
	}
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriter(f)
	if err := write(w); err != nil {
		tb.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	return path, fi.Size()
}

// BenchmarkReadFile reads a generated 200,000-step trace, the length of a
// long Linux recording: as JSON (version 1, about 230 MB), as a trace
// file checked step by step (ReadFile), and opened for viewing (Open).
// Run it with
//
//	go test -run '^$' -bench ReadFile -benchtime 3x ./trace/
//
// B/op is what reading one trace allocates; MB/s is of the file.
func BenchmarkReadFile(b *testing.B) {
	const n = 200_000
	for _, bc := range []struct {
		name   string
		asJSON bool
		read   func(string) (*Trace, error)
	}{
		{"json", true, ReadFile},
		{"trace", false, ReadFile},
		{"open", false, func(p string) (*Trace, error) { return Open(context.Background(), p) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			path, size := writeBigTrace(b, b.TempDir(), n, bc.asJSON)
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				t, err := bc.read(path)
				if err != nil {
					b.Fatal(err)
				}
				if t.Len() != n {
					b.Fatalf("%d steps", t.Len())
				}
			}
		})
	}
}

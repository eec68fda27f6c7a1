package trace

import (
	"bufio"
	"os"
	"path/filepath"
	"testing"
)

// writeBigTrace writes a trace of n steps to a file in dir, made by
// repeating the steps of testdata/int80.json, and returns its path and
// size.
func writeBigTrace(tb testing.TB, dir string, n int) (string, int64) {
	tb.Helper()
	src := readTestTrace(tb)
	big := withSteps(src, nil)
	for i := range n {
		big.Append(*src.Step(i % src.Len()))
	}
	path := filepath.Join(dir, "big.json")
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriter(f)
	if err := big.WriteJSON(w); err != nil {
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

// BenchmarkReadFile reads a generated 200,000-step trace (about 230 MB,
// the size of a long Linux recording). Run it with
//
//	go test -run '^$' -bench ReadFile -benchtime 3x ./trace/
//
// B/op is what reading one trace allocates.
func BenchmarkReadFile(b *testing.B) {
	path, size := writeBigTrace(b, b.TempDir(), 200_000)
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		t, err := ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		if t.Len() != 200_000 {
			b.Fatalf("%d steps", t.Len())
		}
	}
}

package trace_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"testing"

	"github.com/sctrace/sctrace/internal/tracetest"
	"github.com/sctrace/sctrace/trace"
)

// TestFileIsGzip checks what the file format promises: a version 2 file,
// full chunks included (compressed while recording), is a series of gzip
// members that the standard library's reader (as `gzip -dc`) decompresses
// whole, the first holding the JSON header.
func TestFileIsGzip(t *testing.T) {
	tr := tracetest.Repeat(source(t), 3*trace.ChunkSteps+5)
	var file bytes.Buffer
	if err := tr.Write(&file); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(file.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	zr.Multistream(false)
	var head struct {
		Format string `json:"format"`
		Steps  int    `json:"steps"`
	}
	first, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(first, &head); err != nil || head.Steps != tr.Len() {
		t.Fatalf("first member %.80q: %v, %d steps, want %d", first, err, head.Steps, tr.Len())
	}
	if err := zr.Reset(bytes.NewReader(file.Bytes())); err != nil {
		t.Fatal(err)
	}
	zr.Multistream(true)
	n, err := io.Copy(io.Discard, zr)
	if err != nil {
		t.Fatalf("the whole file does not decompress: %v after %d bytes", err, n)
	}
}

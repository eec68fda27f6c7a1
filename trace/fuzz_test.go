package trace

import (
	"bytes"
	"context"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzReadTrace feeds the trace reader arbitrary bytes, starting from the
// traces in testdata, each cut to its first steps (the fuzzer minimizes
// every input that finds new code, and a whole trace takes it minutes).
// Whatever it accepts must hold no control character
// in any string, print as text and Markdown, and survive a write and a
// read unchanged.
func FuzzReadTrace(f *testing.F) {
	files, err := filepath.Glob("testdata/*.json")
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		tr, err := ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		tr = withSteps(tr, stepsOf(tr)[:min(tr.Len(), 3)])
		var js, v2 bytes.Buffer
		if err := tr.WriteJSON(&js); err != nil {
			f.Fatal(err)
		}
		if err := tr.Write(&v2); err != nil {
			f.Fatal(err)
		}
		f.Add(js.Bytes())
		f.Add(v2.Bytes())
	}
	f.Add([]byte(`{"format":"sctrace-trace","version":1,"header":{},"steps":[]}`))
	f.Add([]byte(`{"version":1,"format":"sctrace-trace","steps":null,"x":[{"a":[1,2]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if isGzip(data) {
			// Opened to be viewed: whatever opens shows every step.
			if lt, err := readV2(context.Background(), data, true); err == nil {
				checkClean(t, lt)
			}
		}
		tr, err := Read(bytes.NewReader(data))
		if err != nil {
			return
		}
		checkClean(t, tr)
		var out bytes.Buffer
		if err := WriteText(&out, tr, ATT); err != nil {
			t.Fatal(err)
		}
		if err := WriteMarkdown(&out, tr, Intel); err != nil {
			t.Fatal(err)
		}
		var a bytes.Buffer
		if err := tr.Write(&a); err != nil {
			t.Fatal(err)
		}
		back, err := Read(bytes.NewReader(a.Bytes()))
		if err != nil {
			t.Fatalf("a trace read, written and read again: %v", err)
		}
		var b bytes.Buffer
		if err := back.Write(&b); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a.Bytes(), b.Bytes()) {
			t.Fatal("write → read → write changed the trace")
		}
		a.Reset()
		if err := tr.WriteJSON(&a); err != nil {
			t.Fatal(err)
		}
		if back, err = Read(bytes.NewReader(a.Bytes())); err != nil {
			t.Fatalf("a trace read, written as JSON and read again: %v", err)
		}
		b.Reset()
		if err := back.WriteJSON(&b); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a.Bytes(), b.Bytes()) {
			t.Fatal("JSON write → read → write changed the trace")
		}
	})
}

// checkClean fails t if a string of tr or of one of its steps holds a
// control character.
func checkClean(t *testing.T, tr *Trace) {
	t.Helper()
	all := stringsIn(reflect.ValueOf(tr))
	for _, s := range tr.All() {
		all = append(all, stringsIn(reflect.ValueOf(s))...)
	}
	for _, s := range all {
		if hasControl(s) {
			t.Fatalf("accepted trace holds %q", s)
		}
	}
}

// FuzzDecodeChunk feeds the chunk decoder arbitrary bytes, starting from
// chunks of the testdata traces: it must never panic, and checking a chunk
// (as opening a file does) must accept exactly what decoding it accepts.
func FuzzDecodeChunk(f *testing.F) {
	for _, name := range []string{"testdata/int80.json", "testdata/hostile.json"} {
		tr, err := ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		n := min(tr.Len(), 6)
		f.Add(tr.encodeRange(0, n), n)
	}
	f.Fuzz(func(t *testing.T, data []byte, count int) {
		if count < 0 || count > ChunkSteps {
			return
		}
		_, derr := decodeChunk(bytes.Clone(data), 0, count, chunkOpts{clean: true})
		var x index
		_, verr := decodeChunk(bytes.Clone(data), 0, count, chunkOpts{clean: true, verify: true, visit: x.addLine})
		if (derr == nil) != (verr == nil) {
			t.Fatalf("decoding says %v, checking says %v", derr, verr)
		}
		if derr == nil && len(x.lineOf) != count {
			t.Fatalf("checked %d steps, indexed %d", count, len(x.lineOf))
		}
	})
}

package trace

import (
	"bytes"
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
		tr, err := Read(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, s := range stringsIn(reflect.ValueOf(tr)) {
			if hasControl(s) {
				t.Fatalf("accepted trace holds %q", s)
			}
		}
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
	})
}

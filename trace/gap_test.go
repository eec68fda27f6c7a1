package trace

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sctrace/sctrace/x86"
)

func state(rip uint64) *x86.State {
	s := &x86.State{}
	s.Set(x86.RIP, rip)
	return s
}

// TestGaps: a gap is kept beside the steps, said once per reason, saved
// and read back, printed between the steps it falls between, and After
// gives the state the gap began with, not the next step's.
func TestGaps(t *testing.T) {
	r := &Recorder{trace: &Trace{Format: Format, Version: Version}}
	r.NoteGap("before anything")
	r.trace.Append(Step{RIP: 0x1000, Bytes: Bytes{0x90}, Regs: state(0x1000), ATT: "nop"})
	r.cur = state(0x1001)
	r.NoteGap("gdb let the guest run")
	r.NoteGap("gdb let the guest run")
	r.NoteGap("stopped elsewhere")
	r.trace.Append(Step{RIP: 0x2000, Bytes: Bytes{0x90}, Regs: state(0x2000), ATT: "nop"})
	r.trace.Final = state(0x2001)
	tr := r.trace
	if len(tr.Gaps) != 2 {
		t.Fatalf("%d gaps, want 2: %+v", len(tr.Gaps), tr.Gaps)
	}
	g, ok := tr.GapAt(1)
	if !ok || g.What != "gdb let the guest run; stopped elsewhere" {
		t.Errorf("gap before step 1: %+v", g)
	}
	if a := tr.After(0); a.Val(x86.RIP) != 0x1001 {
		t.Errorf("After(0) = rip %#x, want 0x1001 (where the gap began)", a.Val(x86.RIP))
	}
	if a := tr.After(1); a.Val(x86.RIP) != 0x2001 {
		t.Errorf("After(1) = rip %#x, want the final 0x2001", a.Val(x86.RIP))
	}
	for _, f := range []struct {
		name  string
		write func(*Trace, *bytes.Buffer) error
	}{
		{"version 2", func(t *Trace, b *bytes.Buffer) error { return t.Write(b) }},
		{"JSON", func(t *Trace, b *bytes.Buffer) error { return t.WriteJSON(b) }},
	} {
		var buf bytes.Buffer
		if err := f.write(tr, &buf); err != nil {
			t.Fatal(err)
		}
		back, err := Read(bytes.NewReader(buf.Bytes()))
		if err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		if len(back.Gaps) != 2 || back.Gaps[1].Step != 1 || back.After(0).Val(x86.RIP) != 0x1001 {
			t.Errorf("%s read back: %+v", f.name, back.Gaps)
		}
	}
	var buf bytes.Buffer
	if err := tr.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := Read(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	if err := WriteText(&text, back, ATT); err != nil {
		t.Fatal(err)
	}
	out := text.String()
	first, gap, second := strings.Index(out, "0x1000"), strings.Index(out, "not recorded: gdb let the guest run"), strings.Index(out, "0x2000")
	if first < 0 || gap < first || second < gap || !strings.Contains(out, "not recorded: before anything") {
		t.Errorf("gaps not printed between their steps:\n%s", out)
	}

	for _, bad := range []string{`[{"step":3,"what":"x"}]`, `[{"step":1,"what":"x"},{"step":0,"what":"y"}]`, `[{"step":-1,"what":"x"}]`} {
		doc := strings.Replace(buf.String(), `"gaps": [`, `"gaps": `+bad+`, "old": [`, 1)
		if _, err := Read(strings.NewReader(doc)); err == nil || !strings.Contains(err.Error(), "corrupt trace: gap") {
			t.Errorf("gaps %s: %v, want a corrupt trace", bad, err)
		}
	}
}

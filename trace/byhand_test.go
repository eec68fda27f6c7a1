package trace

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/sctrace/sctrace/x86"
)

// byHandTrace is a one-step trace with a register written by hand before
// the step and memory written after it.
func byHandTrace() *Trace {
	st := &x86.State{}
	st.Set(x86.RIP, 0x401000)
	st.Set(x86.CS, 0x33)
	t := &Trace{Format: Format, Version: Version}
	t.Append(Step{RIP: 0x401000, CPL: 3, Bytes: Bytes{0x90}, ATT: "nop", Intel: "nop", Regs: st})
	t.UserWrites = []UserWrite{
		{Step: 0, What: "rax", Size: 8, Old: 0x27, OldKnown: true, New: 0x5},
		{Step: 1, What: "*(u32*)0x6000", Addr: 0x6000, Size: 4, New: 0x99},
	}
	return t
}

func TestUserWritesRoundTrip(t *testing.T) {
	tr := byHandTrace()
	var buf bytes.Buffer
	if err := tr.Write(&buf); err != nil {
		t.Fatal(err)
	}
	got, err := Read(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.UserWrites, tr.UserWrites) {
		t.Errorf("read back %+v, want %+v", got.UserWrites, tr.UserWrites)
	}
	var text bytes.Buffer
	if err := WriteText(&text, got, ATT); err != nil {
		t.Fatal(err)
	}
	out := text.String()
	for _, want := range []string{
		"!! by hand    rax changed by hand from 0x27 to 0x5 (not by the guest)",
		"*(u32*)0x6000 set by hand to 0x99",
		"changed by hand while stopped: 2",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text output lacks %q:\n%s", want, out)
		}
	}
	// The write before step 0 comes before the step's line, the one
	// after it after.
	if i, j := strings.Index(out, "rax changed"), strings.Index(out, "nop"); i < 0 || j < 0 || i > j {
		t.Errorf("the write before step 0 is not printed before it:\n%s", out)
	}
	var md bytes.Buffer
	if err := WriteMarkdown(&md, got, ATT); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "Changed by hand before the first step") || !strings.Contains(md.String(), "**by hand:** *(u32*)0x6000") {
		t.Errorf("Markdown lacks the writes by hand:\n%s", md.String())
	}
}

func TestUserWritesOutOfRange(t *testing.T) {
	tr := byHandTrace()
	tr.UserWrites[1].Step = 5
	var buf bytes.Buffer
	if err := tr.Write(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(&buf); err == nil || !strings.Contains(err.Error(), "write by hand 1 made before step 5 of 1") {
		t.Errorf("Read = %v, want a corrupt-trace error", err)
	}
}

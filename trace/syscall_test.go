package trace

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// TestSyscallHeader checks how the header names a system call, in text
// and Markdown, and that it survives a save and load.
func TestSyscallHeader(t *testing.T) {
	call := &Syscall{Nr: 0, Name: "read", Entry: "__x64_sys_read", Table: "the kernel's sys_call_table", Args: []Arg{
		{"rdi", 3}, {"rsi", 0x405000}, {"rdx", 0x10000}, {"r10", 0}, {"r8", 0}, {"r9", 0},
	}}
	want := "read (0, __x64_sys_read): rdi=0x3 rsi=0x405000 rdx=0x10000 r10=0x0 r8=0x0 r9=0x0"
	if got := call.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := (&Syscall{Nr: 400}).String(); got != "no name (400)" {
		t.Errorf("an unnamed call: %q", got)
	}
	tr := &Trace{Format: Format, Version: Version, Header: Header{Target: "test", Syscall: call}}
	var text, md, js bytes.Buffer
	if err := WriteText(&text, tr, ATT); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "system call: "+want+"\n  (names from the kernel's sys_call_table)\n") {
		t.Errorf("text header:\n%s", text.String())
	}
	if err := WriteMarkdown(&md, tr, ATT); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "- system call: `"+want+"` (names from the kernel's sys_call_table)\n") {
		t.Errorf("markdown header:\n%s", md.String())
	}
	if err := tr.Write(&js); err != nil {
		t.Fatal(err)
	}
	back, err := Read(&js)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Header.Syscall, call) {
		t.Errorf("after a save and load: %+v, want %+v", back.Header.Syscall, call)
	}
}

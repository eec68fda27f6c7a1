package trace

import (
	"slices"
	"testing"
)

// TestCPULines checks what printed headers and status lines say of the
// other vCPUs: held at one place (as QEMU holds them while sctrace steps
// the followed vCPU with vCont;s), moved (a stub that let them run), or
// unreadable; and the summary when there are several.
func TestCPULines(t *testing.T) {
	user := CPUPlace{RIP: 0x400011, Symbol: "user_syscall_insn", CPL: 3, GSBase: 0xffffffff80243000}
	kern := CPUPlace{RIP: 0xffffffff80203000, Symbol: "entry_SYSCALL_64", CPL: 0, GSBase: 0xffffffff80243000}
	bad := CPUPlace{CPL: -1, Err: "E22"}
	followed := &CPU{Index: 1, Thread: "p01.02", Count: 2, GSBase: 0xffffffff8024f000}
	first := "followed: vCPU 1 of 2 (gdbstub thread p01.02, kernel GS base 0xffffffff8024f000), stepped alone: QEMU stopped every vCPU when this one stopped where the trace starts, and each step runs this one only"
	for _, tc := range []struct {
		name   string
		others []OtherCPU
		lines  []string
		label  string
	}{
		{"held in user mode", []OtherCPU{{Index: 0, Thread: "p01.01", Start: user, End: user}},
			[]string{first, "vCPU 0 (thread p01.01): stopped in user mode at 0x400011 <user_syscall_insn> CPL 3, kernel GS base 0xffffffff80243000, and held there from the first step to the last"},
			"vCPU 0 held in user mode at user_syscall_insn"},
		{"held in the kernel", []OtherCPU{{Index: 0, Thread: "p01.01", Start: kern, End: kern}},
			[]string{first, "vCPU 0 (thread p01.01): stopped in the kernel at 0xffffffff80203000 <entry_SYSCALL_64> CPL 0, kernel GS base 0xffffffff80243000, and held there from the first step to the last"},
			"vCPU 0 held in kernel at entry_SYSCALL_64"},
		{"moved", []OtherCPU{{Index: 0, Thread: "p01.01", Start: user, End: kern}},
			[]string{first, "vCPU 0 (thread p01.01) ran meanwhile: at start 0x400011 <user_syscall_insn> CPL 3 in user mode, kernel GS base 0xffffffff80243000; at end 0xffffffff80203000 <entry_SYSCALL_64> CPL 0 in the kernel"},
			"vCPU 0 ran: user_syscall_insn → entry_SYSCALL_64"},
		{"unreadable", []OtherCPU{{Index: 0, Thread: "p01.01", Start: user, End: bad}},
			[]string{first, "vCPU 0 (thread p01.01): at start 0x400011 <user_syscall_insn> CPL 3; at end unknown (E22)"},
			"vCPU 0 unknown"},
		{"several", []OtherCPU{
			{Index: 0, Thread: "p01.01", Start: user, End: user},
			{Index: 2, Thread: "p01.03", Start: kern, End: kern},
			{Index: 3, Thread: "p01.04", Start: user, End: user},
		}, nil, "3 others held: 2 user, 1 kernel"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := Header{CPU: followed, OtherCPUs: tc.others}
			if got := h.CPULines(); tc.lines != nil && !slices.Equal(got, tc.lines) {
				t.Errorf("lines\n%q\nwant\n%q", got, tc.lines)
			}
			if got := h.OtherCPUsLabel(); got != tc.label {
				t.Errorf("label %q, want %q", got, tc.label)
			}
		})
	}
	if l := (Header{}).CPULines(); l != nil {
		t.Errorf("one vCPU: lines %q, want none", l)
	}
	if l := (Header{}).OtherCPUsLabel(); l != "" {
		t.Errorf("one vCPU: label %q, want none", l)
	}
}

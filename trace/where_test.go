package trace

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sctrace/sctrace/annotate"
)

// TestFitWhere checks that a location never loses its offset: the offset
// is what says which instruction of a symbol ran (Linux's
// entry_SYSCALL_64_after_hwframe, 30 characters, holds some 40 of them).
func TestFitWhere(t *testing.T) {
	tests := []struct {
		where string
		n     int
		want  string
	}{
		{"entry_SYSCALL_64+0x3", 34, "entry_SYSCALL_64+0x3"},
		{"entry_SYSCALL_64_after_hwframe+0x4a", 34, "entry_SYSCALL_…_after_hwframe+0x4a"},
		{"syscall_exit_to_user_mode_prepare+0x1c", 34, "syscall_exit_t…r_mode_prepare+0x1c"},
		{"arch_exit_to_user_mode_prepare.constprop.0+0x2d", 34, "arch_exit_to_u…re.constprop.0+0x2d"},
		{"swapgs_restore_regs_and_return_to_usermode", 34, "swapgs_restore_re…turn_to_usermode"},
		{"entry_SYSCALL_64_after_hwframe+0x4a", 16, "entry…frame+0x4a"},
		{"entry_SYSCALL_64_after_hwframe+0x4a", 6, "e…+0x4a"},
		{"0xffffffff81c00080", 34, "0xffffffff81c00080"},
	}
	for _, tt := range tests {
		got := FitWhere(tt.where, tt.n)
		if got != tt.want {
			t.Errorf("FitWhere(%q, %d) = %q, want %q", tt.where, tt.n, got, tt.want)
		}
		if _, off, ok := strings.Cut(tt.where, "+"); ok && !strings.HasSuffix(got, "+"+off) {
			t.Errorf("FitWhere(%q, %d) = %q lost the offset", tt.where, tt.n, got)
		}
		if w := utf8.RuneCountInString(got); w > tt.n && tt.n >= 8 {
			t.Errorf("FitWhere(%q, %d) = %q is %d wide", tt.where, tt.n, got, w)
		}
	}
}

// TestWriteTextKeepsOffsets prints steps in long Linux symbols and checks
// every offset is printed whole.
func TestWriteTextKeepsOffsets(t *testing.T) {
	tr := New([]Step{
		{Index: 0, RIP: 0xffffffff81c000f2, Symbol: "entry_SYSCALL_64_after_hwframe+0x4a", ATT: "push %rax"},
		{Index: 1, RIP: 0xffffffff8113770c, Symbol: "syscall_exit_to_user_mode_prepare+0x1c", ATT: "mov %rdi,%rbp"},
	}...)
	var b strings.Builder
	if err := WriteText(&b, tr, ATT); err != nil {
		t.Fatal(err)
	}
	for _, off := range []string{"+0x4a ", "+0x1c "} {
		if !strings.Contains(b.String(), off) {
			t.Errorf("offset %q missing from\n%s", off, b.String())
		}
	}
	if strings.Contains(b.String(), "+0x…") || strings.Contains(b.String(), "…\n") {
		t.Errorf("an offset was cut:\n%s", b.String())
	}
}

// TestWriteMarkdownEscapesSymbols checks that an effect's "<symbol>"
// survives in a Markdown table: outside a code span, Markdown takes
// <entry_SYSCALL_64> for an HTML tag and a renderer drops it.
func TestWriteMarkdownEscapesSymbols(t *testing.T) {
	tr := New([]Step{{Index: 0, RIP: 0x400011, Symbol: "user_syscall_insn", ATT: "syscall",
		Effects: []annotate.Effect{{Kind: annotate.KindControl, Text: "rip = 0xffffffff80202000 <entry_SYSCALL_64>: the kernel entry point | from LSTAR"}}}}...)
	var b strings.Builder
	if err := WriteMarkdown(&b, tr, ATT); err != nil {
		t.Fatal(err)
	}
	if want := `rip = 0xffffffff80202000 &lt;entry_SYSCALL_64&gt;: the kernel entry point \| from LSTAR`; !strings.Contains(b.String(), want) {
		t.Errorf("Markdown lacks %q:\n%s", want, b.String())
	}
}

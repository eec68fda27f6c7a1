package termtext

import (
	"slices"
	"strings"
	"testing"

	"github.com/charmbracelet/x/ansi"
)

// TestWrap checks that Wrap measures terminal columns, not bytes: "→",
// "⇄" and "✓" are three bytes and one column each, a CJK character three
// bytes and two columns, and a line holding them is filled as far as its
// width allows.
func TestWrap(t *testing.T) {
	tests := []struct {
		name string
		text string
		n    int
		want []string
	}{
		{"ascii", "rsp moves to the kernel stack", 12, []string{"rsp moves to", "the kernel", "stack"}},
		{"arrow fills the line", "rsp user → kernel stack", 16, []string{"rsp user →", "kernel stack"}},
		{"arrow at the end of a full line", "0x0000 → 0x1000 then", 15, []string{"0x0000 → 0x1000", "then"}},
		{"swapgs exchange", "swapgs: gs_base 0x0 ⇄ k_gs_base 0xffffffff8023f000", 21,
			[]string{"swapgs: gs_base 0x0 ⇄", "k_gs_base", "0xffffffff8023f000"}},
		{"check marks", "✓ ok ✓ ok ✓ ok", 10, []string{"✓ ok ✓ ok", "✓ ok"}},
		{"wide characters", "系统调用 进入 内核", 10, []string{"系统调用", "进入 内核"}},
		{"spaces collapse", "a   b \t c", 10, []string{"a b c"}},
		{"newlines start lines", "one\ntwo three", 20, []string{"one", "two three"}},
		{"long word stays whole", "entry_SYSCALL_64_after_hwframe+0x4", 10, []string{"entry_SYSCALL_64_after_hwframe+0x4"}},
		{"narrow widths are 10", "aaaa bbbb cccc", 3, []string{"aaaa bbbb", "cccc"}},
		{"empty", "", 10, []string{""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Wrap(tt.text, tt.n)
			if !slices.Equal(got, tt.want) {
				t.Errorf("Wrap(%q, %d) = %q, want %q", tt.text, tt.n, got, tt.want)
			}
			n := max(tt.n, 10)
			for _, l := range got {
				if w := ansi.StringWidth(l); w > n && strings.Contains(l, " ") {
					t.Errorf("line %q is %d columns wide, more than %d", l, w, n)
				}
			}
		})
	}
}

package annotate

import (
	"fmt"
	"testing"
)

// TestChangeText checks the register-change text built by hand against
// what fmt's %#x makes of the same values.
func TestChangeText(t *testing.T) {
	for _, v := range [][2]uint64{{0, 0}, {0, 1}, {0x246, 0x202}, {0xffff_ffff_ffff_ffff, 0x8000_0000_0000_0000}, {0xdeadbeef, 0x10}} {
		want := fmt.Sprintf("%s %#x → %#x", "rax", v[0], v[1])
		if got := string(changeText(nil, "rax", v[0], v[1])); got != want {
			t.Errorf("changeText(%#x, %#x) = %q, want %q", v[0], v[1], got, want)
		}
	}
}

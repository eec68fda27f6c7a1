package annotate

import (
	"strings"
	"testing"

	"github.com/sctrace/sctrace/x86"
)

// TestIOPort checks what an `out` to the 8259 and the 8254 is said to do.
// The port numbers and the command bytes are the PC's (8259A data sheet:
// OCW2 0x20 is a non-specific EOI; ICW1 has bit 4 set; 8254: mode register
// 0x43, channel 0 at 0x40).
func TestIOPort(t *testing.T) {
	const rip = 0xffffffff80201000
	k := regs{x86.RIP: rip, x86.CS: 0x10, x86.RSP: 0xffffffff8020ef00}
	tests := []struct {
		name string
		code []byte
		rax  uint64
		rdx  uint64
		want string
	}{
		{"EOI to the primary 8259", []byte{0xe6, 0x20}, 0x20, 0, "EOI: out 0x20 to port 0x20 tells the primary 8259"},
		{"EOI to the secondary through dx", []byte{0xee}, 0x20, 0xa0, "EOI: out 0x20 to port 0xa0 tells the secondary 8259"},
		{"ICW1", []byte{0xe6, 0x20}, 0x11, 0, "ICW1 to the primary 8259 (port 0x20)"},
		{"mask", []byte{0xe6, 0x21}, 0xfe, 0, "8259 interrupt mask (port 0x21) = 0b11111110"},
		{"timer mode", []byte{0xe6, 0x43}, 0x30, 0, "channel 0, mode 0"},
		{"timer count", []byte{0xe6, 0x40}, 0x4e, 0, "8254 timer channel 0 count byte 0x4e"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := with(k, regs{x86.RAX: tt.rax, x86.RDX: tt.rdx})
			after := with(before, regs{x86.RIP: rip + uint64(len(tt.code))})
			effects := Annotate(mkStep(t, 1, tt.code, rip, before, after), &Context{Symbols: testSyms})
			expectEffects(t, effects, note(KindControl, tt.want))
			expectNoFinding(t, effects)
		})
	}
	// Another port: nothing said about it here.
	before := with(k, regs{x86.RAX: 0x41, x86.RDX: 0x3f8})
	effects := Annotate(mkStep(t, 1, []byte{0xee}, rip, before, with(before, regs{x86.RIP: rip + 1})), &Context{Symbols: testSyms})
	for _, e := range effects {
		if e.Kind == KindControl && (strings.Contains(e.Text, "8259") || strings.Contains(e.Text, "8254")) {
			t.Errorf("out to the serial port said %q", e.Text)
		}
	}
}

package target

import (
	"strings"
	"testing"

	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
	"github.com/sctrace/sctrace/internal/testenv"
)

// TestWriteReport checks what the report says of a fake QEMU stub: its
// features, the register layout, the decoded registers (and the ones the
// stub did not send), and the monitor text, with every control character
// the stub sent escaped.
func TestWriteReport(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(*gdbstubtest.Stub)
		want    []string
		mustNot []string
	}{
		{
			name: "long mode kernel",
			setup: func(s *gdbstubtest.Stub) {
				for name, v := range map[string]uint64{
					"rip": 0xffffffff81000000, "cs": 0x10, "cr0": 0x80050033,
					"cr3": 0x1234000, "cr4": 0, "efer": 0xd01, "gs_base": 0xffff888000000000,
				} {
					s.SetRegister(name, v)
				}
				s.SetUnknown("k_gs_base")
				s.SetMonitor("info registers", "RAX=0000000000000000\nEFER=0000000000000d01")
			},
			want: []string{
				"Stub features:\n", "  PacketSize=1000\n",
				"Register layout: 66 registers, 608 bytes in a 'g' reply\n",
				"  org.gnu.gdb.i386.core: rax rbx rcx rdx rsi rdi rbp rsp r8 r9 r10 r11 ... (54 more)\n",
				"  rip        0xffffffff81000000",
				"  gs_base    0xffff888000000000",
				"  k_gs_base  unknown (not sent by the stub)",
				", CPL 0",
				"\nmonitor info registers:\nRAX=0000000000000000\nEFER=0000000000000d01\n",
			},
		},
		{
			name: "real mode",
			setup: func(s *gdbstubtest.Stub) {
				s.SetRegister("cr0", 0x10)
				s.SetRegister("cs", 0xf000)
			},
			want: []string{"real mode (CR0.PE clear): a segment, not a selector"},
		},
		{
			name: "hostile stub",
			setup: func(s *gdbstubtest.Stub) {
				s.SetFeatures(gdbstubtest.QEMUFeatures + ";\x1b[2Jevil+;x\x9b2J=1")
				s.SetMonitor("info registers", "RAX=0\r\n\x1b]0;pwned\x07\x1b[2J\r\n")
			},
			want:    []string{`\x1b[2Jevil=+`, `x\x9b2J=1`, `\x1b]0;pwned\x07\x1b[2J`, "RAX=0\r\n"},
			mustNot: []string{"\x1b", "\x07", "\x9b"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stub := gdbstubtest.New(t)
			tt.setup(stub)
			ctx, conn := testenv.DialStub(t, stub)
			var b strings.Builder
			if err := New(conn).WriteReport(ctx, &b); err != nil {
				t.Fatal(err)
			}
			out := b.String()
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("report lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.mustNot {
				if strings.Contains(out, w) {
					t.Errorf("report holds %q:\n%q", w, out)
				}
			}
			if len(stub.Breakpoints()) != 0 {
				t.Errorf("report left breakpoints: %v", stub.Breakpoints())
			}
		})
	}
}

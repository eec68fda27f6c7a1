package annotate

import (
	"testing"

	"github.com/sctrace/sctrace/x86"
)

// TestMemoryAddress computes the linear address an instruction's memory
// operand reaches from the registers before it runs: base, index and
// displacement, RIP-relative from the next instruction, the FS base; none
// for an instruction without a memory operand or with a register unknown.
func TestMemoryAddress(t *testing.T) {
	regs := map[x86.Reg]uint64{
		x86.RIP: 0x401000, x86.RDI: 0x7f0000001000, x86.RBX: 0x1000, x86.RCX: 3, x86.FSBase: 0x7f0000200000,
	}
	tests := []struct {
		name   string
		code   []byte
		want   uint64
		wantOK bool
	}{
		{"movb $1,(%rdi)", []byte{0xc6, 0x07, 0x01}, 0x7f0000001000, true},
		{"mov %eax,0x10(%rbx,%rcx,8)", []byte{0x89, 0x44, 0xcb, 0x10}, 0x1000 + 0x10 + 3*8, true},
		{"mov 0x100(%rip),%rax", []byte{0x48, 0x8b, 0x05, 0x00, 0x01, 0x00, 0x00}, 0x401000 + 7 + 0x100, true},
		{"mov %fs:0x28,%rax", []byte{0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0x00, 0x00, 0x00}, 0x7f0000200000 + 0x28, true},
		{"mov (%rsi),%al (rsi unknown)", []byte{0x8a, 0x06}, 0, false},
		{"syscall", []byte{0x0f, 0x05}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &x86.State{}
			for r, v := range regs {
				st.Set(r, v)
			}
			inst, n, err := Decode(tt.code)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := MemoryAddress(inst, n, st)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("MemoryAddress = %#x, %v; want %#x, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

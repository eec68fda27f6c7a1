package trace

import (
	"testing"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/symbols"
)

// TestOperandSymbols checks that only immediates that can be addresses get
// names. The facts: Linux links x86-64 per-CPU variables at offsets from 0
// (__per_cpu_start = 0, fixed_percpu_data at 0; nm lists them as data in a
// System.map, kallsyms as absolute), so a per-CPU symbol contains every
// small constant; the user data selector __USER_DS is 0x2b
// (arch/x86/include/asm/segment.h); user code is mapped at 64 KiB and above.
func TestOperandSymbols(t *testing.T) {
	sysmap := symbols.New("System.map", []symbols.Symbol{
		{Name: "__per_cpu_start", Addr: 0, Type: 'D'},
		{Name: "fixed_percpu_data", Addr: 0, Type: 'D'},
		{Name: "cpu_debug_store", Addr: 0x1000, Type: 'D'},
		{Name: "apf_reason", Addr: 0x380c0, Type: 'A'},
		{Name: "init_syscall_insn", Addr: 0x401000, Type: 'T'},
		{Name: "__x86_indirect_thunk_rax", Addr: 0xffffffff81e01740, Type: 'T'},
		{Name: "percpu", Addr: 0xffffffff8023f000, Size: 0x2000, Type: 'B'},
	})
	tests := []struct {
		name string
		code []byte
		want string // AT&T
	}{
		{"the user SS selector is a number", []byte{0x6a, 0x2b}, "pushq $0x2b"},
		{"a small constant moved", []byte{0xb8, 0x27, 0x00, 0x00, 0x00}, "mov $0x27,%eax"},
		{"an absolute per-CPU offset", []byte{0xb8, 0xc0, 0x80, 0x03, 0x00}, "mov $0x380c0,%eax"},
		{"a user text address", []byte{0xbf, 0x00, 0x10, 0x40, 0x00}, "mov $init_syscall_insn,%edi"},
		{"a memory operand stays named", []byte{0x48, 0x83, 0x05, 0x08, 0xe0, 0x03, 0x00, 0x01}, "addq $0x1,percpu+4112"},
		{"a branch target stays named", []byte{0xe8, 0x3b, 0xf7, 0xbf, 0x01}, "callq __x86_indirect_thunk_rax"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inst, n, err := annotate.Decode(tt.code)
			if err != nil || n != len(tt.code) {
				t.Fatalf("decode % x: %v (%d bytes)", tt.code, err, n)
			}
			const pc = 0xffffffff80202000
			if got := Disasm(inst, tt.code, pc, annotate.OperandSymbols(inst, sysmap), ATT); got != tt.want {
				t.Errorf("% x: %q, want %q", tt.code, got, tt.want)
			}
		})
	}
}

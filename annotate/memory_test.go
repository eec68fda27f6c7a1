package annotate

import (
	"reflect"
	"testing"

	"github.com/sctrace/sctrace/x86"
)

func TestMemoryBefore(t *testing.T) {
	tss := Range{tssBase, x86.TSSSize}
	tests := []struct {
		name   string
		code   []byte
		before regs
		sys    bool
		want   []Range
	}{
		{"iretq frame", insIretq, with(kernel, regs{x86.RSP: frameRSP}), false, []Range{{frameRSP, 40}}},
		{"lretq frame", insLretq, with(kernel, regs{x86.RSP: frameRSP}), false, []Range{{frameRSP, 16}, {frameRSP + 16, 16}}},
		{"int 0x80 gate and TSS", insInt80, user, true, []Range{{idtBase + 0x800, 16}, tss}},
		{"int 0x80 without info registers", insInt80, user, false, nil},
		{"ud2 gate", insUD2, kernel, true, []Range{{idtBase + 0x60, 16}, tss}},
		{"sysenter: the #UD gate in case", insSysenter, user, true, []Range{{idtBase + 0x60, 16}, tss}},
		{"lcall pointer, GDT, TSS", insLcall, with(user, regs{x86.RAX: farPtr}), true, []Range{{farPtr, 10}, {gdtBase, 0x80}, tss}},
		{"lcall m16:32 through rip", []byte{0xff, 0x1d, 0x10, 0x00, 0x00, 0x00}, user, true, []Range{{userRIP + 6 + 0x10, 6}, {gdtBase, 0x80}, tss}},
		{"syscall needs nothing", insSyscall, user, true, nil},
		{"ordinary instruction", insAddRAX, user, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inst, _, err := Decode(tt.code)
			if err != nil {
				t.Fatal(err)
			}
			st := mk(tt.before)
			if tt.sys {
				st.Sys = sysRegs(cpl(st))
			}
			if got := MemoryBefore(inst, st.Val(x86.RIP), st); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("MemoryBefore = %v, want %v", got, tt.want)
			}
		})
	}
	if MemoryBefore(mustDecode(t, insIretq).Inst, 0, nil) != nil {
		t.Error("MemoryBefore(nil state) asked for memory")
	}
}

func mustDecode(t *testing.T, code []byte) Step {
	t.Helper()
	s := mkStep(t, 0, code, 0, nil, nil)
	return s
}

func TestMemoryAfter(t *testing.T) {
	k := with(kernel, regs{x86.RSP: kstackTop - 0x100, x86.RAX: 0xdead000})
	pc := k[x86.RIP]
	tests := []struct {
		name          string
		code          []byte
		before, after regs
		sys           bool
		want          []Range
	}{
		// The five words of the frame apart from the sixth: an int $0x80
		// frame from user mode ends at the top of TSS.RSP0's stack, and the
		// word above it may be unmapped.
		{"int 0x80 frame", insInt80, user, int80After, false, []Range{{frameRSP, 40}, {frameRSP + 40, 8}}},
		{"call gate frame", insLcall, user, with(user, regs{x86.RSP: kstackTop - 32, x86.CS: 0x10}), false, []Range{{kstackTop - 32, 32}}},
		{"push from memory", insPushGS, k, with(k, regs{x86.RSP: kstackTop - 0x108, x86.RIP: pc + 8}), false, []Range{{kstackTop - 0x108, 8}}},
		{"a load that faulted: frame, IDT, TSS", insLoadRBX, k, with(k, regs{x86.RIP: pfEntry, x86.RSP: kstackTop - 0x130}), true,
			[]Range{{kstackTop - 0x130, 40}, {kstackTop - 0x130 + 40, 8}, {idtBase, 0x1000}, {tssBase, x86.TSSSize}}},
		{"a load that did not fault", insLoadRBX, k, with(k, regs{x86.RIP: pc + 3}), true, nil},
		{"syscall", insSyscall, user, syscallAfter, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mkStep(t, 0, tt.code, tt.before[x86.RIP], tt.before, tt.after)
			if tt.sys {
				s = withSys(s)
			}
			if got := MemoryAfter(s.Inst, s.Addr, s.Before, s.After); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("MemoryAfter = %v, want %v", got, tt.want)
			}
		})
	}
}

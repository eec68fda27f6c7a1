package annotate

import (
	"testing"

	"github.com/sctrace/sctrace/x86"
)

func TestPrivilegeAndMitigations(t *testing.T) {
	k := with(kernel, regs{x86.RFLAGS: 0x2})
	tests := []struct {
		name          string
		code          []byte
		before, after regs
		prevSwapgs    bool
		checks        []check
		clean         bool
	}{
		{"sti", insSti, k, with(k, regs{x86.RFLAGS: 0x202}), false,
			[]check{note(KindPrivilege, "IF 0 → 1: interrupts enabled; one more instruction runs")}, true},
		{"cli", insCli, with(k, regs{x86.RFLAGS: 0x202}), k, false,
			[]check{note(KindPrivilege, "IF 1 → 0: interrupts disabled")}, true},
		{"cli in user mode without IOPL", insCli, user, with(user, regs{x86.RFLAGS: 0x46}), false,
			[]check{finding(KindPrivilege, "by cli at CPL 3 with IOPL 0: it should have raised #GP")}, false},
		{"stac", insStac, k, with(k, regs{x86.RFLAGS: 0x40002}), false,
			[]check{ok(KindPrivilege, "stac: AC = 1: kernel code may now touch user pages (SMAP suspended)")}, true},
		{"clac", insClac, with(k, regs{x86.RFLAGS: 0x40002}), k, false,
			[]check{ok(KindPrivilege, "clac: AC = 0: kernel accesses to user pages fault again")}, true},
		{"stac that did not set AC", insStac, k, k, false,
			[]check{finding(KindPrivilege, "stac: AC = 0")}, false},
		{"verw", insVerw, k, k, false,
			[]check{note(KindMitigation, "verw: with MD_CLEAR microcode")}, true},
		{"lfence after swapgs", insLfence, k, k, true,
			[]check{note(KindMitigation, "lfence right after swapgs")}, true},
		{"lfence", insLfence, k, k, false,
			[]check{note(KindMitigation, "lfence: a speculation barrier")}, true},
		{"retpoline", insCallRAX, with(k, regs{x86.RAX: 0xffffffff81004000}), with(k, regs{x86.RIP: 0xffffffff81004000, x86.RSP: k[x86.RSP] - 8, x86.RAX: 0xffffffff81004000}), false,
			[]check{
				note(KindMitigation, "call 0xffffffff81004000 <__x86_indirect_thunk_rax>: retpoline"),
				note(KindControl, "call 0xffffffff81004000 <__x86_indirect_thunk_rax> (indirect, through rax); returns to 0xffffffff81c00092"),
			}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := tt.before[x86.RIP]
			after := tt.after
			if _, set := after[x86.RIP]; !set || after[x86.RIP] == addr {
				after = with(after, regs{x86.RIP: addr + uint64(len(tt.code))})
			}
			c := &Context{Symbols: testSyms, Knowledge: NewKnowledge()}
			if tt.prevSwapgs {
				Annotate(mkStep(t, 0, insSwapgs, addr-3, k, k), c)
			}
			s := mkStep(t, 1, tt.code, addr, tt.before, after)
			effects := Annotate(s, c)
			expectEffects(t, effects, tt.checks...)
			if tt.clean {
				expectNoFinding(t, effects)
			} else {
				expectFinding(t, effects)
			}
		})
	}
}

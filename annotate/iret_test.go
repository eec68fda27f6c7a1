package annotate

import (
	"testing"

	"github.com/sctrace/sctrace/x86"
)

func TestIretq(t *testing.T) {
	before := with(kernel, regs{x86.RSP: frameRSP, x86.GSBase: 0, x86.KernelGSBase: percpu})
	frame := Memory{Addr: frameRSP, Data: qwords(userRIP+2, 0x33, 0x246, userRSP, 0x2b)}
	after := with(before, regs{x86.RIP: userRIP + 2, x86.CS: 0x33, x86.RFLAGS: 0x246, x86.RSP: userRSP, x86.SS: 0x2b})
	tests := []struct {
		name   string
		after  regs
		mem    []Memory
		checks []check
		clean  bool
	}{
		{
			name: "back to user mode", after: after, mem: []Memory{frame}, clean: true,
			checks: []check{
				note(KindFrame, "iretq pops the frame at 0xffffc90000003fd8: rip 0x401002, cs 0x33, rflags 0x246, rsp 0x7ffc00001238, ss 0x2b"),
				ok(KindPrivilege, "iretq: CPL 0 → 3 (kernel → user)"),
				ok(KindControl, "rip = 0x401002: the popped RIP"),
				ok(KindFlags, "rflags = 0x246: the popped RFLAGS"),
				ok(KindStack, "rsp = 0x7ffc00001238: the popped RSP"),
				note(KindStack, "stack switch: kernel-half stack → user-half stack"),
				note(KindPrivilege, "IF 0 → 1"),
			},
		},
		{
			name: "lands elsewhere than the frame's rip", after: with(after, regs{x86.RIP: userRIP + 0x40}), mem: []Memory{frame},
			checks: []check{finding(KindControl, "rip = 0x401040, expected 0x401002 (the popped RIP)")},
		},
		{
			name: "wrong stack", after: with(after, regs{x86.RSP: userRSP - 8}), mem: []Memory{frame},
			checks: []check{finding(KindStack, "IRET in 64-bit mode always pops RSP")},
		},
		{
			name: "frame not read", after: after, clean: true,
			checks: []check{note(KindCheck, "the frame at 0xffffc90000003fd8 was not read")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mkStep(t, 1, insIretq, int80+0x40, before, tt.after, tt.mem...)
			effects := Annotate(s, &Context{})
			expectEffects(t, effects, tt.checks...)
			if tt.clean {
				expectNoFinding(t, effects)
			} else {
				expectFinding(t, effects)
			}
			if ev := Events(s, effects, nil); !hasEvent(ev, EventIret) || !hasEvent(ev, EventCPLChange) {
				t.Errorf("events %v lack iret and cpl-change", ev)
			}
		})
	}
}

func TestIretqAfterInt80(t *testing.T) {
	c := &Context{}
	Annotate(mkStep(t, 1, insInt80, userRIP, user, int80After), c)
	before := with(int80After, regs{x86.RIP: int80 + 0x40})
	after := with(before, regs{x86.RIP: userRIP + 2, x86.CS: 0x33, x86.RFLAGS: 0x246, x86.RSP: userRSP, x86.SS: 0x2b})
	effects := Annotate(mkStep(t, 90, insIretq, int80+0x40, before, after,
		Memory{Addr: frameRSP, Data: qwords(userRIP+2, 0x33, 0x246, userRSP, 0x2b)}), c)
	expectEffects(t, effects, ok(KindControl, "where the int $0x80 of step 1 left off"))
}

package annotate

import (
	"strings"
	"testing"

	"github.com/sctrace/sctrace/x86"
)

const (
	sysenterEIP = 0xffffffff81c01000
	sysenterESP = 0xfffffe0000005000
)

var sysenterAfter = with(user, regs{
	x86.RIP: sysenterEIP, x86.RSP: sysenterESP, x86.CS: 0x10, x86.SS: 0x18, x86.RFLAGS: 0x46,
})

func TestSysenter(t *testing.T) {
	tests := []struct {
		name   string
		after  regs
		mem    []Memory
		sys    bool
		checks []check
		clean  bool
	}{
		{
			name: "intel: enters through the three MSRs", after: sysenterAfter, clean: true,
			checks: []check{
				ok(KindPrivilege, "sysenter: CPL 3 → 0"),
				note(KindMSR, "rip = 0xffffffff81c01000: from IA32_SYSENTER_EIP (value inferred from this transition)"),
				note(KindMSR, "stack switch: user-half stack → kernel-half stack, rsp = 0xfffffe0000005000: from IA32_SYSENTER_ESP"),
				note(KindMSR, "cs = 0x10 (GDT[2] RPL0): from IA32_SYSENTER_CS"),
				ok(KindRegister, "ss = 0x18 (GDT[3] RPL0): SYSENTER loads SS = CS + 8"),
				ok(KindFlags, "SYSENTER clears IF, VM and RF (IF 1 → 0)"),
				note(KindStack, "sysenter saves neither the return address nor the caller's RSP"),
			},
		},
		{
			name: "ss is not cs+8", after: with(sysenterAfter, regs{x86.SS: 0x28}),
			checks: []check{finding(KindRegister, "SYSENTER loads SS = CS + 8")},
		},
		{
			name: "IF survives", after: with(sysenterAfter, regs{x86.RFLAGS: 0x246}),
			checks: []check{finding(KindFlags, "SYSENTER clears IF")},
		},
		{
			name: "amd: #UD found through the IDT", sys: true, clean: true,
			after: with(user, regs{x86.RIP: udEntry, x86.CS: 0x10, x86.SS: 0, x86.RSP: frameRSP, x86.RFLAGS: 0x46}),
			mem: []Memory{
				idtEntry(6, gateBytes(udEntry, 0x10, 0, 0xe, 0)), tssMem(tssRSP0),
				{Addr: frameRSP, Data: qwords(userRIP, 0x33, 0x246, userRSP, 0x2b, 0), After: true},
			},
			checks: []check{
				note(KindControl, "sysenter raised #UD: in 64-bit mode AMD CPUs"),
				ok(KindControl, "the handler in IDT[0x6]"),
				ok(KindFrame, "rip 0x401000, cs 0x33"),
			},
		},
		{
			name: "amd: #UD found from the frame alone", clean: true,
			after: with(user, regs{x86.RIP: udEntry, x86.CS: 0x10, x86.SS: 0, x86.RSP: frameRSP, x86.RFLAGS: 0x46}),
			mem:   []Memory{{Addr: frameRSP, Data: qwords(userRIP, 0x33, 0x246, userRSP, 0x2b, 0), After: true}},
			checks: []check{
				note(KindControl, "sysenter raised #UD"),
				note(KindPrivilege, "#UD invalid opcode delivered"),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mkStep(t, 1, insSysenter, userRIP, user, tt.after, tt.mem...)
			if tt.sys {
				s = withSys(s)
			}
			c := &Context{}
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

func TestSysenterKnowledge(t *testing.T) {
	c := &Context{}
	Annotate(mkStep(t, 1, insSysenter, userRIP, user, sysenterAfter), c)
	for _, w := range []struct {
		index        uint32
		value, known uint64
	}{
		{x86.MSRSysenterEIP, sysenterEIP, ^uint64(0)},
		{x86.MSRSysenterESP, sysenterESP, ^uint64(0)},
		{x86.MSRSysenterCS, 0x10, 0xfffc},
	} {
		m := c.Knowledge.MSR(w.index)
		if m == nil || m.Value != w.value || m.Known != w.known || m.Source != SourceInferred {
			t.Errorf("%s = %+v, want %#x (known %#x) inferred", x86.MSRName(w.index), m, w.value, w.known)
		}
	}
	effects := Annotate(mkStep(t, 2, insSysenter, userRIP, user, with(sysenterAfter, regs{x86.RIP: sysenterEIP + 0x100})), c)
	expectEffects(t, effects, finding(KindMSR, "IA32_SYSENTER_EIP: this step shows"))
}

func TestSysexit(t *testing.T) {
	before := with(kernel, regs{x86.RDX: userRIP + 2, x86.RCX: userRSP, x86.RSP: sysenterESP - 0x100})
	after := with(before, regs{x86.RIP: userRIP + 2, x86.RSP: userRSP, x86.CS: 0x33, x86.SS: 0x3b})
	tests := []struct {
		name   string
		after  regs
		checks []check
		clean  bool
	}{
		{"architectural", after, []check{
			ok(KindPrivilege, "sysexit to 64-bit user mode: CPL 0 → 3"),
			ok(KindControl, "rip = 0x401002: the return address from RDX"),
			ok(KindStack, "rsp = 0x7ffc00001238: the user stack pointer from RCX"),
			ok(KindRegister, "ss = 0x3b (GDT[7] RPL3)"),
		}, true},
		{"rip is not rdx", with(after, regs{x86.RIP: userRIP}), []check{finding(KindControl, "SYSEXIT loads RIP from RDX")}, false},
		{"ss is not cs+8", with(after, regs{x86.SS: 0x2b}), []check{finding(KindRegister, "expected ss 0x3b")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			effects := Annotate(mkStep(t, 1, insSysexitq, sysenterEIP+0x80, before, tt.after), &Context{})
			expectEffects(t, effects, tt.checks...)
			if tt.clean {
				expectNoFinding(t, effects)
			} else {
				expectFinding(t, effects)
			}
		})
	}
}

// TestSysexitStackAndCPL: SYSEXIT loads RSP from RCX (SDM vol. 2B, SYSEXIT),
// a switch from the kernel stack to the user stack that is an event as it is
// for iretq; the privilege change is reported once.
func TestSysexitStackAndCPL(t *testing.T) {
	before := with(kernel, regs{x86.RDX: userRIP + 2, x86.RCX: userRSP, x86.RSP: kstackTop - 0x100})
	after := with(before, regs{x86.RIP: userRIP + 2, x86.RSP: userRSP, x86.CS: 0x33, x86.SS: 0x3b})
	s := mkStep(t, 1, insSysexitq, sysenterEIP+0x80, before, after)
	c := &Context{Regions: taskStack}
	effects := Annotate(s, c)
	expectEffects(t, effects, note(KindStack, `stack switch: kernel stack "task" → user stack "main"`))
	if ev := Events(s, effects, c); !hasEvent(ev, EventStackSwitch) {
		t.Errorf("sysexit events %v lack stack-switch", ev)
	}
	n := 0
	for _, e := range effects {
		if strings.Contains(e.Text, "CPL 0 → 3") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("CPL 0 → 3 said %d times, want once:\n%s", n, dump(effects))
	}
}

package annotate

import (
	"encoding/binary"
	"testing"

	"github.com/sctrace/sctrace/x86"
)

const (
	farPtr     = 0x402000
	gateTarget = 0xffffffff81008000
)

// gdtMem is a GDT with a 64-bit kernel code segment at 0x10 and a call gate
// at 0x48 (DPL 3) to gateTarget.
func gdtMem(gateType int) Memory {
	b := make([]byte, 0x80)
	b[0x10+5], b[0x10+6] = 0x9a, 0x20 // present, DPL 0, code, L
	copy(b[0x48:], gateBytes(gateTarget, 0x10, 0, gateType, 3))
	return Memory{Addr: gdtBase, Data: b}
}

func farPtrMem(sel uint16) Memory {
	b := make([]byte, 10)
	binary.LittleEndian.PutUint16(b[8:], sel)
	return Memory{Addr: farPtr, Data: b}
}

func TestCallGate(t *testing.T) {
	before := with(user, regs{x86.RAX: farPtr})
	newRSP := uint64(kstackTop - 32)
	after := with(before, regs{x86.RIP: gateTarget, x86.CS: 0x10, x86.SS: 0, x86.RSP: newRSP})
	frame := Memory{Addr: newRSP, Data: qwords(userRIP+3, 0x33, userRSP, 0x2b), After: true}
	tests := []struct {
		name   string
		after  regs
		mem    []Memory
		checks []check
		clean  bool
	}{
		{
			name: "through a 64-bit call gate", after: after, clean: true,
			mem: []Memory{farPtrMem(0x4b), gdtMem(0xc), tssMem(kstackTop), frame},
			checks: []check{
				note(KindControl, "GDT[9] is a 64-bit call gate: call gate, DPL 3"),
				ok(KindControl, "rip = 0xffffffff81008000: the call gate's offset"),
				ok(KindPrivilege, "call gate: CPL 3 → 0"),
				ok(KindStack, "rsp = 0xffffc90000003fe0: TSS.RSP0 0xffffc90000004000 minus the four pushed words"),
				ok(KindRegister, "ss = 0x0: a call gate to an inner level"),
				ok(KindPrivilege, "IF 1 → 1: a call gate does not change IF"),
				ok(KindFrame, "the CPU pushed at 0xffffc90000003fe0: rip 0x401003, cs 0x33, rsp 0x7ffc00001238, ss 0x2b"),
			},
		},
		{
			name: "call gate cleared IF", after: with(after, regs{x86.RFLAGS: 0x46}),
			mem:    []Memory{farPtrMem(0x4b), gdtMem(0xc), tssMem(kstackTop), frame},
			checks: []check{finding(KindPrivilege, "a call gate does not change IF")},
		},
		{
			name: "pushed the wrong cs", after: after,
			mem:    []Memory{farPtrMem(0x4b), gdtMem(0xc), tssMem(kstackTop), {Addr: newRSP, Data: qwords(userRIP+3, 0x2b, userRSP, 0x2b), After: true}},
			checks: []check{finding(KindFrame, "pushed cs = 0x2b")},
		},
		{
			name: "not a call gate", after: after,
			mem:    []Memory{farPtrMem(0x4b), gdtMem(0xe), tssMem(kstackTop), frame},
			checks: []check{finding(KindControl, "not a call gate")},
		},
		{
			name: "nothing read: RSP0 inferred", after: after, clean: true,
			checks: []check{
				note(KindCheck, "the far pointer operand was not read"),
				note(KindStack, "TSS.RSP0 = 0xffffc90000004000 (inferred"),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := withSys(mkStep(t, 1, insLcall, userRIP, before, tt.after, tt.mem...))
			effects := Annotate(s, &Context{})
			expectEffects(t, effects, tt.checks...)
			if tt.clean {
				expectNoFinding(t, effects)
			} else {
				expectFinding(t, effects)
			}
			if ev := Events(s, effects, nil); !hasEvent(ev, EventCallGate) {
				t.Errorf("events %v lack call-gate", ev)
			}
		})
	}
}

func TestFarReturn(t *testing.T) {
	rsp := uint64(kstackTop - 32)
	before := with(kernel, regs{x86.RSP: rsp, x86.RIP: gateTarget + 0x20})
	frame := Memory{Addr: rsp, Data: qwords(userRIP+3, 0x33, userRSP, 0x2b)}
	after := with(before, regs{x86.RIP: userRIP + 3, x86.CS: 0x33, x86.SS: 0x2b, x86.RSP: userRSP})
	tests := []struct {
		name   string
		after  regs
		mem    []Memory
		checks []check
		clean  bool
	}{
		{"to user mode", after, []Memory{frame}, []check{
			ok(KindPrivilege, "far return popping rip 0x401003, cs 0x33: CPL 0 → 3"),
			ok(KindControl, "rip = 0x401003: the popped RIP"),
			ok(KindStack, "rsp = 0x7ffc00001238: the popped RSP"),
			ok(KindRegister, "ss = 0x2b: the popped SS"),
		}, true},
		{"wrong stack", with(after, regs{x86.RSP: userRSP + 8}), []Memory{frame},
			[]check{finding(KindStack, "far RET to an outer level pops RSP")}, false},
		{"stays in the kernel", with(before, regs{x86.RIP: userRIP + 3, x86.RSP: rsp + 16}),
			[]Memory{{Addr: rsp, Data: qwords(userRIP+3, 0x10)}},
			[]check{ok(KindStack, "same privilege level: only RIP and CS popped")}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			effects := Annotate(mkStep(t, 1, insLretq, gateTarget+0x20, before, tt.after, tt.mem...), &Context{})
			expectEffects(t, effects, tt.checks...)
			if tt.clean {
				expectNoFinding(t, effects)
			} else {
				expectFinding(t, effects)
			}
		})
	}
}

// TestFarReturnNotCaptured annotates a far RET to user mode whose frame a
// recorder could not read, as the log recorder cannot: the note says why
// (Context.Unread), and the stack switch, which RSP itself shows, is still
// an event.
func TestFarReturnNotCaptured(t *testing.T) {
	rsp := uint64(kstackTop - 32)
	before := with(kernel, regs{x86.RSP: rsp, x86.RIP: gateTarget + 0x20})
	after := with(before, regs{x86.RIP: userRIP + 3, x86.CS: 0x33, x86.SS: 0x2b, x86.RSP: userRSP})
	for _, tt := range []struct{ unread, want string }{
		{"", "the return frame at 0xffffc90000003fe0 was not read"},
		{"not captured by the log recorder", "the return frame at 0xffffc90000003fe0 was not read (not captured by the log recorder)"},
	} {
		s := mkStep(t, 1, insLretq, gateTarget+0x20, before, after)
		effects := Annotate(s, &Context{Unread: tt.unread})
		expectEffects(t, effects, note(KindCheck, tt.want), note(KindStack, "stack switch: kernel-half stack → user-half stack"))
		expectNoFinding(t, effects)
		if ev := Events(s, effects, nil); !hasEvent(ev, EventStackSwitch) {
			t.Errorf("events %v lack stack-switch", ev)
		}
	}
}

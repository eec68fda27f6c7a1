package annotate

import (
	"testing"

	"github.com/sctrace/sctrace/x86"
)

// wr returns a kernel state about to write value to MSR index.
func wr(index uint32, value uint64) regs {
	return with(kernel, regs{x86.RCX: uint64(index), x86.RAX: value & 0xffffffff, x86.RDX: value >> 32})
}

func TestWrmsr(t *testing.T) {
	next := regs{x86.RIP: kernel[x86.RIP] + 2}
	tests := []struct {
		name          string
		before, after regs
		checks        []check
		clean         bool
	}{
		{"LSTAR", wr(x86.MSRLSTAR, lstar), with(wr(x86.MSRLSTAR, lstar), next),
			[]check{note(KindMSR, "wrmsr: IA32_LSTAR (0xc0000082) := 0xffffffff81c00080 (value read from edx:eax): the system-call entry point 0xffffffff81c00080 <entry_SYSCALL_64>")}, true},
		{"STAR", wr(x86.MSRSTAR, 0x0023001000000000), with(wr(x86.MSRSTAR, 0x0023001000000000), next),
			[]check{note(KindMSR, "syscall CS/SS 0x10/0x18, sysret base 0x23 (CS 0x33, SS 0x2b)")}, true},
		{"GS base takes effect", wr(x86.MSRGSBase, percpu), with(wr(x86.MSRGSBase, percpu), with(next, regs{x86.GSBase: percpu})),
			[]check{ok(KindMSR, "gs_base = 0xffff888007c00000: the value written")}, true},
		{"GS base write lost", with(wr(x86.MSRGSBase, percpu), regs{x86.GSBase: 0}), with(wr(x86.MSRGSBase, percpu), with(next, regs{x86.GSBase: 0})),
			[]check{finding(KindMSR, "gs_base = 0x0, expected 0xffff888007c00000 (the value written)")}, false},
		{"SPEC_CTRL", wr(x86.MSRSpecCtrl, 1), with(wr(x86.MSRSpecCtrl, 1), next),
			[]check{note(KindMitigation, "IA32_SPEC_CTRL := 0x1: IBRS on")}, true},
		{"PRED_CMD", wr(x86.MSRPredCmd, 1), with(wr(x86.MSRPredCmd, 1), next),
			[]check{note(KindMitigation, "IA32_PRED_CMD.IBPB")}, true},
		{"from user mode", with(wr(x86.MSRLSTAR, 0), regs{x86.CS: 0x33}), with(wr(x86.MSRLSTAR, 0), with(next, regs{x86.CS: 0x33})),
			[]check{finding(KindPrivilege, "wrmsr at CPL 3 should raise #GP")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Context{Symbols: testSyms}
			before := tt.before
			s := mkStep(t, 4, insWrmsr, kernel[x86.RIP], before, tt.after)
			effects := Annotate(s, c)
			expectEffects(t, effects, tt.checks...)
			if tt.clean {
				expectNoFinding(t, effects)
			} else {
				expectFinding(t, effects)
			}
			idx := uint32(before[x86.RCX])
			m := c.Knowledge.MSR(idx)
			if m == nil || m.Source != SourceRead || m.Known != ^uint64(0) {
				t.Errorf("%s learnt as %+v, want a full reading", x86.MSRName(idx), m)
			}
			if ev := Events(s, effects, c); !hasEvent(ev, EventMSRWrite) {
				t.Errorf("events %v lack msr-write", ev)
			}
		})
	}
}

func TestRdmsr(t *testing.T) {
	before := with(kernel, regs{x86.RCX: uint64(x86.MSRKernelGSBase), x86.KernelGSBase: 0x7f00})
	after := with(before, regs{x86.RIP: kernel[x86.RIP] + 2, x86.RAX: 0x7f00, x86.RDX: 0})
	c := &Context{}
	effects := Annotate(mkStep(t, 1, insRdmsr, kernel[x86.RIP], before, after), c)
	expectEffects(t, effects,
		note(KindMSR, "rdmsr: IA32_KERNEL_GS_BASE (0xc0000102) = 0x7f00 (read into edx:eax)"),
		ok(KindMSR, "the stub showed k_gs_base = 0x7f00 before"))
	expectNoFinding(t, effects)
	if m := c.Knowledge.MSR(x86.MSRKernelGSBase); m == nil || m.Value != 0x7f00 || m.Source != SourceRead {
		t.Errorf("KERNEL_GS_BASE = %+v", m)
	}

	bad := with(after, regs{x86.RDX: 1 << 40})
	effects = Annotate(mkStep(t, 2, insRdmsr, kernel[x86.RIP], before, bad), c)
	expectEffects(t, effects, finding(KindRegister, "it must clear their upper halves"))
}

func TestStubMSRsLearnt(t *testing.T) {
	c := &Context{}
	Annotate(mkStep(t, 9, insAddRAX, userRIP, user, with(user, regs{x86.RIP: userRIP + 4, x86.RAX: 40})), c)
	m := c.Knowledge.MSR(x86.MSRKernelGSBase)
	if m == nil || m.Value != percpu || m.Source != SourceRead || m.How != "k_gs_base register from the stub" {
		t.Errorf("KERNEL_GS_BASE = %+v", m)
	}
	if m := c.Knowledge.MSR(x86.MSREFER); m == nil || m.Value != 0xd01 {
		t.Errorf("EFER = %+v", m)
	}
}

package annotate

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sctrace/sctrace/x86"
)

// cs32 and cs64 are the CS lines of `info registers` for Linux's
// __USER32_CS (GDT_ENTRY_INIT(0xc0fb, 0, 0xfffff) in segment.h: L clear,
// D set) and __USER_CS (L set), as QEMU keeps the descriptor's flags.
var (
	cs32 = x86.Segment{Selector: 0x23, Limit: 0xffffffff, Attr: 0x00cffb00}
	cs64 = x86.Segment{Selector: 0x33, Limit: 0xffffffff, Attr: 0x00a0fb00}
)

// withCS gives a step's state before it the CS descriptor cs.
func withCS(s Step, cs x86.Segment) Step {
	s.Before.Sys = sysRegs(3)
	s.Before.Sys.Segments["CS"] = cs
	return s
}

// TestCompatEntry checks what an entry from compatibility mode adds: the
// SYSCALL target from CSTAR and the vendor rule, SYSENTER's 64-bit loads,
// and int $0x80's 64-bit frame; from 64-bit mode none of it.
func TestCompatEntry(t *testing.T) {
	userCS := func(cs uint64) regs { return with(user, regs{x86.CS: cs}) }
	tests := []struct {
		name   string
		step   Step
		cpu    string // the header's CPU model; "" when unknown
		checks []check
		compat bool
		intel  bool // the finding that an Intel CPU went to CSTAR
	}{
		{
			name:   "syscall from compatibility mode",
			step:   withCS(mkStep(t, 1, insSyscall, userRIP, userCS(0x23), syscallAfter), cs32),
			compat: true,
			checks: []check{
				note(KindControl, "syscall from compatibility mode (cs = 0x23 (GDT[4] RPL3), a code segment with L = 0"),
				note(KindControl, "takes the entry point from CSTAR, not LSTAR"),
				note(KindControl, "Intel's raise #UD on syscall outside 64-bit mode"),
				note(KindMSR, fmt.Sprintf("CSTAR = %#x (inferred: the RIP syscall jumped to)", uint64(lstar))),
			},
		},
		{
			// QEMU 7.2's TCG with -cpu qemu64,vendor=GenuineIntel: the
			// syscall went to CSTAR, which the SDM's Intel CPU never
			// does (#UD if CS.L ≠ 1).
			name:   "syscall from compatibility mode to CSTAR on an Intel vendor",
			step:   withCS(mkStep(t, 1, insSyscall, userRIP, userCS(0x23), syscallAfter), cs32),
			cpu:    "qemu64,vendor=GenuineIntel",
			compat: true,
			intel:  true,
			checks: []check{
				finding(KindControl, "on an Intel CPU a SYSCALL in compatibility mode raises #UD (SDM: #UD if CS.L ≠ 1); this CPU (-cpu qemu64,vendor=GenuineIntel) went to CSTAR instead"),
			},
		},
		{
			name:   "syscall from compatibility mode to CSTAR on an AMD vendor",
			step:   withCS(mkStep(t, 1, insSyscall, userRIP, userCS(0x23), syscallAfter), cs32),
			cpu:    "qemu64,vendor=AuthenticAMD",
			compat: true,
			checks: []check{note(KindControl, "takes the entry point from CSTAR, not LSTAR")},
		},
		{
			name:   "syscall from compatibility mode to CSTAR on qemu64 (AMD)",
			step:   withCS(mkStep(t, 1, insSyscall, userRIP, userCS(0x23), syscallAfter), cs32),
			cpu:    "qemu64",
			compat: true,
			checks: []check{note(KindControl, "takes the entry point from CSTAR, not LSTAR")},
		},
		{
			name:   "sysenter from compatibility mode",
			step:   withCS(mkStep(t, 1, insSysenter, userRIP, userCS(0x23), sysenterAfter), cs32),
			compat: true,
			checks: []check{
				note(KindControl, "sysenter from compatibility mode"),
				note(KindControl, "loads all 64 bits of SYSENTER_EIP and SYSENTER_ESP and a 64-bit CS (L = 1) from SYSENTER_CS"),
			},
		},
		{
			name:   "int $0x80 from compatibility mode",
			step:   withCS(mkStep(t, 1, insInt80, userRIP, userCS(0x23), int80After, int80Frame(userRIP+2)), cs32),
			compat: true,
			checks: []check{note(KindFrame, "int $0x80 from compatibility mode")},
		},
		{
			name:   "syscall from compatibility mode to CSTAR = 0",
			step:   withCS(mkStep(t, 1, insSyscall, userRIP, userCS(0x23), with(syscallAfter, regs{x86.RIP: 0})), cs32),
			compat: true,
			checks: []check{finding(KindControl, "rip = 0: CSTAR is 0, no entry point")},
		},
		{
			// QEMU 10's TCG with an Intel vendor, as an Intel CPU: the
			// CPU is in the #UD handler with a frame whose RIP is the
			// syscall itself and whose CS is the 32-bit one.
			name: "syscall from compatibility mode raises #UD (Intel)",
			step: withCS(mkStep(t, 1, insSyscall, userRIP, userCS(0x23),
				with(user, regs{x86.RIP: udEntry, x86.CS: 0x10, x86.SS: 0, x86.RSP: frameRSP, x86.RFLAGS: 0x46}),
				Memory{Addr: frameRSP, Data: qwords(userRIP, 0x23, 0x246, userRSP, 0x2b, 0), After: true}), cs32),
			cpu:    "qemu64,vendor=GenuineIntel",
			compat: true,
			checks: []check{
				note(KindControl, "syscall raised #UD: outside 64-bit mode"),
				note(KindPrivilege, "syscall from compatibility mode: #UD invalid opcode delivered"),
				ok(KindFrame, "rip 0x401000, cs 0x23"),
			},
		},
		{name: "syscall from 64-bit mode", step: withCS(mkStep(t, 1, insSyscall, userRIP, user, syscallAfter), cs64)},
		{name: "syscall from 64-bit mode on an Intel vendor", step: withCS(mkStep(t, 1, insSyscall, userRIP, user, syscallAfter), cs64), cpu: "qemu64,vendor=GenuineIntel"},
		{name: "sysenter from 64-bit mode", step: withCS(mkStep(t, 1, insSysenter, userRIP, user, sysenterAfter), cs64)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			effects := Annotate(tt.step, &Context{CPUModel: tt.cpu})
			expectEffects(t, effects, tt.checks...)
			if strings.Contains(tt.name, "#UD") || (strings.Contains(tt.name, "CSTAR on") && !tt.intel) {
				expectNoFinding(t, effects)
			}
			if found := strings.Contains(dump(effects), "went to CSTAR instead"); found != tt.intel {
				t.Errorf("finds an Intel CPU that went to CSTAR: %v, want %v:\n%s", found, tt.intel, dump(effects))
			}
			said := strings.Contains(dump(effects), "from compatibility mode")
			if said != tt.compat {
				t.Errorf("says compatibility mode: %v, want %v:\n%s", said, tt.compat, dump(effects))
			}
		})
	}
}

// TestCompatLanding checks the sysretl that ends a 32-bit sysenter: Linux
// returns it to the vDSO's int80_landing_pad, not after the sysenter, and
// the checks before it are do_fast_syscall_32's, __USER32_CS among them.
func TestCompatLanding(t *testing.T) {
	const landing, userESP = 0xf7fc9559, 0xffd79630
	c := &Context{}
	enter := withCS(mkStep(t, 1, insSysenter, userRIP, with(user, regs{x86.CS: 0x23, x86.RSP: userESP}), sysenterAfter), cs32)
	Annotate(enter, c)
	kernel := with(sysenterAfter, regs{x86.RCX: landing, x86.R11: 0x246, x86.RSP: userESP})
	back := with(user, regs{x86.RIP: landing, x86.CS: 0x23, x86.SS: 0x2b, x86.RFLAGS: 0x246, x86.RCX: landing, x86.R11: 0x246, x86.RSP: userESP})
	effects := Annotate(mkStep(t, 2, insSysretl, 0xffffffff81c01a00, kernel, back), c)
	expectEffects(t, effects,
		ok(KindPrivilege, "sysret to compatibility (32-bit) user mode: CPL 0 → 3"),
		note(KindControl, "rip = 0xf7fc9559, not the instruction after the sysenter of step 1"),
		note(KindControl, "int80_landing_pad"),
	)
	expectNoFinding(t, effects)
}

// TestSysretChecksCompat checks the conditions do_fast_syscall_32
// (arch/x86/entry/common.c) tests before a 32-bit call returns by SYSRETL:
// pt_regs->cs == __USER32_CS (0x23, not the 64-bit __USER_CS) and
// pt_regs->ss == __USER_DS; the sysretl names the function.
func TestSysretChecksCompat(t *testing.T) {
	c := &Context{Regions: taskStack}
	regsAt := uint64(kstackTop - PtRegsSize)
	st := with(kernel, regs{x86.RSP: regsAt, x86.RFLAGS: 0x2})
	pc := uint64(lstar + 0x40)
	steps := []struct {
		code []byte
		want string
	}{
		{[]byte{0x48, 0x83, 0xbc, 0x24, 0x88, 0, 0, 0, 0x23}, "cmp pt_regs->cs with 0x23: Linux's check before SYSRET that CS == __USER32_CS (SYSRETL, back to compatibility mode, loads CS from STAR[63:48]"},
		{[]byte{0x48, 0x83, 0xbc, 0x24, 0xa0, 0, 0, 0, 0x2b}, "cmp pt_regs->ss with 0x2b: Linux's check before SYSRET that SS == __USER_DS"},
	}
	for i, s := range steps {
		before := with(st, regs{x86.RIP: pc})
		after := with(before, regs{x86.RIP: pc + uint64(len(s.code)), x86.RFLAGS: 0x46})
		expectEffects(t, Annotate(mkStep(t, 10+i, s.code, pc, before, after), c), note(KindCheck, s.want))
		st, pc = after, pc+uint64(len(s.code))
	}
	const landing = 0xf7fc9559
	before := with(st, regs{x86.RIP: pc, x86.RCX: landing, x86.R11: 0x246, x86.RSP: 0xffd79630})
	after := with(user, regs{x86.RIP: landing, x86.CS: 0x23, x86.SS: 0x2b, x86.RFLAGS: 0x246, x86.RCX: landing, x86.R11: 0x246, x86.RSP: 0xffd79630})
	sysret := Annotate(mkStep(t, 20, insSysretl, pc, before, after), c)
	expectEffects(t, sysret, note(KindCheck, "the kernel chose SYSRET after checking, as Linux's do_fast_syscall_32 does, that CS == __USER32_CS (step 10), SS == __USER_DS (step 11)"))
}

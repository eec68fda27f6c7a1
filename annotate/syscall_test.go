package annotate

import (
	"strings"
	"testing"

	"github.com/sctrace/sctrace/x86"
)

// syscallAfter is the state at the first instruction of entry_SYSCALL_64.
var syscallAfter = with(user, regs{
	x86.RIP: lstar, x86.RCX: userRIP + 2, x86.R11: 0x246, x86.RFLAGS: 0x2,
	x86.CS: 0x10, x86.SS: 0x18,
})

func TestSyscall(t *testing.T) {
	tests := []struct {
		name   string
		before regs
		after  regs
		checks []check
		clean  bool
	}{
		{
			name: "architectural", before: user, after: syscallAfter, clean: true,
			checks: []check{
				ok(KindPrivilege, "CPL 3 → 0 (user → kernel)"),
				note(KindControl, "rip = 0xffffffff81c00080 <entry_SYSCALL_64>: the kernel entry point, from LSTAR"),
				note(KindMSR, "LSTAR = 0xffffffff81c00080 (inferred"),
				ok(KindRegister, "rcx = 0x401002: the address of the next instruction"),
				ok(KindRegister, "r11 = 0x246: RFLAGS before the syscall"),
				note(KindFlags, "FMASK cleared IF"),
				note(KindFlags, "ZF PF cleared by FMASK or by the emulator"),
				ok(KindRegister, "cs = 0x10 (GDT[2] RPL0), ss = 0x18 (GDT[3] RPL0)"),
				ok(KindStack, "SYSCALL does not switch stacks"),
			},
		},
		{
			name: "rcx is not the next instruction", before: user,
			after:  with(syscallAfter, regs{x86.RCX: userRIP}),
			checks: []check{finding(KindRegister, "rcx = 0x401000, expected 0x401002")},
		},
		{
			name: "ss is not cs+8", before: user,
			after:  with(syscallAfter, regs{x86.SS: 0x20}),
			checks: []check{finding(KindRegister, "SS must be CS + 8")},
		},
		{
			name: "r11 is not rflags", before: user,
			after:  with(syscallAfter, regs{x86.R11: 0x202}),
			checks: []check{finding(KindRegister, "r11 = 0x202, expected 0x246")},
		},
		{
			name: "rsp switched", before: user,
			after:  with(syscallAfter, regs{x86.RSP: kstackTop}),
			checks: []check{finding(KindStack, "SYSCALL must not change RSP")},
		},
		{
			name: "a flag set by syscall", before: user,
			after:  with(syscallAfter, regs{x86.RFLAGS: 0x402}),
			checks: []check{finding(KindFlags, "DF set, but SYSCALL only clears flags")},
		},
		{
			name: "still at cpl 3", before: user,
			after:  with(syscallAfter, regs{x86.CS: 0x13, x86.SS: 0x1b}),
			checks: []check{finding(KindPrivilege, "puts the CPU at CPL 0")},
		},
		{
			name: "unknown rcx after", before: user,
			after:  without(syscallAfter, x86.RCX),
			checks: []check{note(KindCheck, "rcx unknown after the step")},
			clean:  true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Context{Symbols: testSyms}
			effects := Annotate(mkStep(t, 1, insSyscall, userRIP, tt.before, tt.after), c)
			expectEffects(t, effects, tt.checks...)
			if tt.clean {
				expectNoFinding(t, effects)
			} else {
				expectFinding(t, effects)
			}
		})
	}
}

func TestSyscallLearnsMSRs(t *testing.T) {
	c := &Context{Accel: "kvm"}
	Annotate(mkStep(t, 3, insSyscall, userRIP, user, syscallAfter), c)
	k := c.Knowledge
	m := k.MSR(x86.MSRLSTAR)
	if m == nil || m.Value != lstar || m.Known != ^uint64(0) || m.Source != SourceInferred || m.Step != 3 {
		t.Fatalf("LSTAR = %+v, want %#x inferred at step 3", m, uint64(lstar))
	}
	star := k.MSR(x86.MSRSTAR)
	if star == nil || star.Known != 0xffff<<32 || star.Value != 0x10<<32 {
		t.Errorf("STAR = %+v, want bits 47:32 = 0x10", star)
	}
	fm := k.MSR(x86.MSRFMASK)
	// IF, ZF, PF cleared (in FMASK); nothing set after except bit 1.
	if fm == nil || fm.Value != 0x244 || fm.Known != 0x244 {
		t.Errorf("FMASK = %+v, want value and known 0x244", fm)
	}
}

func TestSyscallContradictsKnowledge(t *testing.T) {
	tests := []struct {
		name   string
		second regs // state after the second syscall
		before regs // state before it
		want   string
	}{
		{"LSTAR changed between two syscalls", with(syscallAfter, regs{x86.RIP: lstar + 0x40}), user, "IA32_LSTAR: this step shows"},
		{"FMASK kept a flag it cleared before", with(syscallAfter, regs{x86.RFLAGS: 0x202}), user, "IA32_FMASK: this step shows"},
		{"STAR kernel selector changed", with(syscallAfter, regs{x86.CS: 0x8, x86.SS: 0x10}), user, "IA32_STAR: this step shows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Context{}
			expectNoFinding(t, Annotate(mkStep(t, 1, insSyscall, userRIP, user, syscallAfter), c))
			effects := Annotate(mkStep(t, 50, insSyscall, userRIP, tt.before, tt.second), c)
			expectEffects(t, effects, finding(KindMSR, tt.want))
		})
	}
	t.Run("a second identical syscall agrees", func(t *testing.T) {
		c := &Context{}
		Annotate(mkStep(t, 1, insSyscall, userRIP, user, syscallAfter), c)
		effects := Annotate(mkStep(t, 50, insSyscall, userRIP, user, syscallAfter), c)
		expectNoFinding(t, effects)
		expectEffects(t, effects,
			ok(KindControl, "the entry point in LSTAR, as known (inferred at step 1"),
			ok(KindMSR, "FMASK agrees"),
			ok(KindMSR, "STAR[47:32] = 0x10, as known"))
	})
	t.Run("a wrmsr in between is no contradiction", func(t *testing.T) {
		c := &Context{}
		Annotate(mkStep(t, 1, insSyscall, userRIP, user, syscallAfter), c)
		wr := with(kernel, regs{x86.RCX: uint64(x86.MSRLSTAR), x86.RAX: 0x81c00100, x86.RDX: 0xffffffff})
		Annotate(mkStep(t, 2, insWrmsr, lstar+0x20, wr, with(wr, regs{x86.RIP: lstar + 0x22})), c)
		effects := Annotate(mkStep(t, 3, insSyscall, userRIP, user, with(syscallAfter, regs{x86.RIP: 0xffffffff81c00100})), c)
		expectNoFinding(t, effects)
		expectEffects(t, effects, ok(KindControl, "as known (read at step 2"))
	})
}

func TestSyscallDisabled(t *testing.T) {
	before := with(user, regs{x86.EFER: 0xd00})
	ud := uint64(0xffffffff81002000)
	after := with(before, regs{x86.RIP: ud, x86.CS: 0x10, x86.SS: 0, x86.RSP: kstackTop - 40, x86.RFLAGS: 0x46})
	effects := Annotate(mkStep(t, 1, insSyscall, userRIP, before, after,
		Memory{Addr: kstackTop - 40, Data: qwords(userRIP, 0x33, 0x246, userRSP, 0x2b, 0), After: true}), &Context{Symbols: testSyms})
	expectEffects(t, effects,
		note(KindMSR, "EFER.SCE is clear"),
		note(KindPrivilege, "#UD invalid opcode delivered"),
		ok(KindFrame, "rip 0x401000"))
	expectNoFinding(t, effects)
}

// sysretBefore is the kernel state just before sysretq.
var sysretBefore = with(kernel, regs{x86.RCX: userRIP + 2, x86.R11: 0x246, x86.RSP: userRSP, x86.GSBase: 0, x86.KernelGSBase: percpu})

var sysretAfter = with(sysretBefore, regs{x86.RIP: userRIP + 2, x86.RFLAGS: 0x246, x86.CS: 0x33, x86.SS: 0x2b})

func TestSysret(t *testing.T) {
	tests := []struct {
		name          string
		code          []byte
		before, after regs
		checks        []check
		clean         bool
	}{
		{
			name: "architectural", code: insSysretq, before: sysretBefore, after: sysretAfter, clean: true,
			checks: []check{
				ok(KindPrivilege, "CPL 0 → 3 (kernel → user)"),
				ok(KindControl, "rip = 0x401002: the return address held in RCX"),
				ok(KindFlags, "rflags = 0x246: from R11"),
				ok(KindRegister, "cs = 0x33 (GDT[6] RPL3), ss = 0x2b (GDT[5] RPL3)"),
				note(KindMSR, "STAR[63:48] = 0x20 (inferred from SS after sysret"),
				ok(KindStack, "SYSRET does not restore RSP"),
			},
		},
		{
			name: "rip is not rcx", code: insSysretq, before: sysretBefore,
			after:  with(sysretAfter, regs{x86.RIP: userRIP + 8}),
			checks: []check{finding(KindControl, "rip = 0x401008, expected 0x401002")},
		},
		{
			name: "rflags ignores r11", code: insSysretq, before: with(sysretBefore, regs{x86.R11: 0x10246}),
			after:  with(sysretAfter, regs{x86.RFLAGS: 0x10246, x86.R11: 0x10246}),
			checks: []check{finding(KindFlags, "rflags = 0x10246, expected 0x246")},
		},
		{
			name: "cs is not ss+8", code: insSysretq, before: sysretBefore,
			after:  with(sysretAfter, regs{x86.CS: 0x23}),
			checks: []check{finding(KindRegister, "so CS should be 0x33")},
		},
		{
			name: "non-canonical rcx", code: insSysretq, before: with(sysretBefore, regs{x86.RCX: 0x0000800000000000}),
			after:  with(sysretAfter, regs{x86.RIP: 0x0000800000000000}),
			checks: []check{finding(KindControl, "is not canonical")},
		},
		{
			name: "sysretl returns to compatibility mode", code: insSysretl, before: sysretBefore,
			after: with(sysretAfter, regs{x86.CS: 0x23}), clean: true,
			checks: []check{ok(KindRegister, "CS = base + 0")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			effects := Annotate(mkStep(t, 1, tt.code, lstar+0x90, tt.before, tt.after), &Context{})
			expectEffects(t, effects, tt.checks...)
			if tt.clean {
				expectNoFinding(t, effects)
			} else {
				expectFinding(t, effects)
			}
		})
	}
}

func TestSysretRelatesToSyscall(t *testing.T) {
	c := &Context{}
	Annotate(mkStep(t, 1, insSyscall, userRIP, user, syscallAfter), c)
	effects := Annotate(mkStep(t, 300, insSysretq, lstar+0x90, sysretBefore, sysretAfter), c)
	expectEffects(t, effects,
		ok(KindControl, "right after the syscall of step 1"),
		ok(KindStack, "(the value it had at the syscall of step 1)"))
	if c.Knowledge.Entry != nil {
		t.Errorf("entry %+v still open after sysret", c.Knowledge.Entry)
	}
	star := c.Knowledge.MSR(x86.MSRSTAR)
	if want := uint64(0xfffc<<48 | 0xffff<<32); star.Known != want {
		t.Errorf("STAR known bits %#x, want %#x after syscall and sysret", star.Known, want)
	}
}

// TestSysretSecondRoundTrip checks the provenance quoted for STAR[63:48] on a
// second sysret. SYSCALL reveals STAR[47:32] (SS - 8) and SYSRET reveals
// STAR[63:48] ((SS & ~3) - 8): the second sysret must quote the sysret that
// revealed bits 63:48, not the syscall that revealed bits 47:32.
func TestSysretSecondRoundTrip(t *testing.T) {
	c := &Context{}
	Annotate(mkStep(t, 0, insSyscall, userRIP, user, syscallAfter), c)
	first := Annotate(mkStep(t, 86, insSysretq, lstar+0x90, sysretBefore, sysretAfter), c)
	expectEffects(t, first, note(KindMSR, "STAR[63:48] = 0x20 (inferred from SS after sysret"))
	Annotate(mkStep(t, 87, insSyscall, userRIP, user, syscallAfter), c)
	second := Annotate(mkStep(t, 173, insSysretq, lstar+0x90, sysretBefore, sysretAfter), c)
	expectEffects(t, second, ok(KindMSR, "STAR[63:48] = 0x20 (bits 49:48 unknown), as known (inferred at step 86: SS after sysret)"))
	for _, e := range append(first, second...) {
		if strings.Contains(e.Text, "STAR[63:50]") || strings.Contains(e.Text, "SS after syscall") {
			t.Errorf("effect names the wrong STAR field or provenance: %q", e.Text)
		}
	}
}

// TestSyscallFlagsByAccel: SYSCALL does RFLAGS &= ~FMASK (SDM vol. 2B,
// SYSCALL), so on a CPU every flag set before and clear after is in FMASK.
// QEMU's TCG also clears ZF and PF (its helper masks an RFLAGS value that
// lacks the lazily kept arithmetic flags; QEMU 7.2 and 10.0.2), so under TCG
// they are the emulator's and FMASK is inferred from the other flags only:
// the teaching kernel's FMASK is 0x47700 (TF IF DF IOPL NT AC), no
// arithmetic flag in it.
func TestSyscallFlagsByAccel(t *testing.T) {
	tests := []struct {
		accel            string
		checks           []check
		value, knownBits uint64
	}{
		{"tcg (auto: tracing runs under TCG)", []check{
			note(KindFlags, "rflags 0x246 → 0x2: FMASK cleared IF"),
			note(KindFlags, "ZF PF cleared by QEMU's TCG, not by FMASK"),
			note(KindMSR, "FMASK learnt (inferred): clears IF; known to leave alone: none; known bits 0x200"),
		}, 0x200, 0x200},
		{"kvm", []check{
			note(KindFlags, "rflags 0x246 → 0x2: FMASK cleared IF ZF PF"),
		}, 0x244, 0x244},
		{"", []check{
			note(KindFlags, "FMASK cleared IF"),
			note(KindFlags, "ZF PF cleared by FMASK or by the emulator"),
		}, 0x200, 0x200},
	}
	for _, tt := range tests {
		t.Run(tt.accel, func(t *testing.T) {
			c := &Context{Accel: tt.accel}
			effects := Annotate(mkStep(t, 0, insSyscall, userRIP, user, syscallAfter), c)
			expectEffects(t, effects, tt.checks...)
			expectNoFinding(t, effects)
			if tt.accel != "kvm" {
				for _, e := range effects {
					if strings.Contains(e.Text, "FMASK cleared IF ZF") || strings.Contains(e.Text, "clears IF ZF") {
						t.Errorf("the emulator's flags attributed to FMASK: %q", e.Text)
					}
				}
			}
			if m := c.Knowledge.MSR(x86.MSRFMASK); m == nil || m.Value != tt.value || m.Known != tt.knownBits {
				t.Errorf("FMASK = %+v, want %#x (known bits %#x)", m, tt.value, tt.knownBits)
			}
			// The real FMASK, probed, agrees with what was inferred.
			if c := c.Knowledge.Conflict(MSR{Index: x86.MSRFMASK, Value: 0x47700, Known: ^uint64(0)}); tt.accel != "kvm" && c != 0 {
				t.Errorf("FMASK 0x47700 contradicts the inference in bits %#x", c)
			}
		})
	}
}

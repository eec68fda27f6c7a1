package annotate

import (
	"testing"

	"github.com/sctrace/sctrace/x86"
)

// TestSysretChecks follows the checks Linux makes before it returns with
// SYSRET rather than IRET (entry_SYSCALL_64 up to 6.2, do_syscall_64 in C
// from 6.3; the teaching kernel copies the assembly form): pt_regs->cx ==
// pt_regs->ip, the same after sign-extending RCX from bit 47 (canonical),
// pt_regs->r11 == pt_regs->flags, pt_regs->cs == __USER_CS (0x33), no RF
// or TF (0x10100) in R11, pt_regs->ss == __USER_DS (0x2b), and the C form's
// ip < TASK_SIZE_MAX (0x7ffffffff000 with 4-level paging). Offsets are
// struct pt_regs's (arch/x86/include/asm/ptrace.h): r11 0x30, cx 0x58, ip
// 0x80, cs 0x88, flags 0x90, ss 0xa0.
func TestSysretChecks(t *testing.T) {
	c := &Context{Regions: taskStack}
	regsAt := uint64(kstackTop - PtRegsSize)
	k := with(kernel, regs{x86.RSP: regsAt, x86.RCX: 0, x86.R11: 0, x86.RAX: 0, x86.RFLAGS: 0x2})
	const eq, below = 0x46, 0x3 // ZF (equal); CF (below)
	steps := []struct {
		code []byte
		set  regs
		want string
	}{
		{[]byte{0x48, 0x8b, 0x4c, 0x24, 0x58}, regs{x86.RCX: userRIP + 2}, ""},                                                                                               // mov 0x58(%rsp),%rcx
		{[]byte{0x4c, 0x8b, 0x9c, 0x24, 0x80, 0, 0, 0}, regs{x86.R11: userRIP + 2}, ""},                                                                                      // mov 0x80(%rsp),%r11
		{[]byte{0x49, 0x39, 0xcb}, regs{x86.RFLAGS: eq}, "cmp pt_regs->ip with pt_regs->cx: Linux's check before SYSRET that RCX == RIP (SYSRET loads RIP from RCX): holds"}, // cmp %rcx,%r11
		{[]byte{0x48, 0xc1, 0xe1, 0x10}, regs{x86.RCX: (userRIP + 2) << 16, x86.RFLAGS: 0x2}, ""},                                                                            // shl $0x10,%rcx
		{[]byte{0x48, 0xc1, 0xf9, 0x10}, regs{x86.RCX: userRIP + 2}, ""},                                                                                                     // sar $0x10,%rcx
		{[]byte{0x49, 0x39, 0xcb}, regs{x86.RFLAGS: eq}, "cmp pt_regs->ip with pt_regs->cx sign-extended from bit 47: Linux's check before SYSRET that RIP canonical"},
		{[]byte{0x4c, 0x8b, 0x5c, 0x24, 0x30}, regs{x86.R11: 0x246}, ""}, // mov 0x30(%rsp),%r11
		{[]byte{0x4c, 0x39, 0x9c, 0x24, 0x90, 0, 0, 0}, regs{x86.RFLAGS: eq}, "cmp pt_regs->flags with pt_regs->r11: Linux's check before SYSRET that R11 == RFLAGS (SYSRET loads RFLAGS from R11): holds"},
		{[]byte{0x48, 0x83, 0xbc, 0x24, 0x88, 0, 0, 0, 0x33}, regs{x86.RFLAGS: eq}, "cmp pt_regs->cs with 0x33: Linux's check before SYSRET that CS == __USER_CS"},
		{[]byte{0x49, 0xf7, 0xc3, 0x00, 0x01, 0x01, 0x00}, regs{x86.RFLAGS: eq}, "test pt_regs->r11 with 0x10100: Linux's check before SYSRET that no RF or TF"},
		{[]byte{0x48, 0x83, 0xbc, 0x24, 0xa0, 0, 0, 0, 0x2b}, regs{x86.RFLAGS: eq}, "cmp pt_regs->ss with 0x2b: Linux's check before SYSRET that SS == __USER_DS"},
		{[]byte{0x48, 0x8b, 0x8c, 0x24, 0x80, 0, 0, 0}, regs{x86.RCX: userRIP + 2}, ""},                                                                  // mov 0x80(%rsp),%rcx
		{[]byte{0x48, 0xb8, 0x00, 0xf0, 0xff, 0xff, 0xff, 0x7f, 0, 0}, regs{x86.RAX: taskSizeMax4}, ""},                                                  // movabs $0x7ffffffff000,%rax
		{[]byte{0x48, 0x39, 0xc1}, regs{x86.RFLAGS: below}, "cmp pt_regs->ip with 0x7ffffffff000: Linux's check before SYSRET that RIP < TASK_SIZE_MAX"}, // cmp %rax,%rcx
	}
	st := k
	pc := uint64(lstar + 0x40)
	for i, s := range steps {
		before := with(st, regs{x86.RIP: pc})
		_, n, err := Decode(s.code)
		if err != nil || n != len(s.code) {
			t.Fatalf("step %d: decode % x: %v (length %d)", i, s.code, err, n)
		}
		after := with(with(before, s.set), regs{x86.RIP: pc + uint64(n)})
		effects := Annotate(mkStep(t, 50+i, s.code, pc, before, after), c)
		if s.want != "" {
			expectEffects(t, effects, note(KindCheck, s.want))
		}
		st, pc = after, pc+uint64(n)
	}
	sysret := Annotate(mkStep(t, 70, insSysretq, pc, with(sysretBefore, regs{x86.RIP: pc}), sysretAfter), c)
	expectEffects(t, sysret, note(KindCheck, "the kernel chose SYSRET after checking, as Linux's do_syscall_64 does, that RCX == RIP (step 52), RIP canonical (step 55), R11 == RFLAGS (step 57), CS == __USER_CS (step 58), no RF or TF (step 59), SS == __USER_DS (step 60), RIP < TASK_SIZE_MAX (step 63)"))

	// A check that fails says Linux takes the IRET path.
	c2 := &Context{Regions: taskStack}
	b := with(k, regs{x86.RIP: pc})
	Annotate(mkStep(t, 1, []byte{0x48, 0x8b, 0x4c, 0x24, 0x58}, pc, b, with(b, regs{x86.RIP: pc + 5, x86.RCX: 1})), c2)
	b2 := with(b, regs{x86.RIP: pc + 5, x86.RCX: 1})
	Annotate(mkStep(t, 2, []byte{0x4c, 0x8b, 0x9c, 0x24, 0x80, 0, 0, 0}, pc+5, b2, with(b2, regs{x86.RIP: pc + 13, x86.R11: 2})), c2)
	b3 := with(b2, regs{x86.RIP: pc + 13, x86.R11: 2})
	fail := Annotate(mkStep(t, 3, []byte{0x49, 0x39, 0xcb}, pc+13, b3, with(b3, regs{x86.RIP: pc + 16, x86.RFLAGS: 0x2})), c2)
	expectEffects(t, fail, note(KindCheck, "RCX == RIP (SYSRET loads RIP from RCX): does not hold: the kernel returns through IRET instead"))
}

package annotate

import (
	"strings"
	"testing"

	"github.com/sctrace/sctrace/x86"
)

// TestPatchedOutAlternative: Linux assembles each optional piece of its
// entry code behind ALTERNATIVE "jmp .Lend", "", FEATURE (entry_64.S,
// calling.h), a short jmp the kernel turns into NOPs at boot where the
// feature is on. Where it is off the jmp stays and skips the piece; its
// bytes say what is left out. An ordinary forward jmp over ordinary code
// gets no such note, nor does a jump not taken or skipped bytes not read.
func TestPatchedOutAlternative(t *testing.T) {
	// SWITCH_TO_KERNEL_CR3 %rsp as Linux 6.x assembles it with PCID:
	// mov %cr3,%rsp; bts $0x3f,%rsp (ADJUST_KERNEL_CR3's noflush);
	// and $-0x1801,%rsp; mov %rsp,%cr3.
	cr3Switch := []byte{0x0f, 0x20, 0xdc, 0x48, 0x0f, 0xba, 0xec, 0x3f, 0x48, 0x81, 0xe4, 0xff, 0xe7, 0xff, 0xff, 0x0f, 0x22, 0xdc}
	verw := []byte{0x0f, 0x00, 0x2d, 0x00, 0x10, 0x00, 0x00}  // verw 0x1000(%rip)
	wrmsr := []byte{0xb9, 0x48, 0x00, 0x00, 0x00, 0x0f, 0x30} // mov $0x48,%ecx; wrmsr
	plain := []byte{0x48, 0x89, 0xc7, 0x48, 0x83, 0xc0, 0x01} // mov %rax,%rdi; add $1,%rax
	tests := []struct {
		name    string
		skipped []byte
		read    bool
		taken   bool
		want    string // "" for no note
	}{
		{"cr3 switch", cr3Switch, true, true, "holding a CR3 write (the KPTI page-table switch: X86_FEATURE_PTI"},
		{"verw", verw, true, true, "verw (clearing CPU buffers on the way out: X86_FEATURE_CLEAR_CPU_BUF"},
		{"wrmsr", wrmsr, true, true, "a wrmsr (an MSR write on entry or exit, such as IBRS"},
		{"ordinary code", plain, true, true, ""},
		{"bytes not read", cr3Switch, false, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jmp := []byte{0xeb, byte(len(tt.skipped))}
			addr := uint64(lstar + 0x10)
			next := addr + 2
			end := next + uint64(len(tt.skipped))
			var mem []Memory
			if tt.read {
				mem = append(mem, Memory{Addr: next, Data: tt.skipped})
			}
			before := with(kernel, regs{x86.RIP: addr})
			s := mkStep(t, 3, jmp, addr, before, with(before, regs{x86.RIP: end}), mem...)
			if rs := MemoryBefore(s.Inst, addr, s.Before); len(rs) == 0 || rs[len(rs)-1] != (Range{next, len(tt.skipped)}) {
				t.Errorf("MemoryBefore = %v, want the %d skipped bytes at %#x", rs, len(tt.skipped), next)
			}
			effects := Annotate(s, &Context{})
			if tt.want == "" {
				if strings.Contains(dump(effects), "ALTERNATIVE") {
					t.Errorf("a note on a jmp over ordinary or unread code:\n%s", dump(effects))
				}
				return
			}
			expectEffects(t, effects, note(KindMitigation, tt.want), note(KindMitigation, "ALTERNATIVE site"))
		})
	}

	// At CPL 3, or backwards, or too far, nothing is read.
	u := mkStep(t, 0, []byte{0xeb, 0x10}, userRIP, user, with(user, regs{x86.RIP: userRIP + 0x12}))
	if rs := MemoryBefore(u.Inst, userRIP, u.Before); len(rs) != 0 {
		t.Errorf("MemoryBefore of a user jmp = %v, want nothing", rs)
	}
	back := mkStep(t, 0, []byte{0xeb, 0xf0}, lstar+0x40, kernel, kernel)
	if rs := MemoryBefore(back.Inst, lstar+0x40, back.Before); len(rs) != 0 {
		t.Errorf("MemoryBefore of a backward jmp = %v, want nothing", rs)
	}
}

// aliased is a Symbolizer that knows other names at one address, as
// symbols.Table does for Linux's common_interrupt_return, which
// arch/x86/entry/entry_64.S starts with the global label
// swapgs_restore_regs_and_return_to_usermode.
type aliased struct{ symbols }

func (a aliased) Aliases(addr uint64) []string {
	if addr == lstar+0x80 {
		return []string{"common_interrupt_return"}
	}
	return nil
}

// TestBranchTargetAliases: a branch to an address with two names says
// both; one into the middle of a symbol, or with no alias, says one.
func TestBranchTargetAliases(t *testing.T) {
	syms := aliased{symbols{{lstar, 0x80, "entry_SYSCALL_64"}, {lstar + 0x80, 0x40, "swapgs_restore_regs_and_return_to_usermode"}}}
	for _, tt := range []struct {
		to   uint64
		want string
		not  string
	}{
		{lstar + 0x80, "jmp → 0xffffffff81c00100 <swapgs_restore_regs_and_return_to_usermode> (also common_interrupt_return)", ""},
		{lstar + 0x84, "<swapgs_restore_regs_and_return_to_usermode+0x4>", "also"},
		{lstar + 0x40, "<entry_SYSCALL_64+0x40>", "also"},
	} {
		addr := uint64(lstar + 0x10)
		rel := int32(tt.to - (addr + 5))
		code := []byte{0xe9, byte(rel), byte(rel >> 8), byte(rel >> 16), byte(rel >> 24)}
		before := with(kernel, regs{x86.RIP: addr})
		s := mkStep(t, 1, code, addr, before, with(before, regs{x86.RIP: tt.to}))
		effects := Annotate(s, &Context{Symbols: syms})
		expectEffects(t, effects, note(KindControl, tt.want))
		if tt.not != "" && strings.Contains(dump(effects), tt.not) {
			t.Errorf("jmp to %#x: effects say %q:\n%s", tt.to, tt.not, dump(effects))
		}
	}
}

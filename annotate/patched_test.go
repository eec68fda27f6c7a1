package annotate

import (
	"strings"
	"testing"

	"github.com/sctrace/sctrace/target"
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
			before := with(kernel, regs{target.RIP: addr})
			s := mkStep(t, 3, jmp, addr, before, with(before, regs{target.RIP: end}), mem...)
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
	u := mkStep(t, 0, []byte{0xeb, 0x10}, userRIP, user, with(user, regs{target.RIP: userRIP + 0x12}))
	if rs := MemoryBefore(u.Inst, userRIP, u.Before); len(rs) != 0 {
		t.Errorf("MemoryBefore of a user jmp = %v, want nothing", rs)
	}
	back := mkStep(t, 0, []byte{0xeb, 0xf0}, lstar+0x40, kernel, kernel)
	if rs := MemoryBefore(back.Inst, lstar+0x40, back.Before); len(rs) != 0 {
		t.Errorf("MemoryBefore of a backward jmp = %v, want nothing", rs)
	}
}

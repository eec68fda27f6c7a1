package annotate_test

import (
	"fmt"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/x86"
)

func state(kv map[x86.Reg]uint64) *x86.State {
	s := &x86.State{}
	for r, v := range kv {
		s.Set(r, v)
	}
	return s
}

// Annotate a user-mode syscall run by the CPU (under KVM): its promises are
// checked, and LSTAR, STAR and FMASK are learnt from what the transition
// did.
func ExampleAnnotate() {
	code := []byte{0x0f, 0x05} // syscall
	inst, _, err := annotate.Decode(code)
	if err != nil {
		fmt.Println(err)
		return
	}
	before := state(map[x86.Reg]uint64{
		x86.RIP: 0x401000, x86.RSP: 0x7ffc00001238, x86.RFLAGS: 0x246,
		x86.CS: 0x33, x86.SS: 0x2b, x86.RCX: 0, x86.R11: 0,
	})
	after := state(map[x86.Reg]uint64{
		x86.RIP: 0xffffffff81c00080, x86.RSP: 0x7ffc00001238, x86.RFLAGS: 0x2,
		x86.CS: 0x10, x86.SS: 0x18, x86.RCX: 0x401002, x86.R11: 0x246,
	})
	c := &annotate.Context{Accel: "kvm"} // a CPU's SYSCALL: every cleared flag is FMASK's
	step := annotate.Step{Index: 1, Addr: 0x401000, Bytes: code, Inst: inst, Before: before, After: after}
	for _, e := range annotate.Annotate(step, c) {
		fmt.Printf("%-9s %-7s %s\n", e.Kind, e.Verdict, e.Text)
	}
	fmt.Println(annotate.Events(step, nil, c))
	for _, m := range c.Knowledge.Sorted() {
		fmt.Println(m)
	}
	// Output:
	// privilege ok      syscall: CPL 3 → 0 (user → kernel)
	// control           rip = 0xffffffff81c00080: the kernel entry point, from LSTAR
	// msr               LSTAR = 0xffffffff81c00080 (inferred: the RIP syscall jumped to)
	// register  ok      rcx = 0x401002: the address of the next instruction, where sysret will return
	// register  ok      r11 = 0x246: RFLAGS before the syscall (RF cleared)
	// flags             rflags 0x246 → 0x2: FMASK cleared IF ZF PF
	// msr               FMASK learnt (inferred): clears IF ZF PF; known to leave alone: none; known bits 0x244
	// register  ok      cs = 0x10 (GDT[2] RPL0), ss = 0x18 (GDT[3] RPL0): kernel selectors from STAR[47:32] = 0x10 (SS = CS + 8)
	// msr               STAR[47:32] = 0x10 (inferred from SS after syscall)
	// stack     ok      rsp = 0x7ffc00001238: unchanged: SYSCALL does not switch stacks, the kernel still runs on the caller's stack until its entry code loads one
	// [syscall cpl-change if-change]
	// IA32_STAR = 0x1000000000 (known bits 0xffff00000000) (inferred at step 1: SS after syscall minus 8)
	// IA32_LSTAR = 0xffffffff81c00080 (inferred at step 1: RIP after syscall)
	// IA32_FMASK = 0x244 (known bits 0x244) (inferred at step 1: RFLAGS bits syscall cleared (1) or kept (0))
}

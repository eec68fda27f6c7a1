package annotate

import (
	"strings"

	"github.com/sctrace/sctrace/x86"
	"golang.org/x/arch/x86/x86asm"
)

// maxSkipped bounds the code a forward jmp may skip for it to be read and
// explained. Linux's entry code guards each optional piece (the KPTI CR3
// switch, the buffer clearing, IBRS) with an ALTERNATIVE site: it is
// assembled as a short jmp over the piece, and at boot the kernel patches
// the jmp into NOPs where the CPU feature the piece serves is on. Where it
// is off, the jmp stays, and the skipped bytes say what is not done. The
// largest such piece in entry_64.S (SWITCH_TO_USER_CR3_STACK) is under 100
// bytes.
const maxSkipped = 128

// skippedRange is the code a taken forward jmp at CPL 0 skips, if short
// enough to be an ALTERNATIVE site.
func skippedRange(inst x86asm.Inst, addr uint64, before *x86.State) (Range, bool) {
	if inst.Op != x86asm.JMP || cpl(before) != 0 {
		return Range{}, false
	}
	rel, ok := inst.Args[0].(x86asm.Rel)
	if !ok || rel <= 0 || rel > maxSkipped {
		return Range{}, false
	}
	return Range{addr + uint64(inst.Len), int(rel)}, true
}

// patchedOut explains a jmp over an optional piece of entry code: when the
// skipped bytes hold an instruction that only such a piece would (a CR3
// write, verw, wrmsr), it names what the kernel left out.
func (a *annotator) patchedOut() {
	r, ok := skippedRange(a.s.Inst, a.s.Addr, a.b)
	if !ok {
		return
	}
	if rip, ok := a.a.Get(x86.RIP); !ok || rip != r.Addr+uint64(r.Len) {
		return
	}
	code, ok := a.read(r.Addr, r.Len, false)
	if !ok {
		return
	}
	var what []string
	seen := map[string]bool{}
	for off := 0; off < len(code); {
		inst, n, err := Decode(code[off:])
		if err != nil || n == 0 {
			break
		}
		off += n
		w := skippedPiece(inst)
		if w != "" && !seen[w] {
			seen[w] = true
			what = append(what, w)
		}
	}
	if len(what) == 0 {
		return
	}
	a.note(KindMitigation, "jmp over %d bytes holding %s: the shape of a Linux ALTERNATIVE site, patched at boot to skip them because the feature they serve is off here", r.Len, strings.Join(what, " and "))
}

// skippedPiece names what an instruction in skipped code is for, or "".
func skippedPiece(inst x86asm.Inst) string {
	switch inst.Op {
	case x86asm.MOV:
		if r, ok := inst.Args[0].(x86asm.Reg); ok && r == x86asm.CR3 {
			return "a CR3 write (the KPTI page-table switch: X86_FEATURE_PTI, off with pti=off or on a CPU Meltdown does not affect)"
		}
	case x86asm.VERW:
		return "verw (clearing CPU buffers on the way out: X86_FEATURE_CLEAR_CPU_BUF, for MDS, TAA, MMIO and RFDS)"
	case x86asm.WRMSR:
		return "a wrmsr (an MSR write on entry or exit, such as IBRS in SPEC_CTRL: X86_FEATURE_KERNEL_IBRS)"
	}
	return ""
}

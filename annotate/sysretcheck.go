package annotate

import (
	"fmt"
	"strings"

	"github.com/sctrace/sctrace/x86"
	"golang.org/x/arch/x86/x86asm"
)

// Linux returns from a 64-bit system call with SYSRET only when SYSRET
// would restore exactly what pt_regs holds; otherwise it takes the IRET
// path. The rules (do_syscall_64 in arch/x86/entry/common.c from 6.3 on,
// the assembly after its call in entry_SYSCALL_64 before):
//   - RCX == RIP and R11 == RFLAGS: SYSRET takes RIP from RCX and RFLAGS
//     from R11;
//   - CS and SS are __USER_CS and __USER_DS, the selectors SYSRET loads;
//   - RIP is canonical, below TASK_SIZE_MAX: on Intel CPUs SYSRET to a
//     non-canonical RCX raises #GP in ring 0 with the user RSP loaded;
//   - neither RF nor TF is set: SYSRET cannot restore RF, and TF would
//     trap right after it.

// canonicalOf is the origin of a register that holds a pt_regs field
// sign-extended from bit 47 (shl $16 then sar $16): its canonical form.
const canonicalOf = "canonical "

// Linux's TASK_SIZE_MAX with 4- and 5-level paging: the first address
// above the user half, less a guard page.
const (
	taskSizeMax4 = 1<<47 - 4096
	taskSizeMax5 = 1<<56 - 4096
)

// sysretRule is one of Linux's conditions for returning with SYSRET.
type sysretRule struct {
	name string // e.g. "RCX == RIP"
	why  string
}

var (
	ruleRIP     = sysretRule{"RCX == RIP", "SYSRET loads RIP from RCX"}
	ruleFlags   = sysretRule{"R11 == RFLAGS", "SYSRET loads RFLAGS from R11"}
	ruleCS      = sysretRule{"CS == __USER_CS", "SYSRET loads CS from STAR[63:48] + 16, whatever pt_regs->cs says"}
	ruleCS32    = sysretRule{"CS == __USER32_CS", "SYSRETL, back to compatibility mode, loads CS from STAR[63:48], whatever pt_regs->cs says"}
	ruleSS      = sysretRule{"SS == __USER_DS", "SYSRET loads SS from STAR[63:48] + 8, whatever pt_regs->ss says"}
	ruleCanon   = sysretRule{"RIP canonical", "on Intel CPUs SYSRET to a non-canonical RCX raises #GP in ring 0 with the user RSP already loaded"}
	ruleTaskMax = sysretRule{"RIP < TASK_SIZE_MAX", "a user RIP is canonical only below the top of the user half; on Intel CPUs SYSRET to a non-canonical RCX raises #GP in ring 0"}
	ruleRFTF    = sysretRule{"no RF or TF", "SYSRET cannot restore RF, and TF would trap right after it"}
)

// operand describes one operand of a cmp or test: the pt_regs field it
// reads (directly, or through a register loaded from the frame), or a
// constant.
type operand struct {
	field string // "cx", "canonical cx"; "" if none
	val   uint64
	isVal bool // val is known (an immediate, or a register's value)
}

// operandOf describes inst.Args[i].
func (a *annotator) operandOf(i int) operand {
	switch arg := a.s.Inst.Args[i].(type) {
	case x86asm.Imm:
		return operand{val: uint64(arg), isVal: true}
	case x86asm.Reg:
		r, bits, _, ok := regInfo(arg)
		if !ok {
			return operand{}
		}
		v, vok := regVal(a.b, arg)
		o := operand{val: v, isVal: vok}
		if bits == 64 {
			o.field = a.k.origin[r]
		}
		return o
	case x86asm.Mem:
		if lin, ok := linear(a.s.Inst, arg, a.b, a.next, a.hasNext); ok {
			if f, ok := a.ptRegsField(lin); ok {
				return operand{field: f}
			}
		}
	}
	return operand{}
}

// trackOrigins remembers which registers hold a copy of a pt_regs field
// after this step, and forgets the ones the step changed otherwise.
func (a *annotator) trackOrigins() {
	if a.k.origin == nil {
		a.k.origin = map[x86.Reg]string{}
	}
	set := map[x86.Reg]string{}
	inst := a.s.Inst
	if dst, ok := inst.Args[0].(x86asm.Reg); ok && !a.entered {
		if r, bits, _, ok := regInfo(dst); ok && bits == 64 {
			switch inst.Op {
			case x86asm.MOV:
				switch src := inst.Args[1].(type) {
				case x86asm.Mem:
					if lin, ok := linear(inst, src, a.b, a.next, a.hasNext); ok {
						if f, ok := a.ptRegsField(lin); ok {
							set[r] = f
						}
					}
				case x86asm.Reg:
					if s, _, _, ok := regInfo(src); ok && a.k.origin[s] != "" {
						set[r] = a.k.origin[s]
					}
				}
			case x86asm.SHL:
				if imm, ok := inst.Args[1].(x86asm.Imm); ok && imm == 16 && a.k.origin[r] != "" && !strings.Contains(a.k.origin[r], "<<") {
					set[r] = a.k.origin[r] + "<<16"
				}
			case x86asm.SAR:
				if imm, ok := inst.Args[1].(x86asm.Imm); ok && imm == 16 && strings.HasSuffix(a.k.origin[r], "<<16") {
					set[r] = canonicalOf + strings.TrimSuffix(a.k.origin[r], "<<16")
				}
			}
		}
	}
	for _, r := range a.b.Changed(a.a) {
		delete(a.k.origin, r)
	}
	for r, f := range set {
		a.k.origin[r] = f
	}
}

// sysretCheck explains a cmp or test of pt_regs fields that is one of
// Linux's conditions for returning with SYSRET, and whether it held.
func (a *annotator) sysretCheck() {
	inst := a.s.Inst
	if (inst.Op != x86asm.CMP && inst.Op != x86asm.TEST) || a.entered || cpl(a.b) != 0 {
		return
	}
	x, y := a.operandOf(0), a.operandOf(1)
	if x.field == "" && y.field == "" {
		return
	}
	fl, ok := a.a.Get(x86.RFLAGS)
	if !ok {
		return
	}
	zf, cf := x86.Flags(fl)&x86.FlagZF != 0, x86.Flags(fl)&x86.FlagCF != 0
	pair := func(p, q string) bool { return (x.field == p && y.field == q) || (x.field == q && y.field == p) }
	var rule sysretRule
	held := false
	switch {
	case inst.Op == x86asm.CMP && pair("cx", "ip"):
		rule, held = ruleRIP, zf
	case inst.Op == x86asm.CMP && (pair(canonicalOf+"cx", "ip") || pair(canonicalOf+"cx", "cx") || pair(canonicalOf+"ip", "ip") || pair(canonicalOf+"ip", "cx")):
		rule, held = ruleCanon, zf
	case inst.Op == x86asm.CMP && pair("r11", "flags"):
		rule, held = ruleFlags, zf
	case inst.Op == x86asm.CMP && (x.field == "cs" && y.isVal || y.field == "cs" && x.isVal):
		rule, held = ruleCS, zf
		if x.val == user32CS || y.val == user32CS {
			rule = ruleCS32
		}
	case inst.Op == x86asm.CMP && (x.field == "ss" && y.isVal || y.field == "ss" && x.isVal):
		rule, held = ruleSS, zf
	case inst.Op == x86asm.CMP && (x.field == "ip" || x.field == "cx") && y.isVal && (y.val == taskSizeMax4 || y.val == taskSizeMax5):
		rule, held = ruleTaskMax, cf // x - y borrows: x < y
	case inst.Op == x86asm.CMP && (y.field == "ip" || y.field == "cx") && x.isVal && (x.val == taskSizeMax4 || x.val == taskSizeMax5):
		rule, held = ruleTaskMax, !cf && !zf // x - y: y < x
	case inst.Op == x86asm.TEST && (isFlags(x.field) && y.isVal || isFlags(y.field) && x.isVal):
		// pt_regs->r11 once it is known to equal pt_regs->flags.
		m := y.val
		if isFlags(y.field) {
			m = x.val
		}
		if x86.Flags(m)&(x86.FlagRF|x86.FlagTF) != x86.FlagRF|x86.FlagTF {
			return
		}
		rule, held = ruleRFTF, zf
	default:
		return
	}
	name := func(o operand) string {
		switch {
		case strings.HasPrefix(o.field, canonicalOf):
			return "pt_regs->" + strings.TrimPrefix(o.field, canonicalOf) + " sign-extended from bit 47"
		case o.field != "":
			return "pt_regs->" + o.field
		}
		return fmt.Sprintf("%#x", o.val)
	}
	verdict := "holds"
	if held {
		a.k.sysretRules = append(a.k.sysretRules, fmt.Sprintf("%s (step %d)", rule.name, a.s.Index))
	} else {
		verdict = "does not hold: the kernel returns through IRET instead"
	}
	a.note(KindCheck, "%s %s with %s: Linux's check before SYSRET that %s (%s): %s", strings.ToLower(inst.Op.String()), name(x), name(y), rule.name, rule.why, verdict)
}

// user32CS is Linux's __USER32_CS, GDT entry 4 at RPL 3 (segment.h), the
// code segment of 32-bit user processes on a 64-bit kernel: its L bit is
// clear, so the CPU runs them in compatibility mode.
const user32CS = 4*8 + 3

// isFlags reports whether a field is the saved RFLAGS: pt_regs->flags, or
// pt_regs->r11, where SYSCALL put them (Linux tests R11 after checking
// R11 == RFLAGS).
func isFlags(field string) bool { return field == "flags" || field == "r11" }

// sysretRulesHeld lists, on the sysret step, the checks seen to hold.
func (a *annotator) sysretRulesHeld() {
	if len(a.k.sysretRules) == 0 {
		return
	}
	checker := "do_syscall_64"
	if !a.op.wide {
		// A 32-bit call entered by sysenter or syscall from
		// compatibility mode (entry_64_compat.S, common.c).
		checker = "do_fast_syscall_32"
	}
	a.note(KindCheck, "the kernel chose SYSRET after checking, as Linux's %s does, that %s", checker, strings.Join(a.k.sysretRules, ", "))
	a.k.sysretRules = nil
}

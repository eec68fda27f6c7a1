package walkthrough

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// Question kinds: what a student types and what it is checked against.
const (
	// AskRegister: a register name; right when that register now holds the
	// value the question's Value names.
	AskRegister = "register"
	// AskCR3: "user" or "kernel"; right when it names the page tables CR3
	// selects now (bit 12, the KPTI user half).
	AskCR3 = "cr3"
	// AskCPL: a number 0-3; right when it is the CPL now.
	AskCPL = "cpl"
	// AskGS: "user" or "kernel"; right when it names whose GS base is
	// active now (the per-CPU area is the kernel's).
	AskGS = "gs"
	// AskStack: "user", "kernel" or "entry"; right when RSP is on that
	// stack now.
	AskStack = "stack"
)

// Values a register question can ask for, all read from the trace.
const (
	ValueUserRIP    = "user-rip"       // where the user program resumes: after the entering instruction
	ValueUserRSP    = "user-rsp"       // the user stack pointer at the entering instruction
	ValueUserFlags  = "user-rflags"    // RFLAGS at the entering instruction
	ValueSyscallNr  = "syscall-number" // RAX at the entering instruction
	ValueKernelCR3  = "kernel-cr3"     // CR3 with the KPTI user bit clear
	ValueCurrentRSP = "rsp"            // RSP now (which other register holds it?)
)

// Question is asked at a step and answered from the CPU state there.
type Question struct {
	Ask  string `yaml:"ask"`  // the question as shown
	Kind string `yaml:"kind"` // AskRegister, AskCR3, ...
	// Value names what a register question looks for (ValueUserRIP, ...).
	Value string `yaml:"value"`
	// Answer is a right answer on the bundled kernel, for tests and for
	// exported pages; the check itself reads the state.
	Answer string `yaml:"answer"`
}

func (q *Question) check() error {
	if q.Ask == "" {
		return fmt.Errorf("question without ask")
	}
	switch q.Kind {
	case AskRegister:
		switch q.Value {
		case ValueUserRIP, ValueUserRSP, ValueUserFlags, ValueSyscallNr, ValueKernelCR3, ValueCurrentRSP:
		default:
			return fmt.Errorf("question value %q: want user-rip, user-rsp, user-rflags, syscall-number, kernel-cr3 or rsp", q.Value)
		}
	case AskCR3, AskCPL, AskGS, AskStack:
	default:
		return fmt.Errorf("question kind %q: want register, cr3, cpl, gs or stack", q.Kind)
	}
	if q.Answer == "" {
		return fmt.Errorf("question without an example answer")
	}
	return nil
}

// State is what an answer is checked against.
type State struct {
	// Now is the CPU state on screen.
	Now *x86.State
	// Entry is the first step of the round trip: the user instruction that
	// entered the kernel.
	Entry *trace.Step
	// Regions are the trace's named memory areas.
	Regions []annotate.Region
}

// entryRegs is the state at the entering instruction: the first step's,
// or, before it has run, the state on screen.
func (st State) entryRegs() *x86.State {
	if st.Entry != nil && st.Entry.Regs != nil {
		return st.Entry.Regs
	}
	return st.Now
}

// StateAt returns the state shown at position pos of t: before step pos,
// or the final state after the last one.
func StateAt(t *trace.Trace, pos int) State {
	s := State{Regions: t.Header.Regions}
	n := t.Len()
	if n > 0 {
		s.Entry = t.Step(0)
	}
	switch {
	case pos < n:
		s.Now = t.Step(pos).Regs
	case t.Final != nil:
		s.Now = t.Final
	case n > 0:
		s.Now = t.Step(n - 1).Regs
	}
	return s
}

// Check checks an answer. It returns whether it is right and a sentence
// saying why, from the values in st.
func (q *Question) Check(answer string, st State) (bool, string) {
	a := strings.ToLower(strings.TrimSpace(answer))
	a = strings.TrimPrefix(a, "%")
	if st.Now == nil {
		return false, "no CPU state is on screen to check the answer against"
	}
	switch q.Kind {
	case AskRegister:
		return q.checkRegister(a, st)
	case AskCR3:
		cr3, ok := st.Now.Get(x86.CR3)
		if !ok {
			return false, "CR3 is unknown at this step"
		}
		user := x86.CR3Fields{Value: cr3}.KPTIUser()
		want, why := "kernel", fmt.Sprintf("CR3 is %#x: bit 12 is clear, so the kernel's page tables are loaded", cr3)
		if user {
			want, why = "user", fmt.Sprintf("CR3 is %#x: bit 12 is set, so the user page tables (the KPTI user half) are loaded", cr3)
		}
		return oneOf(a, want), why
	case AskCPL:
		cpl := st.Now.CPL()
		if cpl < 0 {
			return false, "CS is unknown at this step"
		}
		n, err := strconv.Atoi(strings.TrimPrefix(a, "cpl "))
		why := fmt.Sprintf("CS is %#x: its low two bits, the CPL, are %d", st.Now.Val(x86.CS), cpl)
		return err == nil && n == cpl, why
	case AskGS:
		gs, ok := st.Now.Get(x86.GSBase)
		if !ok {
			return false, "the GS base is unknown at this step"
		}
		kgs := st.Now.Val(x86.KernelGSBase)
		if isPerCPU(gs, st.Regions) {
			return oneOf(a, "kernel"), fmt.Sprintf("gs_base is %#x, the kernel's per-CPU area; k_gs_base %#x holds the user's", gs, kgs)
		}
		return oneOf(a, "user"), fmt.Sprintf("gs_base is %#x, the user's; the kernel's per-CPU base %#x waits in k_gs_base", gs, kgs)
	case AskStack:
		rsp := st.Now.Val(x86.RSP)
		kind := stackKind(rsp, st.Regions)
		if kind == "" {
			return false, fmt.Sprintf("RSP is %#x, on no stack sctrace knows", rsp)
		}
		return oneOf(a, kind), fmt.Sprintf("RSP is %#x, on the %s stack", rsp, kind)
	}
	return false, "unknown kind of question"
}

func oneOf(a string, want string) bool {
	return a == want || strings.TrimSuffix(a, " mode") == want || strings.TrimSuffix(a, " stack") == want ||
		strings.TrimSuffix(a, " half") == want
}

// Expected returns the value a register question looks for.
func (q *Question) Expected(st State) (uint64, string, bool) {
	e := st.Entry
	switch q.Value {
	case ValueUserRIP:
		if e == nil {
			return 0, "", false
		}
		return uint64(e.RIP) + uint64(len(e.Bytes)), fmt.Sprintf("the user return address (after the %d-byte %s at %#x)", len(e.Bytes), e.Mnemonic, uint64(e.RIP)), true
	case ValueUserRSP:
		return st.entryRegs().Val(x86.RSP), "the user stack pointer at the entry", true
	case ValueUserFlags:
		return st.entryRegs().Val(x86.RFLAGS), "the user's RFLAGS at the entry", true
	case ValueSyscallNr:
		return st.entryRegs().Val(x86.RAX), "the system call number", true
	case ValueKernelCR3:
		return st.Now.Val(x86.CR3) &^ x86.KPTIUserBit, "the kernel's CR3", true
	case ValueCurrentRSP:
		return st.Now.Val(x86.RSP), "the stack pointer", true
	}
	return 0, "", false
}

func (q *Question) checkRegister(a string, st State) (bool, string) {
	want, what, ok := q.Expected(st)
	if !ok {
		return false, "the trace does not show " + q.Value
	}
	holders := Holders(st.Now, want, q.Value == ValueCurrentRSP)
	hint := fmt.Sprintf("%s is %#x", what, want)
	if len(holders) > 0 {
		hint += "; it is in " + strings.Join(holders, ", ") + " now"
	}
	r, ok := x86.ParseReg(a)
	if !ok {
		return false, fmt.Sprintf("%q is not a register name; %s", a, hint)
	}
	v, known := st.Now.Get(r)
	if !known {
		return false, fmt.Sprintf("%s is unknown at this step; %s", r, hint)
	}
	if v == want && !(q.Value == ValueCurrentRSP && r == x86.RSP) {
		return true, fmt.Sprintf("%s holds %#x: %s", r, v, hint)
	}
	return false, fmt.Sprintf("%s holds %#x, not %s (%#x)", r, v, what, want) + holderHint(holders)
}

func holderHint(h []string) string {
	if len(h) == 0 {
		return ""
	}
	return "; look for that value in the registers pane"
}

// Holders lists the general registers (and rip) whose value is v; RSP is
// left out when exceptRSP is set.
func Holders(st *x86.State, v uint64, exceptRSP bool) []string {
	var out []string
	for _, r := range append(append([]x86.Reg(nil), x86.GPRs...), x86.RIP) {
		if exceptRSP && r == x86.RSP {
			continue
		}
		if x, ok := st.Get(r); ok && x == v {
			out = append(out, r.String())
		}
	}
	return out
}

func isPerCPU(v uint64, regions []annotate.Region) bool {
	for _, r := range regions {
		if r.Kind == annotate.RegionPerCPU && r.Contains(v) {
			return true
		}
	}
	// Without regions (Linux): a kernel-half GS base is the per-CPU area.
	return len(regions) == 0 && x86.KernelHalf(v)
}

func stackKind(rsp uint64, regions []annotate.Region) string {
	c := &annotate.Context{Regions: regions}
	for _, a := range []uint64{rsp, rsp - 1} {
		r, ok := c.RegionOf(a)
		if !ok || (a != rsp && r.End != rsp) {
			continue
		}
		switch r.Kind {
		case annotate.RegionUserStack:
			return "user"
		case annotate.RegionKernelStack:
			return "kernel"
		case annotate.RegionEntryStack:
			return "entry"
		}
	}
	if len(regions) == 0 || !hasKind(regions, annotate.RegionUserStack) {
		if !x86.KernelHalf(rsp) {
			return "user"
		}
		return "kernel"
	}
	return ""
}

func hasKind(regions []annotate.Region, k annotate.RegionKind) bool {
	for _, r := range regions {
		if r.Kind == k {
			return true
		}
	}
	return false
}

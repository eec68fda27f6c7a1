package annotate

import (
	"fmt"
	"sort"

	"github.com/sctrace/sctrace/x86"
)

// Source says where a value came from.
type Source string

// The sources of a value.
const (
	SourceRead     Source = "read"     // read: from the stub's registers, guest memory, or an instruction's operands or result
	SourceInferred Source = "inferred" // worked out from what a transition did
	SourceProbed   Source = "probed"   // read by an rdmsr sctrace ran in the guest
)

// strength orders sources: a probe or a reading beats an inference.
func (s Source) strength() int {
	switch s {
	case SourceProbed:
		return 3
	case SourceRead:
		return 2
	case SourceInferred:
		return 1
	}
	return 0
}

// MSR is what is known of one model-specific register. Only the bits in
// Known are known; the others read as zero in Value.
type MSR struct {
	Index  uint32 `json:"index"`
	Name   string `json:"name"`
	Value  uint64 `json:"value"`
	Known  uint64 `json:"known"` // mask of the known bits
	Source Source `json:"source"`
	Step   int    `json:"step"`          // the step that revealed the value
	How    string `json:"how,omitempty"` // e.g. "RIP after syscall"
	// Bits are the bits the observation named by Source, Step and How
	// revealed; 0 (as in traces saved before it was recorded) means all of
	// Known.
	Bits uint64 `json:"bits,omitempty"`
	// Also lists later observations that added bits or came from a
	// stronger source; Confirmed counts the ones that only agreed.
	Also      []Observation `json:"also,omitempty"`
	Confirmed int           `json:"confirmed,omitempty"`
}

// Observation is one sighting of an MSR's bits.
type Observation struct {
	Known  uint64 `json:"known"`
	Source Source `json:"source"`
	Step   int    `json:"step"`
	How    string `json:"how,omitempty"`
}

// Provenance says where the observation came from, e.g. "inferred at step
// 86: SS after sysret".
func (o Observation) Provenance() string {
	s := fmt.Sprintf("%s at step %d", o.Source, o.Step)
	if o.How != "" {
		s += ": " + o.How
	}
	return s
}

// ProvenanceOf says where the given bits of the value came from: the
// observation that revealed them, which need not be the first one (STAR's
// sysret selector base is seen at a sysret, its syscall selector base at a
// syscall).
func (m MSR) ProvenanceOf(bits uint64) string {
	own := m.Bits
	if own == 0 {
		own = m.Known
	}
	if bits&^own == 0 {
		return m.Provenance()
	}
	for _, o := range m.Also {
		if bits&^o.Known == 0 {
			return o.Provenance()
		}
	}
	return m.Provenance()
}

// String renders the value with its provenance, e.g.
// "IA32_LSTAR = 0xffffffff81c00080 (inferred at step 3: RIP after syscall)".
func (m MSR) String() string {
	return fmt.Sprintf("%s = %s (%s)", m.Name, m.ValueString(), m.Provenance())
}

// ValueString renders the known bits: the value when all are known, else the
// value with its known mask.
func (m MSR) ValueString() string {
	if m.Known == ^uint64(0) {
		return fmt.Sprintf("%#x", m.Value)
	}
	return fmt.Sprintf("%#x (known bits %#x)", m.Value, m.Known)
}

// Provenance says where the value came from, e.g. "inferred at step 3: RIP
// after syscall".
func (m MSR) Provenance() string {
	s := fmt.Sprintf("%s at step %d", m.Source, m.Step)
	if m.How != "" {
		s += ": " + m.How
	}
	return s
}

// Fact is one value learnt about the machine other than an MSR: the top of
// the kernel stack TSS.RSP0 points to, the per-CPU GS base, a slot address.
type Fact struct {
	Value  uint64 `json:"value"`
	Known  uint64 `json:"known"` // mask of the known bits
	Source Source `json:"source"`
	Step   int    `json:"step"`
	How    string `json:"how,omitempty"`
}

// Provenance says where the fact came from.
func (f *Fact) Provenance() string {
	s := fmt.Sprintf("%s at step %d", f.Source, f.Step)
	if f.How != "" {
		s += ": " + f.How
	}
	return s
}

// Entry records the last entry into the kernel, to relate the return to it.
type Entry struct {
	Step      int    `json:"step"`
	Mechanism string `json:"mechanism"` // the entering instruction: a mechanism.Mechanism's Instruction ("syscall", "int $0x80", "call gate"...) or another, e.g. "int3"
	FromCPL   int    `json:"from_cpl"`
	ReturnRIP uint64 `json:"return_rip"` // where the caller resumes
	CallerRSP uint64 `json:"caller_rsp"`
	// Fault is set when the entry was a fault (#UD from ud2, say): the CPU
	// saved the address of the instruction itself, so the kernel must
	// advance the saved RIP by InsnLen for the caller to go on.
	Fault   bool `json:"fault,omitempty"`
	InsnLen int  `json:"insn_len,omitempty"`
	Swapgs  int  `json:"swapgs"` // swapgs executed since the entry
}

// Knowledge is what sctrace has learnt about the machine so far, carried from
// step to step. Its zero value is not ready: use NewKnowledge.
type Knowledge struct {
	MSRs map[uint32]*MSR `json:"msrs"`
	// RSP0 is TSS.RSP0, the stack the CPU loads on an interrupt or call gate
	// from user mode. Inferred from an entry, its low four bits stay unknown
	// for interrupts (the CPU aligns the stack to 16 bytes).
	RSP0 *Fact `json:"rsp0,omitempty"`
	// PerCPU is the kernel's GS base: the per-CPU area.
	PerCPU *Fact `json:"percpu,omitempty"`
	// UserRSPSlot is the linear address where the syscall entry code saved
	// the user RSP.
	UserRSPSlot *Fact `json:"user_rsp_slot,omitempty"`
	// FrameTop is the address just above the pt_regs frame at the top of
	// the kernel stack, used when no Region gives one.
	FrameTop *Fact `json:"frame_top,omitempty"`
	// Entry is the last entry into the kernel.
	Entry *Entry `json:"entry,omitempty"`

	prevOp opKind // the previous step's operation
	// scratchRSP is set while the entry code borrows RSP as a scratch
	// register (KPTI's CR3 switch); stackRSP is the stack pointer it had
	// before.
	scratchRSP bool
	stackRSP   uint64
	// tramp is the exit trampoline RSP is on, nil when it is on none.
	tramp *trampoline
	// nested is the frame of an exception taken in kernel mode, until
	// its handler returns.
	nested *nestedFrame
	// origin says which pt_regs field a register holds a copy of.
	origin map[x86.Reg]string
	// sysretRules are Linux's conditions for SYSRET seen to hold since
	// the entry.
	sysretRules []string
}

// NewKnowledge returns an empty Knowledge.
func NewKnowledge() *Knowledge {
	return &Knowledge{MSRs: map[uint32]*MSR{}}
}

// MSR returns what is known of an MSR, or nil.
func (k *Knowledge) MSR(index uint32) *MSR {
	if k == nil || k.MSRs == nil {
		return nil
	}
	return k.MSRs[index]
}

// Conflict returns the bits m contradicts in what is known of the same MSR:
// bits both know with different values.
func (k *Knowledge) Conflict(m MSR) uint64 {
	old := k.MSR(m.Index)
	if old == nil {
		return 0
	}
	return (old.Value ^ m.Value) & old.Known & m.Known
}

// Learn merges an observation of an MSR. When it agrees with what is known
// on the bits both know, the known bits grow, and the observation is kept in
// Also if it added bits or comes from a stronger source. When it contradicts
// (the MSR was written, or an earlier inference was wrong; Conflict tells),
// it replaces what was known. Bits outside m.Known are ignored.
func (k *Knowledge) Learn(m MSR) {
	if k.MSRs == nil {
		k.MSRs = map[uint32]*MSR{}
	}
	m.Value &= m.Known
	if m.Name == "" {
		m.Name = x86.MSRName(m.Index)
	}
	old := k.MSRs[m.Index]
	if old == nil || k.Conflict(m) != 0 {
		n := m // m itself stays on the stack: most calls confirm what is known
		n.Also, n.Confirmed, n.Bits = nil, 0, n.Known
		k.MSRs[m.Index] = &n
		return
	}
	added := m.Known &^ old.Known
	stronger := m.Source.strength() > old.Source.strength()
	old.Value |= m.Value & added
	old.Known |= m.Known
	switch {
	case added != 0 || stronger:
		obs := Observation{Known: m.Known, Source: m.Source, Step: m.Step, How: m.How}
		if stronger {
			// Show the strongest source first.
			oldBits := old.Bits
			if oldBits == 0 {
				oldBits = old.Known &^ added
			}
			old.Also = append(old.Also, Observation{Known: oldBits, Source: old.Source, Step: old.Step, How: old.How})
			old.Source, old.Step, old.How, old.Bits = m.Source, m.Step, m.How, m.Known
		} else {
			old.Also = append(old.Also, obs)
		}
		const maxAlso = 16
		if len(old.Also) > maxAlso {
			old.Also = old.Also[len(old.Also)-maxAlso:]
		}
	default:
		old.Confirmed++
	}
}

// Sorted returns the known MSRs ordered by index.
func (k *Knowledge) Sorted() []MSR {
	if k == nil {
		return nil
	}
	out := make([]MSR, 0, len(k.MSRs))
	for _, m := range k.MSRs {
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out
}

// learnFact sets *f to a new fact unless an equal one is known, and reports
// a conflicting older fact (nil if none).
func learnFact(f **Fact, v Fact) (conflict *Fact) {
	v.Value &= v.Known
	if *f != nil {
		old := *f
		if (old.Value^v.Value)&old.Known&v.Known == 0 {
			if v.Known&^old.Known != 0 || v.Source.strength() > old.Source.strength() {
				old.Value |= v.Value
				old.Known |= v.Known
				if v.Source.strength() > old.Source.strength() {
					old.Source, old.Step, old.How = v.Source, v.Step, v.How
				}
			}
			return nil
		}
		conflict = &Fact{}
		*conflict = *old
	}
	*f = &v
	return conflict
}

// remember records what the next step needs from this one.
func (k *Knowledge) remember(a *annotator) {
	k.prevOp = a.op.kind
	if n := k.nested; n != nil {
		if rsp, ok := a.a.Get(x86.RSP); cpl(a.a) != 0 || (ok && rsp >= n.top && !a.entered) {
			k.nested = nil
		}
	}
	if k.tramp != nil {
		rsp, ok := a.a.Get(x86.RSP)
		if a.entered || cpl(a.a) != 0 || !ok || !a.onTrampoline(rsp) {
			k.tramp = nil
		}
	}
}

package annotate

import (
	"fmt"

	"github.com/sctrace/sctrace/x86"
)

// RegionKind says what a memory region is for.
type RegionKind string

// The region kinds.
const (
	RegionUserStack   RegionKind = "user-stack"
	RegionKernelStack RegionKind = "kernel-stack" // a task's kernel stack
	RegionEntryStack  RegionKind = "entry-stack"  // a small per-CPU stack the CPU enters on (Linux's cpu_entry_area)
	RegionISTStack    RegionKind = "ist-stack"    // an interrupt stack table stack (NMI, #DF, #MC, #DB)
	RegionPerCPU      RegionKind = "percpu"       // the per-CPU area the kernel GS base points to
	RegionScratch     RegionKind = "scratch"      // a per-CPU slot the entry code parks a value in
	RegionTSS         RegionKind = "tss"
	RegionGDT         RegionKind = "gdt"
	RegionIDT         RegionKind = "idt"
	RegionVDSO        RegionKind = "vdso"
)

// Region is a named range of linear addresses.
type Region struct {
	Name  string     `json:"name"`
	Kind  RegionKind `json:"kind"`
	Start uint64     `json:"start"` // first address
	End   uint64     `json:"end"`   // first address past the region (half-open)
	// FrameTop is the address just above a pt_regs frame built at the top
	// of this stack, 0 if none.
	FrameTop uint64 `json:"frame_top,omitempty"`
}

// Contains reports whether addr lies in the region.
func (r Region) Contains(addr uint64) bool { return addr >= r.Start && addr < r.End }

// IsStack reports whether the region is a stack.
func (r Region) IsStack() bool {
	switch r.Kind {
	case RegionUserStack, RegionKernelStack, RegionEntryStack, RegionISTStack:
		return true
	}
	return false
}

// label renders e.g. `kernel stack "task stack"`.
func (r Region) label() string {
	kind := map[RegionKind]string{
		RegionUserStack:   "user stack",
		RegionKernelStack: "kernel stack",
		RegionEntryStack:  "entry stack",
		RegionISTStack:    "IST stack",
		RegionPerCPU:      "per-CPU area",
		RegionScratch:     "per-CPU scratch slot",
		RegionTSS:         "TSS",
		RegionGDT:         "GDT",
		RegionIDT:         "IDT",
		RegionVDSO:        "vDSO",
	}[r.Kind]
	switch {
	case kind == "":
		return r.Name
	case r.Name == "" || r.Name == kind:
		return kind
	}
	return fmt.Sprintf("%s %q", kind, r.Name)
}

// RegionOf returns the smallest region containing addr.
func (c *Context) RegionOf(addr uint64) (Region, bool) {
	if c == nil {
		return Region{}, false
	}
	var best Region
	found := false
	for _, r := range c.Regions {
		if r.Contains(addr) && (!found || r.End-r.Start < best.End-best.Start) {
			best, found = r, true
		}
	}
	return best, found
}

// RegionOfKind returns the smallest region of the given kind containing
// addr: the per-CPU area that holds a TSS at its start, say, when RegionOf
// names the TSS.
func (c *Context) RegionOfKind(addr uint64, kind RegionKind) (Region, bool) {
	if c == nil {
		return Region{}, false
	}
	sub := &Context{}
	for _, r := range c.Regions {
		if r.Kind == kind {
			sub.Regions = append(sub.Regions, r)
		}
	}
	return sub.RegionOf(addr)
}

// PtRegsFields are the fields of Linux's struct pt_regs from the top of the
// frame down: the first five are what the CPU pushes on an interrupt, the
// rest what the entry code pushes after them.
var PtRegsFields = []string{
	"ss", "sp", "flags", "cs", "ip", "orig_ax",
	"di", "si", "dx", "cx", "ax", "r8", "r9", "r10", "r11",
	"bx", "bp", "r12", "r13", "r14", "r15",
}

// PtRegsSize is the size in bytes of a pt_regs frame: 21 eight-byte slots.
const PtRegsSize = 8 * 21

// PtRegsSlot names the pt_regs field at addr for a frame ending just below
// frameTop, e.g. "ax"; ok is false when addr is not an 8-byte slot of the
// frame.
func PtRegsSlot(frameTop, addr uint64) (field string, ok bool) {
	if frameTop == 0 || addr >= frameTop || frameTop-addr > PtRegsSize || (frameTop-addr)%8 != 0 {
		return "", false
	}
	return PtRegsFields[(frameTop-addr)/8-1], true
}

// frameTops returns the frame tops to try for addr: the one of the region
// holding it, then the learnt one.
func (a *annotator) frameTops(addr uint64) []uint64 {
	var tops []uint64
	if r, ok := a.c.RegionOf(addr); ok && r.FrameTop != 0 {
		tops = append(tops, r.FrameTop)
	}
	if f := a.k.FrameTop; f != nil && f.Known == ^uint64(0) {
		tops = append(tops, f.Value)
	}
	return tops
}

// ptRegsField names the pt_regs field at addr, e.g. "ax", when addr is a
// slot of a pt_regs frame: one built on entry at the top of a stack. The
// entry stack the exit path copies a few words to (the trampoline) holds no
// pt_regs frame, whatever the words' positions.
func (a *annotator) ptRegsField(addr uint64) (string, bool) {
	if a.onTrampoline(addr) || a.inNested(addr) {
		return "", false
	}
	for _, top := range a.frameTops(addr) {
		if f, ok := PtRegsSlot(top, addr); ok {
			return f, true
		}
	}
	return "", false
}

// slot names what the 8-byte slot at addr holds, e.g. " (pt_regs->ax)" on
// a pt_regs frame or " (the trampoline's copy of pt_regs->sp)" on the exit
// trampoline, or "".
func (a *annotator) slot(addr uint64) string {
	if n := a.k.nested; a.inNested(addr) {
		f, _ := PtRegsSlot(n.top, addr)
		if f == "orig_ax" && n.errCode {
			f = "orig_ax, the error code"
		}
		return fmt.Sprintf(" (nested %s frame: %s)", n.vector, f)
	}
	if a.onTrampoline(addr) {
		if what, ok := a.k.tramp.slots[addr]; ok {
			return " (" + what + ")"
		}
		return " (on the exit trampoline, not a pt_regs frame)"
	}
	if f, ok := a.ptRegsField(addr); ok {
		return fmt.Sprintf(" (pt_regs->%s)", f)
	}
	return ""
}

// nestedFrame is the frame of an exception taken in kernel mode: the CPU
// pushed it on the stack the kernel was using (a stack below the user's
// pt_regs, or the entry stack itself), and the handler saves its registers
// below it. Its slots are its own, not the user frame's the same stack
// positions would name.
type nestedFrame struct {
	top     uint64 // just above the CPU's frame: SS
	vector  string // e.g. "#PF"
	errCode bool
}

// inNested reports whether addr is a slot of the nested frame in use.
func (a *annotator) inNested(addr uint64) bool {
	n := a.k.nested
	return n != nil && addr < n.top && n.top-addr <= PtRegsSize
}

// trampoline is an entry stack the exit path switched to from a kernel
// stack (Linux's syscall_return_via_sysret and
// swapgs_restore_regs_and_return_to_usermode): the few words it pushes
// there are copies made so that it can switch to the user page tables with
// the task stack unmapped, not a pt_regs frame.
type trampoline struct {
	region Region
	// slots says what each pushed slot holds, e.g. "the trampoline's copy
	// of pt_regs->sp".
	slots map[uint64]string
}

// onTrampoline reports whether addr is on the exit trampoline in use.
func (a *annotator) onTrampoline(addr uint64) bool {
	t := a.k.tramp
	return t != nil && (t.region.Contains(addr) || addr == t.region.End)
}

// ExitTrampoline reports whether a move of RSP from one address to another
// at CPL 0 by the kernel's own instructions (not by an interrupt) is a
// switch from a kernel stack to an entry stack: the exit path's
// trampoline, where no pt_regs frame is. The kernel stack need not be a
// known region (a task's stack moves with the task): any kernel-half
// address off the entry and IST stacks counts. Entering, the CPU moves to
// the entry stack itself; only the exit path moves there by instruction.
func (c *Context) ExitTrampoline(from, to uint64) bool {
	rt, ok := c.StackOf(to)
	if !ok || rt.Kind != RegionEntryStack {
		return false
	}
	if rf, ok := c.StackOf(from); ok {
		return rf.Kind == RegionKernelStack
	}
	return x86.KernelHalf(from)
}

// where names the region holding addr, e.g. ` in kernel stack "task"`, or "".
func (a *annotator) where(addr uint64) string {
	if r, ok := a.c.RegionOf(addr); ok {
		return " in the " + r.label()
	}
	return ""
}

// StackOf returns the stack an RSP value is on. An empty stack's RSP equals
// its region's End, so that counts as on it, even where another region (a
// TSS above an entry stack, say) starts there.
func (c *Context) StackOf(rsp uint64) (Region, bool) {
	if r, ok := c.RegionOf(rsp); ok && r.IsStack() {
		return r, true
	}
	if below, ok := c.RegionOf(rsp - 1); ok && below.IsStack() && below.End == rsp {
		return below, true
	}
	return Region{}, false
}

// stackRegion returns the stack an RSP value is on or, failing that, the
// region it points into.
func (a *annotator) stackRegion(rsp uint64) (Region, bool) {
	if r, ok := a.c.StackOf(rsp); ok {
		return r, true
	}
	return a.c.RegionOf(rsp)
}

// stackName names the stack an RSP value points into.
func (a *annotator) stackName(rsp uint64) string {
	if r, ok := a.stackRegion(rsp); ok {
		return r.label()
	}
	if x86.KernelHalf(rsp) {
		return "kernel-half stack"
	}
	return "user-half stack"
}

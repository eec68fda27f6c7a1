package linux

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/x86"
)

// ThreadSize is the size of an x86-64 task stack (THREAD_SIZE without KASAN).
const ThreadSize = 16 << 10

// istNames names Linux's IST stacks by index (ESTACK_DF, NMI, DB, MC, VC, VC2).
var istNames = []string{"#DF", "NMI", "#DB", "#MC", "#VC", "#VC2", "ist7"}

// TSS is the hardware TSS at TR's base. Linux keeps the top of its entry
// stack in RSP0 and, on a syscall entry, parks the user RSP in RSP2, which
// the CPU does not use in long mode.
type TSS struct {
	Base uint64 // TR's base: the TSS's address in the cpu_entry_area
	x86.TSS
}

// ReadTSS reads the hardware TSS at TR's base.
func ReadTSS(ctx context.Context, mem Memory, sys *x86.SysRegs) (*TSS, error) {
	if sys == nil {
		return nil, fmt.Errorf("TSS: TR unknown (no monitor info registers)")
	}
	base := sys.TR().Base
	b, err := mem.ReadMemory(ctx, base, x86.TSSSize)
	if err != nil {
		return nil, fmt.Errorf("TSS at TR base %#x: %w", base, err)
	}
	t, ok := x86.DecodeTSS(b)
	if !ok {
		return nil, fmt.Errorf("TSS at TR base %#x: %d bytes read, want %d", base, len(b), x86.TSSSize)
	}
	return &TSS{Base: base, TSS: t}, nil
}

// Regions returns the memory regions of the system-call path: the TSS at
// TR's base and its per-CPU copy cpu_tss_rw (with the sp2 slot the syscall
// entry parks the user RSP in), the entry stack under the TSS's sp0, the
// IST stacks, the per-CPU area at gsBase, and the GDT and IDT. The task
// stack depends on the running task; TaskStack finds it.
func Regions(ctx context.Context, mem Memory, tab *symbols.Table, sys *x86.SysRegs, gsBase uint64) ([]annotate.Region, error) {
	tss, err := ReadTSS(ctx, mem, sys)
	if err != nil {
		return nil, err
	}
	out := []annotate.Region{
		{Name: "cpu_entry_area TSS (TR base)", Kind: annotate.RegionTSS, Start: tss.Base, End: tss.Base + x86.TSSSize},
	}
	if sp0 := tss.RSP[0]; x86.CanonicalKernel(sp0) {
		start := (sp0 - 1) &^ 0xfff
		out = append(out, annotate.Region{Name: "cpu_entry_area entry stack (TSS sp0)", Kind: annotate.RegionEntryStack, Start: start, End: sp0, FrameTop: sp0})
	}
	for i := 1; i < len(tss.IST); i++ {
		top := tss.IST[i]
		if !x86.CanonicalKernel(top) {
			continue
		}
		out = append(out, annotate.Region{Name: istNames[i-1] + " stack (TSS ist" + fmt.Sprint(i) + ")", Kind: annotate.RegionISTStack, Start: (top - 1) &^ 0xfff, End: top})
	}
	if s, ok := tab.Find("cpu_tss_rw"); ok && IsPerCPU(s) && gsBase != 0 {
		a := gsBase + s.Addr
		out = append(out,
			annotate.Region{Name: "cpu_tss_rw", Kind: annotate.RegionTSS, Start: a, End: a + x86.TSSSize},
			annotate.Region{Name: "cpu_tss_rw.sp2, the user RSP while entering", Kind: annotate.RegionScratch, Start: a + x86.TSSRSP2, End: a + x86.TSSRSP2 + 8},
		)
	}
	if gsBase != 0 {
		start, end := perCPUBounds(tab)
		out = append(out, annotate.Region{Name: "per-CPU area (GS base)", Kind: annotate.RegionPerCPU, Start: gsBase + start, End: gsBase + end})
	}
	if sys.GDTBase != 0 {
		out = append(out, annotate.Region{Name: "GDT", Kind: annotate.RegionGDT, Start: sys.GDTBase, End: sys.GDTBase + uint64(sys.GDTLimit) + 1})
	}
	if sys.IDTBase != 0 {
		out = append(out, annotate.Region{Name: "IDT", Kind: annotate.RegionIDT, Start: sys.IDTBase, End: sys.IDTBase + uint64(sys.IDTLimit) + 1})
	}
	return out, nil
}

// perCPUBounds returns the per-CPU section's offsets: __per_cpu_start and
// __per_cpu_end when kallsyms has them, else zero to just past the
// highest per-CPU symbol.
func perCPUBounds(tab *symbols.Table) (uint64, uint64) {
	s, ok1 := tab.Find("__per_cpu_start")
	e, ok2 := tab.Find("__per_cpu_end")
	if ok1 && ok2 && IsPerCPU(s) && IsPerCPU(e) && e.Addr > s.Addr {
		return s.Addr, e.Addr
	}
	var hi uint64
	for _, s := range tab.Symbols() {
		if IsPerCPU(s) && s.Addr > hi {
			hi = s.Addr
		}
	}
	return 0, hi + 0x1000
}

// TaskStack returns the running task's kernel stack, from the per-CPU top
// of stack: cpu_current_top_of_stack (up to 6.1) or the top_of_stack field
// of pcpu_hot (6.2 on), which is the 16 KiB-aligned kernel address among
// its first words. The pt_regs frame of a system call sits at its top.
func TaskStack(ctx context.Context, mem Memory, tab *symbols.Table, gsBase uint64) (annotate.Region, error) {
	top, how, err := topOfStack(ctx, mem, tab, gsBase)
	if err != nil {
		return annotate.Region{}, err
	}
	return annotate.Region{Name: "task stack (" + how + ")", Kind: annotate.RegionKernelStack, Start: top - ThreadSize, End: top, FrameTop: top}, nil
}

func topOfStack(ctx context.Context, mem Memory, tab *symbols.Table, gsBase uint64) (uint64, string, error) {
	if gsBase == 0 {
		return 0, "", fmt.Errorf("task stack: the kernel GS base is unknown")
	}
	if s, ok := tab.Find("cpu_current_top_of_stack"); ok && IsPerCPU(s) {
		b, err := mem.ReadMemory(ctx, gsBase+s.Addr, 8)
		if err != nil {
			return 0, "", fmt.Errorf("task stack: cpu_current_top_of_stack: %w", err)
		}
		if top := le64(b); x86.CanonicalKernel(top) {
			return top, "cpu_current_top_of_stack", nil
		}
	}
	if s, ok := tab.Find("pcpu_hot"); ok && IsPerCPU(s) {
		b, err := mem.ReadMemory(ctx, gsBase+s.Addr, 0x30)
		if err != nil {
			return 0, "", fmt.Errorf("task stack: pcpu_hot: %w", err)
		}
		for off := 0x10; off <= 0x20; off += 8 {
			if top := le64(b[off:]); x86.CanonicalKernel(top) && top%ThreadSize == 0 {
				return top, fmt.Sprintf("pcpu_hot+%#x", off), nil
			}
		}
	}
	return 0, "", fmt.Errorf("task stack: neither cpu_current_top_of_stack nor a top_of_stack in pcpu_hot")
}

// Banner reads the kernel's version string (linux_banner), e.g. "Linux
// version 6.1.0-... (debian-kernel@...) ...", without its trailing newline.
func Banner(ctx context.Context, mem Memory, tab *symbols.Table) (string, error) {
	a, ok := tab.Addr("linux_banner")
	if !ok {
		return "", fmt.Errorf("no linux_banner symbol")
	}
	b, err := mem.ReadMemory(ctx, a, 256)
	if err != nil {
		return "", fmt.Errorf("linux_banner: %w", err)
	}
	for i, c := range b {
		if c == 0 || c == '\n' {
			b = b[:i]
			break
		}
	}
	return string(b), nil
}

func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }

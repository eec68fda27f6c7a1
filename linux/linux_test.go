package linux

import (
	"context"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/x86"
)

// pages is a sparse fake guest memory.
type pages map[uint64][]byte

func (p pages) ReadMemory(_ context.Context, addr uint64, n int) ([]byte, error) {
	for base, b := range p {
		if addr >= base && addr+uint64(n) <= base+uint64(len(b)) {
			return b[addr-base : addr-base+uint64(n)], nil
		}
	}
	return nil, fmt.Errorf("read %#x: E14", addr)
}

func gate(handler uint64, present bool) []byte {
	g := make([]byte, 16)
	binary.LittleEndian.PutUint16(g[0:], uint16(handler))
	binary.LittleEndian.PutUint16(g[2:], 0x10)
	g[5] = 0x0e
	if present {
		g[5] |= 0x80
	}
	binary.LittleEndian.PutUint16(g[6:], uint16(handler>>16))
	binary.LittleEndian.PutUint32(g[8:], uint32(handler>>32))
	return g
}

func TestGateAndAnchor(t *testing.T) {
	const idt = 0xfffffe0000000000
	mem := pages{idt: append(append(gate(0xffffffff81a01230, true), gate(0xffffffff81a01240, false)...), gate(0x401000, true)...)}
	tests := []struct {
		vec     int
		want    uint64
		wantErr bool
	}{
		{0, 0xffffffff81a01230, false},
		{1, 0, true}, // not present
		{9, 0, true}, // unreadable
	}
	for _, tt := range tests {
		got, err := Gate(context.Background(), mem, idt, tt.vec)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("Gate(%d) = %#x, %v; want %#x, error %v", tt.vec, got, err, tt.want, tt.wantErr)
		}
	}
	if a, err := Anchor(context.Background(), mem, idt); err != nil || a != 0xffffffff81a01230 {
		t.Errorf("Anchor = %#x, %v", a, err)
	}
	if _, err := Anchor(context.Background(), pages{idt: gate(0x401000, true)}, idt); err == nil {
		t.Error("Anchor accepted a user-half handler")
	}
}

func TestWithPerCPU(t *testing.T) {
	tab := symbols.New("kallsyms", []symbols.Symbol{
		{Name: "cpu_tss_rw", Addr: 0x6000, Type: 'D'},
		{Name: "cpu_current_top_of_stack", Addr: 0x1fb50, Type: 'D'},
		{Name: "entry_SYSCALL_64", Addr: 0xffffffff81c00080, Type: 'T'},
	})
	const gs = 0xffff88800f800000
	got := WithPerCPU(tab, gs)
	tests := []struct {
		addr uint64
		want string
	}{
		{gs + 0x6014, "cpu_tss_rw+0x14"},
		{gs + 0x1fb50, "cpu_current_top_of_stack"},
		{0xffffffff81c00080, "entry_SYSCALL_64"},
		{0x2b, ""}, // a constant, not a per-CPU offset
	}
	for _, tt := range tests {
		if s := got.Symbolize(tt.addr); s != tt.want {
			t.Errorf("Symbolize(%#x) = %q, want %q", tt.addr, s, tt.want)
		}
	}
}

func TestRegions(t *testing.T) {
	const (
		tr  = 0xfffffe0000003000
		gs  = 0xffff88800f800000
		top = 0xffffc90000014000
	)
	tss := make([]byte, x86.TSSSize)
	binary.LittleEndian.PutUint64(tss[x86.TSSRSP0:], tr)
	binary.LittleEndian.PutUint64(tss[x86.TSSIST1:], 0xfffffe000000b000)
	hot := make([]byte, 8)
	binary.LittleEndian.PutUint64(hot, top)
	mem := pages{tr: tss, gs + 0x1fb50: hot}
	tab := symbols.New("kallsyms", []symbols.Symbol{
		{Name: "cpu_tss_rw", Addr: 0x6000}, {Name: "cpu_current_top_of_stack", Addr: 0x1fb50},
		{Name: "__per_cpu_start", Addr: 0}, {Name: "__per_cpu_end", Addr: 0x34000},
	})
	sys := &x86.SysRegs{Segments: map[string]x86.Segment{"TR": {Selector: 0x40, Base: tr, Limit: 0x4087}},
		GDTBase: 0xfffffe0000001000, GDTLimit: 0x7f, IDTBase: 0xfffffe0000000000, IDTLimit: 0xfff}
	regs, err := Regions(context.Background(), mem, tab, sys, gs)
	if err != nil {
		t.Fatal(err)
	}
	task, err := TaskStack(context.Background(), mem, tab, gs)
	if err != nil {
		t.Fatal(err)
	}
	ctx := &annotate.Context{Regions: append(regs, task)}
	tests := []struct {
		addr uint64
		kind annotate.RegionKind
	}{
		{tr + 8, annotate.RegionTSS},
		{tr - 8, annotate.RegionEntryStack},
		{0xfffffe000000aff8, annotate.RegionISTStack},
		{gs + 0x6014, annotate.RegionScratch},
		{gs + 0x6004, annotate.RegionTSS},
		{gs + 0x100, annotate.RegionPerCPU},
		{top - 8, annotate.RegionKernelStack},
		{0xfffffe0000001008, annotate.RegionGDT},
		{0xfffffe0000000800, annotate.RegionIDT},
	}
	for _, tt := range tests {
		r, ok := ctx.RegionOf(tt.addr)
		if !ok || r.Kind != tt.kind {
			t.Errorf("RegionOf(%#x) = %q (%s), want %s", tt.addr, r.Name, r.Kind, tt.kind)
		}
	}
	if task.FrameTop != top {
		t.Errorf("task stack frame top %#x, want %#x", task.FrameTop, uint64(top))
	}
}

func TestKernelGSBase(t *testing.T) {
	var user, kernel x86.State
	user.Set(x86.GSBase, 0)
	user.Set(x86.KernelGSBase, 0xffff88800f800000)
	kernel.Set(x86.GSBase, 0xffff88800f800000)
	kernel.Set(x86.KernelGSBase, 0x7f0000001000)
	for _, st := range []*x86.State{&user, &kernel} {
		if gs, ok := KernelGSBase(st); !ok || gs != 0xffff88800f800000 {
			t.Errorf("KernelGSBase = %#x, %v", gs, ok)
		}
	}
}

package annotate

import (
	"testing"

	"github.com/sctrace/sctrace/x86"
)

var taskStack = []Region{
	{Name: "task", Kind: RegionKernelStack, Start: kstackTop - 0x4000, End: kstackTop, FrameTop: kstackTop},
	{Name: "main", Kind: RegionUserStack, Start: userRSP - 0x10000, End: userRSP + 0x1000},
}

func TestStack(t *testing.T) {
	k := with(kernel, regs{x86.RSP: kstackTop, x86.RDI: 0x77})
	tests := []struct {
		name          string
		code          []byte
		before, after regs
		mem           []Memory
		checks        []check
		clean         bool
	}{
		{"push $__USER_DS lands in pt_regs->ss", insPush2b, k, with(k, regs{x86.RSP: kstackTop - 8}), nil,
			[]check{note(KindStack, "push: rsp 0xffffc90000004000 → 0xffffc90000003ff8; stores the constant 0x2b at 0xffffc90000003ff8 (pt_regs->ss)")}, true},
		{"push %rax lands in pt_regs->orig_ax", insPushRAX, with(k, regs{x86.RSP: kstackTop - 40}), with(k, regs{x86.RSP: kstackTop - 48}), nil,
			[]check{note(KindStack, "stores rax 0x27 at 0xffffc90000003fd0 (pt_regs->orig_ax)")}, true},
		{"push from the per-CPU slot", insPushGS, with(k, regs{x86.RSP: kstackTop - 8}), with(k, regs{x86.RSP: kstackTop - 16}),
			[]Memory{{Addr: kstackTop - 16, Data: qwords(userRSP), After: true}},
			[]check{
				note(KindStack, "stores 0x7ffc00001238 (read from the stack after the step) at 0xffffc90000003ff0 (pt_regs->sp)"),
				note(KindGS, "reads gs:0x6014"),
			}, true},
		{"push moved rsp by 16", insPushRAX, k, with(k, regs{x86.RSP: kstackTop - 16}), nil,
			[]check{finding(KindStack, "a push moves rsp by -8, not -16")}, false},
		{"pop", insPopRBX, with(k, regs{x86.RSP: kstackTop - 8*16}), with(k, regs{x86.RSP: kstackTop - 8*15, x86.RBX: 5}), nil,
			[]check{note(KindStack, "loads the slot at 0xffffc90000003f80 (pt_regs->bx) into rbx: 0x5")}, true},
		{"sub reserves", insSub50, k, with(k, regs{x86.RSP: kstackTop - 0x50}), nil,
			[]check{note(KindStack, "reserves 80 bytes of stack")}, true},
		{"store into a pt_regs slot", insStoreRDI, with(k, regs{x86.RSP: kstackTop - PtRegsSize}), with(k, regs{x86.RSP: kstackTop - PtRegsSize}), nil,
			[]check{note(KindFrame, "stores the value of rdi, 0x77 at 0xffffc90000003fc8 (pt_regs->di)")}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			after := with(tt.after, regs{x86.RIP: kernel[x86.RIP] + uint64(len(tt.code))})
			effects := Annotate(mkStep(t, 1, tt.code, kernel[x86.RIP], tt.before, after, tt.mem...), &Context{Regions: taskStack})
			expectEffects(t, effects, tt.checks...)
			if tt.clean {
				expectNoFinding(t, effects)
			} else {
				expectFinding(t, effects)
			}
		})
	}
}

func TestStackSwitchByRegion(t *testing.T) {
	before := with(kernel, regs{x86.RSP: userRSP})
	after := with(before, regs{x86.RIP: kernel[x86.RIP] + 9, x86.RSP: kstackTop})
	s := mkStep(t, 1, insTopRSP, kernel[x86.RIP], before, after)
	c := &Context{Regions: taskStack}
	effects := Annotate(s, c)
	expectEffects(t, effects, note(KindStack, `stack switch: user stack "main" → kernel stack "task"`))
	if ev := Events(s, effects, c); !hasEvent(ev, EventStackSwitch) {
		t.Errorf("events %v lack stack-switch", ev)
	}
}

func TestPtRegsSlot(t *testing.T) {
	tests := []struct {
		addr  uint64
		field string
		ok    bool
	}{
		{0x1000 - 8, "ss", true},
		{0x1000 - 16, "sp", true},
		{0x1000 - 48, "orig_ax", true},
		{0x1000 - 168, "r15", true},
		{0x1000 - 176, "", false},
		{0x1000, "", false},
		{0x1000 - 4, "", false},
	}
	for _, tt := range tests {
		f, ok := PtRegsSlot(0x1000, tt.addr)
		if f != tt.field || ok != tt.ok {
			t.Errorf("PtRegsSlot(0x1000, %#x) = %q, %v; want %q, %v", tt.addr, f, ok, tt.field, tt.ok)
		}
	}
}

func TestRegionOf(t *testing.T) {
	c := &Context{Regions: []Region{
		{Name: "big", Kind: RegionPerCPU, Start: 0x1000, End: 0x9000},
		{Name: "slot", Kind: RegionScratch, Start: 0x2000, End: 0x2008},
	}}
	if r, ok := c.RegionOf(0x2004); !ok || r.Name != "slot" {
		t.Errorf("RegionOf(0x2004) = %+v, %v; want the smallest region, slot", r, ok)
	}
	if r, ok := c.RegionOf(0x3000); !ok || r.Name != "big" {
		t.Errorf("RegionOf(0x3000) = %+v, %v", r, ok)
	}
	if _, ok := c.RegionOf(0x9000); ok {
		t.Error("RegionOf(End) found a region: ranges are half-open")
	}
	var nilCtx *Context
	if _, ok := nilCtx.RegionOf(0); ok {
		t.Error("nil Context found a region")
	}
}

// TestScratchRSP follows KPTI's CR3 switch with RSP as the scratch register:
// no stack switch is claimed until RSP is a stack pointer again.
func TestScratchRSP(t *testing.T) {
	c := &Context{}
	s0 := with(swapped, regs{x86.CR3: 0x10b000})
	s1 := with(s0, regs{x86.RSP: 0x10b000, x86.RIP: s0[x86.RIP] + 3})
	effects := Annotate(mkStep(t, 1, []byte{0x0f, 0x20, 0xdc}, s0[x86.RIP], s0, s1), c) // mov %cr3,%rsp
	expectEffects(t, effects, note(KindStack, "rsp borrowed as a scratch register: it holds cr3 0x10b000"))
	s2 := with(s1, regs{x86.RSP: 0x10a000, x86.RIP: s1[x86.RIP] + 7})
	effects = Annotate(mkStep(t, 2, []byte{0x48, 0x81, 0xe4, 0xff, 0xe7, 0xff, 0xff}, s1[x86.RIP], s1, s2), c) // and $~0x1800,%rsp
	expectEffects(t, effects, note(KindStack, "rsp (scratch) 0x10b000 → 0x10a000"))
	for _, e := range effects {
		if e.Event == EventStackSwitch {
			t.Errorf("stack switch claimed for scratch use: %q", e.Text)
		}
	}
	s3 := with(s2, regs{x86.RSP: kstackTop, x86.RIP: s2[x86.RIP] + 9})
	effects = Annotate(mkStep(t, 3, insTopRSP, s2[x86.RIP], s2, s3), c)
	expectEffects(t, effects,
		note(KindStack, "rsp is a stack pointer again"),
		note(KindStack, "stack switch: user-half stack → kernel-half stack"))
}

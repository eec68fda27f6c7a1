package annotate

import (
	"testing"

	"github.com/sctrace/sctrace/x86"
)

// entered is the state at entry_SYSCALL_64 before swapgs.
var entered = with(syscallAfter, nil)

var swapped = with(entered, regs{x86.RIP: lstar + 3, x86.GSBase: percpu, x86.KernelGSBase: 0})

func TestSwapgs(t *testing.T) {
	percpuRegion := []Region{{Name: "cpu0", Kind: RegionPerCPU, Start: percpu, End: percpu + 0x20000}}
	tests := []struct {
		name          string
		regions       []Region
		before, after regs
		checks        []check
		clean         bool
	}{
		{
			name: "into the kernel, per-CPU region known", regions: percpuRegion, before: entered, after: swapped, clean: true,
			checks: []check{ok(KindGS, `swapgs: gs_base 0x0 ⇄ k_gs_base 0xffff888007c00000 (per-CPU area "cpu0" now active)`)},
		},
		{
			name: "out of the kernel", regions: percpuRegion, before: swapped, after: with(swapped, regs{x86.GSBase: 0, x86.KernelGSBase: percpu}), clean: true,
			checks: []check{ok(KindGS, `parked in k_gs_base, user GS base active`)},
		},
		{
			name: "did not swap", before: entered, after: with(entered, regs{x86.RIP: lstar + 3}),
			checks: []check{finding(KindGS, "swapgs did not swap: gs_base 0x0 → 0x0")},
		},
		{
			name: "in user mode", before: user, after: with(user, regs{x86.GSBase: percpu, x86.KernelGSBase: 0}),
			checks: []check{finding(KindPrivilege, "swapgs at CPL 3 should raise #GP")},
		},
		{
			name: "unknown bases", before: without(entered, x86.KernelGSBase), after: swapped, clean: true,
			checks: []check{note(KindCheck, "cannot check the exchange")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mkStep(t, 2, insSwapgs, lstar, tt.before, tt.after)
			c := &Context{Regions: tt.regions}
			effects := Annotate(s, c)
			expectEffects(t, effects, tt.checks...)
			if tt.clean {
				expectNoFinding(t, effects)
			} else {
				expectFinding(t, effects)
			}
			if ev := Events(s, effects, c); !hasEvent(ev, EventSwapgs) {
				t.Errorf("events %v lack swapgs", ev)
			}
		})
	}
}

// TestEntrySequence follows Linux's entry_SYSCALL_64 prologue: syscall,
// swapgs, save the user RSP in a per-CPU slot, load the kernel stack, and
// at the end take the user RSP back.
func TestEntrySequence(t *testing.T) {
	c := &Context{Symbols: testSyms}
	Annotate(mkStep(t, 1, insSyscall, userRIP, user, syscallAfter), c)
	effects := Annotate(mkStep(t, 2, insSwapgs, lstar, entered, swapped), c)
	expectEffects(t, effects, ok(KindGS, "per-CPU area now active: inferred, first swapgs after a user-mode entry"))
	if f := c.Knowledge.PerCPU; f == nil || f.Value != percpu || f.Source != SourceInferred {
		t.Fatalf("PerCPU = %+v", f)
	}

	saved := with(swapped, regs{x86.RIP: lstar + 12})
	effects = Annotate(mkStep(t, 3, insSaveRSP, lstar+3, swapped, saved), c)
	expectEffects(t, effects, note(KindGS, "stores to gs:0x6014 = 0xffff888007c06014 <cpu_tss_rw+0x14> the value of rsp, 0x7ffc00001238 — the per-CPU scratch slot: user RSP saved"))
	if f := c.Knowledge.UserRSPSlot; f == nil || f.Value != percpu+0x6014 {
		t.Errorf("UserRSPSlot = %+v", f)
	}

	onStack := with(saved, regs{x86.RIP: lstar + 21, x86.RSP: kstackTop})
	effects = Annotate(mkStep(t, 4, insTopRSP, lstar+12, saved, onStack), c)
	expectEffects(t, effects,
		note(KindGS, "loads from gs:0x6018"),
		note(KindGS, "a kernel stack pointer kept in the per-CPU area"),
		note(KindStack, "stack switch: user-half stack → kernel-half stack"))
	if ev := Events(mkStep(t, 4, insTopRSP, lstar+12, saved, onStack), effects, c); !hasEvent(ev, EventStackSwitch) || !hasEvent(ev, EventPerCPU) {
		t.Errorf("events %v lack stack-switch and percpu", ev)
	}

	if f := c.Knowledge.FrameTop; f == nil || f.Value != kstackTop {
		t.Errorf("FrameTop = %+v, want the loaded stack top", f)
	}
	pushed := with(onStack, regs{x86.RSP: kstackTop - 8, x86.RIP: lstar + 23})
	effects = Annotate(mkStep(t, 5, insPush2b, lstar+21, onStack, pushed), c)
	expectEffects(t, effects, note(KindStack, "(pt_regs->ss)"))

	back := with(onStack, regs{x86.RSP: userRSP, x86.RIP: lstar + 0x80 + uint64(len(insLoadRSP))})
	effects = Annotate(mkStep(t, 5, insLoadRSP, lstar+0x80, onStack, back), c)
	expectEffects(t, effects, note(KindGS, "user RSP restored"))
}

// TestGSAccessWithUserBase checks a kernel GS access while the user's GS
// base is active (a swapgs skipped), against a per-CPU base learnt earlier
// or a per-CPU region from the symbols.
func TestGSAccessWithUserBase(t *testing.T) {
	region := []Region{{Name: "percpu", Kind: RegionPerCPU, Start: percpu, End: percpu + 0x2000}}
	learnt := &Fact{Value: percpu, Known: ^uint64(0), Source: SourceInferred, Step: 1}
	// In the kernel, but the swapgs was skipped: GS still holds the user base.
	userGS := with(entered, regs{x86.RIP: lstar + 3})
	kernelGS := with(swapped, regs{x86.RIP: lstar + 3})
	tests := []struct {
		name    string
		regions []Region
		fact    *Fact
		before  regs
		want    *check
	}{
		{"per-CPU base learnt", nil, learnt, userGS, &check{KindGS, "is not the per-CPU base 0xffff888007c00000", Finding}},
		{"per-CPU region known", region, nil, userGS, &check{KindGS, `is not in the per-CPU area "percpu" [0xffff888007c00000, 0xffff888007c02000)`, Finding}},
		{"nothing known of the per-CPU area", nil, nil, userGS, nil},
		{"kernel base active", region, learnt, kernelGS, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Context{Regions: tt.regions, Knowledge: NewKnowledge()}
			c.Knowledge.PerCPU = tt.fact
			effects := Annotate(mkStep(t, 2, insSaveRSP, lstar+3, tt.before, with(tt.before, regs{x86.RIP: lstar + 12})), c)
			if tt.want == nil {
				expectNoFinding(t, effects)
				return
			}
			expectEffects(t, effects, *tt.want)
		})
	}
}

func TestFSGSBase(t *testing.T) {
	fsgs := uint64(0x3006b0 | x86.CR4FSGSBASE)
	before := with(user, regs{x86.CR4: fsgs, x86.RAX: 0x7f0000001000})
	tests := []struct {
		name          string
		code          []byte
		before, after regs
		checks        []check
		clean         bool
	}{
		{"wrgsbase", insWrgsbase, before, with(before, regs{x86.GSBase: 0x7f0000001000}),
			[]check{ok(KindGS, "gs_base = 0x7f0000001000: written from rax")}, true},
		{"wrgsbase did not write", insWrgsbase, before, before,
			[]check{finding(KindGS, "gs_base = 0x0, expected 0x7f0000001000")}, false},
		{"wrgsbase with CR4.FSGSBASE clear", insWrgsbase, with(before, regs{x86.CR4: 0x3006b0}), with(before, regs{x86.CR4: 0x3006b0, x86.GSBase: 0x7f0000001000}),
			[]check{finding(KindGS, "CR4.FSGSBASE is clear: wrgsbase should have raised #UD")}, false},
		{"rdgsbase", insRdgsbase, with(before, regs{x86.GSBase: 0x1234}), with(before, regs{x86.GSBase: 0x1234, x86.RAX: 0x1234}),
			[]check{ok(KindGS, "rax = 0x1234: the gs base read without rdmsr")}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			effects := Annotate(mkStep(t, 1, tt.code, userRIP, tt.before, with(tt.after, regs{x86.RIP: userRIP + 5})), &Context{})
			expectEffects(t, effects, tt.checks...)
			if tt.clean {
				expectNoFinding(t, effects)
			} else {
				expectFinding(t, effects)
			}
		})
	}
}

func TestPerCPUUnderTSS(t *testing.T) {
	// The teaching kernel's TSS is the first part of its per-CPU area: the
	// smallest region at the GS base is the TSS, but the base is still the
	// per-CPU area's.
	const base = 0xffffffff8023f000
	c := &Context{Regions: []Region{
		{Name: "percpu", Kind: RegionPerCPU, Start: base, End: base + 0x2000},
		{Name: "tss", Kind: RegionTSS, Start: base, End: base + 0x68},
	}}
	if r, _ := c.RegionOf(base); r.Kind != RegionTSS {
		t.Fatalf("RegionOf = %+v, want the TSS", r)
	}
	r, ok := c.RegionOfKind(base, RegionPerCPU)
	if !ok || r.Name != "percpu" {
		t.Fatalf("RegionOfKind = %+v, %v", r, ok)
	}
	if _, ok := c.RegionOfKind(base+0x3000, RegionPerCPU); ok {
		t.Error("an address past the per-CPU area was placed in it")
	}
}

// TestReturnGS checks the GS base left active by a return to user mode: the
// user's is fine, the per-CPU area's is a missing swapgs on the way out.
func TestReturnGS(t *testing.T) {
	percpuRegion := []Region{{Name: "cpu0", Kind: RegionPerCPU, Start: percpu, End: percpu + 0x20000}}
	// kernelRet is the state before the return, after the exit swapgs.
	kernelRet := with(kernel, regs{x86.RCX: userRIP, x86.R11: 0x246, x86.RSP: userRSP, x86.GSBase: 0, x86.KernelGSBase: percpu})
	back := with(user, regs{x86.RIP: userRIP, x86.RCX: userRIP, x86.R11: 0x246})
	tests := []struct {
		name          string
		regions       []Region
		known         bool // the per-CPU base learnt from an earlier swapgs
		ins           []byte
		before, after regs
		want          []check
		clean         bool
	}{
		{name: "sysret after swapgs", regions: percpuRegion, ins: insSysretq, before: kernelRet, after: back, clean: true},
		{
			name: "sysret without swapgs, per-CPU region known", regions: percpuRegion, ins: insSysretq,
			before: with(kernelRet, regs{x86.GSBase: percpu, x86.KernelGSBase: 0}),
			after:  with(back, regs{x86.GSBase: percpu, x86.KernelGSBase: 0}),
			want:   []check{finding(KindGS, `back in user mode with gs_base 0xffff888007c00000, the per-CPU area "cpu0": the way out skipped swapgs`)},
		},
		{
			name: "sysret without swapgs, per-CPU base learnt", known: true, ins: insSysretq,
			before: with(kernelRet, regs{x86.GSBase: percpu, x86.KernelGSBase: 0}),
			after:  with(back, regs{x86.GSBase: percpu, x86.KernelGSBase: 0}),
			want:   []check{finding(KindGS, "k_gs_base (0x0) holds the user's")},
		},
		{name: "per-CPU base unknown: nothing to compare", ins: insSysretq,
			before: with(kernelRet, regs{x86.GSBase: percpu, x86.KernelGSBase: 0}),
			after:  with(back, regs{x86.GSBase: percpu, x86.KernelGSBase: 0}), clean: true},
		{name: "a kernel-to-kernel step is not a return", regions: percpuRegion, ins: insPopRBX,
			before: kernel, after: with(kernel, regs{x86.RIP: lstar + 0x11, x86.RSP: kernel[x86.RSP] + 8}), clean: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Context{Regions: tt.regions}
			if tt.known {
				c.Knowledge = NewKnowledge()
				c.Knowledge.PerCPU = &Fact{Value: percpu, Known: ^uint64(0), Source: SourceInferred, Step: 1, How: "test"}
			}
			effects := Annotate(mkStep(t, 80, tt.ins, lstar+0x40, tt.before, tt.after), c)
			expectEffects(t, effects, tt.want...)
			for _, e := range effects {
				if e.Kind == KindGS && e.Verdict == Finding && tt.clean {
					t.Errorf("unexpected GS finding: %s", e.Text)
				}
			}
			if !tt.clean {
				expectFinding(t, effects)
			}
		})
	}
}

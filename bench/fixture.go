package bench

import (
	"context"
	"fmt"

	"github.com/sctrace/sctrace/accel"
	"github.com/sctrace/sctrace/qemu"
)

// stecklina is the source of the bare round-trip anchors.
const stecklina = "J. Stecklina, KVM guest on a Skylake Xeon E3-1270 v5, empty handler"

// guestSeries lists what the teaching kernel is expected to measure, in
// the order it measures them, with what each round trip is and the
// published figure to compare it with.
var guestSeries = []struct {
	mech, path, label string
	anchor            *Anchor
}{
	{"vdso", "full", "vDSO-style read of a kernel-shared page, no entry", nil},
	{"syscall", "full", "syscall + sysretq, full entry path", &Anchor{1000, "a mitigated Linux getpid, order of magnitude"}},
	{"int80", "full", "int 0x80 + iretq, full entry path", nil},
	{"sysenter", "full", "sysenter + sysexitq, full entry path", nil},
	{"callgate", "full", "call gate + lretq, full entry path", nil},
	{"ud2", "full", "ud2 (#UD) + iretq, full entry path", nil},
	{"syscall", "bare", "syscall + sysretq, empty handler", &Anchor{76, stecklina}},
	{"int80", "bare", "int 0x80 + iretq, empty handler", &Anchor{614, stecklina}},
	{"sysenter", "bare", "sysenter + sysexitq, empty handler", &Anchor{73, stecklina}},
	{"callgate", "bare", "call gate + lretq, empty handler", &Anchor{456, stecklina}},
	{"ud2", "bare", "ud2 (#UD) + iretq, empty handler", nil},
	{"syscall", "+swapgs", "bare + swapgs in and out", nil},
	{"syscall", "+cr3", "+ CR3 switch to kernel tables and back", nil},
	{"syscall", "+stack", "+ kernel stack switch (via trampoline)", nil},
	{"syscall", "+regs", "+ save and restore of pt_regs", nil},
	{"pagefault", "full", "store to a fresh page: #PF, page mapped, iretq, store again", nil},
	{"irq", "full", "timer interrupt at CPL 3: handler and iretq, as the gap it leaves in a user loop", nil},
	{"int3", "full", "int3 (#BP, a trap) + iretq to the next instruction", nil},
	{"gpfault", "full", "hlt at CPL 3 (#GP(0), a fault) + iretq past the hlt", nil},
}

// BreakdownPaths is the order in which the syscall breakdown adds one part
// of the entry path at a time. CR3 comes before the stack switch because
// the kernel stack is not mapped in the user page tables; "full" adds the
// call into C and the SYSRET checks.
var BreakdownPaths = []string{"bare", "+swapgs", "+cr3", "+stack", "+regs", "full"}

// chooseAccel picks the accelerator for timing: KVM where it works.
func (cfg Config) chooseAccel(ctx context.Context) (accel.Choice, error) {
	return accel.Choose(ctx, cfg.Accel, accel.Bench, accel.CheckerFor(cfg.KVMCheck, cfg.QEMU))
}

// kvmVerdict says what is known of KVM here for the environment block:
// the functional check's verdict when it ran (it did for any request but
// tcg), else what the device check said.
func (cfg Config) kvmVerdict(ctx context.Context, device string) string {
	if cfg.Accel == accel.TCG {
		return device + " (not checked further: --accel tcg)"
	}
	if v := accel.CheckerFor(cfg.KVMCheck, cfg.QEMU).CheckKVM(ctx); v.OK {
		return "works: " + v.Reason
	}
	return "does not work here (the accelerator line says why)"
}

func runFixture(ctx context.Context, cfg Config, env *Environment) *TargetResult {
	tr := &TargetResult{Name: TargetFixture, Title: "Teaching kernel under QEMU"}
	total := len(guestSeries)
	done := 0
	if cfg.Progress != nil {
		cfg.Progress(Progress{Target: TargetFixture, Total: total, Label: "booting the teaching kernel"})
	}
	choice, err := cfg.chooseAccel(ctx)
	var run *GuestRun
	if err == nil {
		env.KVM = cfg.kvmVerdict(ctx, env.KVM)
		run, err = RunGuest(ctx, GuestConfig{
			Kernel: cfg.Kernel, KernelPath: cfg.KernelPath, QEMU: cfg.QEMU,
			Accel: choice.Name, AccelNote: choice.Note, CPU: cfg.CPU, Iters: cfg.Iters,
			OnSeries: func(s *GuestSeries) {
				done++
				if cfg.Progress != nil {
					cfg.Progress(Progress{Target: TargetFixture, Done: min(done, total), Total: total, Label: s.Mech + " " + s.Path})
				}
			},
		})
	}
	if run != nil {
		tr.Elapsed = Duration(run.Elapsed)
		tr.Interrupted = run.Interrupted
		env.Accel, env.AccelNote, env.GuestCPUModel = run.Accel, run.AccelNote, run.CPU
		env.QEMUCommand = run.CommandLine
		if run.Output != nil && run.Output.CPU != nil {
			env.Guest = run.Output.CPU
		}
	} else {
		// QEMU never started: still say what would have been used.
		if choice, aerr := cfg.chooseAccel(ctx); aerr == nil {
			env.Accel, env.AccelNote = choice.Name, choice.Note
		}
		env.GuestCPUModel = cfg.CPU
		if env.GuestCPUModel == "" {
			env.GuestCPUModel = qemu.DefaultCPU
		}
	}
	if err != nil {
		tr.Error = err.Error()
	}
	var out *GuestOutput
	if run != nil {
		out = run.Output
	}
	tr.Series = fixtureSeries(out, tr.Interrupted, tr.Error)
	env.GuestTSCGranularity = rawGranularity(tr.Series)
	tr.Title += " (" + env.Accel + ")"
	tr.Notes = fixtureNotes(env, cfg.Iters)
	tr.Emulated = env.Guest != nil && env.Guest.TCG() || env.Guest == nil && env.Accel == "tcg"
	return tr
}

// fixtureSeries turns the guest's output into series, in the expected
// order, with the ones the guest did not report marked not measured.
func fixtureSeries(out *GuestOutput, interrupted bool, runErr string) []*Series {
	var list []*Series
	seen := map[string]bool{}
	for _, g := range guestSeries {
		s := &Series{Mech: g.mech, Path: g.path, Label: g.label, Anchor: g.anchor}
		seen[g.mech+" "+g.path] = true
		var gs *GuestSeries
		if out != nil {
			gs = out.Find(g.mech, g.path)
		}
		fillFromGuest(s, gs, out, interrupted, runErr)
		list = append(list, s)
	}
	if out != nil {
		for _, gs := range out.Series {
			if seen[gs.Mech+" "+gs.Path] {
				continue
			}
			s := &Series{Mech: gs.Mech, Path: gs.Path, Label: gs.Mech + " " + gs.Path}
			fillFromGuest(s, gs, out, interrupted, runErr)
			list = append(list, s)
		}
	}
	return list
}

func fillFromGuest(s *Series, gs *GuestSeries, out *GuestOutput, interrupted bool, runErr string) {
	switch {
	case gs == nil && interrupted:
		s.Status, s.Reason = StatusNotMeasured, "interrupted before the guest measured it"
		return
	case gs == nil && runErr != "":
		s.Status, s.Reason = StatusNotMeasured, "the guest run failed"
		return
	case gs == nil && out != nil && out.Done:
		s.Status, s.Reason = StatusNotMeasured, "the teaching kernel's bench mode does not measure this path"
		return
	case gs == nil:
		s.Status, s.Reason = StatusNotMeasured, "the guest did not report it"
		return
	case gs.Status == "unsupported" && s.Mech == "sysenter":
		s.Status, s.Reason = StatusNotMeasured, "sysenter raises #UD in 64-bit mode on this guest CPU (AMD vendor); use an Intel vendor in -cpu"
		return
	case gs.Status != "":
		s.Status, s.Reason = StatusNotMeasured, "the guest reported status="+gs.Status
		return
	}
	g := gs.Summary
	s.Guest = &g
	s.Baseline = g.Baseline
	s.Samples = gs.Samples
	if !gs.Complete() {
		s.Status = StatusPartial
		s.Reason = fmt.Sprintf("interrupted: %d of %d samples", len(gs.Samples), g.N)
	}
	summarizeSeries(s)
	if gs.Complete() {
		if err := gs.Check(); err != nil {
			s.GuestMismatch = err.Error()
		}
	}
}

func fixtureNotes(env *Environment, iters int) []string {
	notes := []string{
		fmt.Sprintf("%d samples per series after a 100-call warm-up; each window is lfence;rdtsc .. %s, and the median of the same window around an empty call is subtracted.", iters, guestTimer(env)),
		"pagefault times the store into a page that is not mapped (the handler maps a zeroed one, iretq runs the store again); the page is given back by a system call outside the window, so each sample faults on a fresh page, and the base is the same store to the mapped page.",
		"irq cannot be called, it arrives: each sample arms the PIT for about 840 µs (outside the window) and spins reading the TSC until the handler has counted the interrupt; the sample is the gap between the two readings around it (delivery, handler, iretq), and the base is that loop's gap with no interrupt.",
	}
	switch {
	case env.Guest != nil && env.Guest.TCG():
		notes = append(notes, "The guest sees hypervisor signature TCGTCGTCGTCG (CPUID 0x40000000): these numbers are the cost of QEMU emulating each instruction, not hardware cost. The ranking is not the hardware's either: TCG flushes its software TLB on every CR3 write (the breakdown shows it), so the full paths are dominated by the CR3 switch. The irq series also holds QEMU's own work to deliver the interrupt and to emulate the handler's port writes to the 8259 (both under QEMU's global lock, which its main loop shares), and that varies widely from one interrupt to the next.")
	case env.Guest != nil && env.Guest.Hypervisor == "none":
		notes = append(notes, "The guest sees no hypervisor signature.")
	case env.Guest != nil:
		notes = append(notes, fmt.Sprintf("The guest sees hypervisor signature %q (CPUID 0x40000000): hardware-assisted virtualization, so exits to the hypervisor (sysenter on an AMD host, for one) are part of the cost.", env.Guest.Hypervisor))
	}
	if env.TSC.MHz > 0 {
		notes = append(notes, fmt.Sprintf("ns assume the guest TSC runs at the host's %.1f MHz: QEMU's TCG (without -icount) answers rdtsc from the host's TSC plus an offset, and KVM keeps the host rate unless told otherwise.", env.TSC.MHz))
	}
	return notes
}

func guestTimer(env *Environment) string {
	if env.Guest != nil && env.Guest.Timer == "rdtsc" {
		return "lfence;rdtsc (no RDTSCP in the guest CPU)"
	}
	return "rdtscp;lfence"
}

// rawGranularity returns the greatest common divisor of every raw timing
// (sample plus the baseline subtracted from it) of the series.
func rawGranularity(list []*Series) int64 {
	var g int64
	for _, s := range list {
		if s.Guest == nil {
			continue
		}
		g = gcdInt(g, s.Baseline)
		for _, v := range s.Samples {
			g = gcdInt(g, v+s.Baseline)
		}
	}
	return g
}

func gcdInt(a, b int64) int64 {
	a, b = abs(a), abs(b)
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

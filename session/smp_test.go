package session

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/linux"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// TestLinuxSMPPerCPU boots Linux 6.1 and 6.12, each on QEMU 7.2 and 10.0,
// with two vCPUs, pins /init to one vCPU with isolcpus= (the scheduler
// moves init off the isolated CPUs), and records getpid there. The trace
// must follow that vCPU, and its per-CPU accesses must resolve against
// that vCPU's own per-CPU area: the kernel GS base must equal
// __per_cpu_offset[cpu] read from guest memory, the store of the user RSP
// must land in that area's cpu_tss_rw.sp2 and be named so, and the two
// vCPUs' areas and TSSs must differ; the header must give the other
// vCPU's kernel GS base as its own __per_cpu_offset entry. The other vCPU, which QEMU keeps
// stopped while the followed one steps, must be where it was at the start
// when the trace ends: idle=poll keeps an idle vCPU executing (a halted
// one would prove nothing).
func TestLinuxSMPPerCPU(t *testing.T) {
	for _, series := range []string{"6.1", "6.12"} {
		t.Run(series, func(t *testing.T) {
			kernel := testenv.LinuxKernel(t, series)
			qemus := []struct{ name, bin string }{{"7.2", ""}, {"10.0", testenv.QEMU10(t)}}
			for _, q := range qemus {
				t.Run("qemu"+q.name, func(t *testing.T) {
					gsOf := map[int]uint64{}
					trOf := map[int]uint64{}
					for cpu := range 2 {
						t.Run(fmt.Sprintf("cpu%d", cpu), func(t *testing.T) {
							gs, tr := traceOnCPU(t, q.bin, kernel, cpu)
							gsOf[cpu], trOf[cpu] = gs, tr
						})
					}
					if len(gsOf) == 2 && gsOf[0] == gsOf[1] {
						t.Errorf("both vCPUs have the per-CPU area at %#x", gsOf[0])
					}
					if len(trOf) == 2 && trOf[0] == trOf[1] {
						t.Errorf("both vCPUs have their TSS at %#x", trOf[0])
					}
				})
			}
		})
	}
}

// traceOnCPU records getpid with /init pinned to cpu and checks the
// trace's per-CPU names; it returns the vCPU's kernel GS base and TR base.
func traceOnCPU(t *testing.T, qemuBin, kernel string, cpu int) (uint64, uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	s, err := StartLinux(ctx, LinuxOptions{
		Options: Options{QEMU: qemuBin, Accel: "tcg", Mechanism: mechanism.Syscall, SMP: 2, Append: fmt.Sprintf("isolcpus=%d idle=poll", 1-cpu)},
		Kernel:  kernel,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
		os.RemoveAll(s.tmp)
	}()
	tr, err := s.RoundTrip(ctx, mechanism.Syscall)
	if err != nil {
		t.Fatal(err)
	}
	checkLinuxTrace(t, tr, []string{"entry_SYSCALL_64"}, "sysretq", []byte{0x0f, 0x05})
	h := tr.Header
	if h.CPU == nil || h.CPU.Index != cpu || h.CPU.Count != 2 {
		t.Fatalf("header names %v as the vCPU followed; /init runs on vCPU %d of 2", h.CPU, cpu)
	}

	// The source of truth: the kernel's own __per_cpu_offset[cpu].
	tab := s.linux.tab
	offs, ok := tab.Addr("__per_cpu_offset")
	if !ok {
		t.Fatal("kallsyms has no __per_cpu_offset")
	}
	b, err := kernelMemory{s.Target}.ReadMemory(ctx, offs+8*uint64(cpu), 8)
	if err != nil {
		t.Fatal(err)
	}
	want := binary.LittleEndian.Uint64(b)
	if uint64(h.CPU.GSBase) != want {
		t.Errorf("header: kernel GS base %#x, __per_cpu_offset[%d] = %#x", uint64(h.CPU.GSBase), cpu, want)
	}
	if kgs := tr.Step(0).Regs.Val(x86.KernelGSBase); kgs != want {
		t.Errorf("KERNEL_GS_BASE at the syscall %#x, __per_cpu_offset[%d] = %#x", kgs, cpu, want)
	}

	// Regions: the per-CPU area starts at this vCPU's offset.
	start := uint64(0)
	if ps, ok := tab.Find("__per_cpu_start"); ok && linux.IsPerCPU(ps) {
		start = ps.Addr
	}
	var area, tss *annotate.Region
	for i, r := range h.Regions {
		switch {
		case r.Kind == annotate.RegionPerCPU:
			area = &h.Regions[i]
		case r.Kind == annotate.RegionTSS && strings.HasPrefix(r.Name, "cpu_entry_area TSS"):
			tss = &h.Regions[i]
		}
	}
	if area == nil || area.Start != want+start {
		t.Errorf("per-CPU region %+v, want it at __per_cpu_offset[%d] + __per_cpu_start = %#x", area, cpu, want+start)
	}
	if tss == nil || h.Sys == nil || tss.Start != h.Sys.TR().Base {
		t.Fatalf("TSS region %+v: want it at this vCPU's TR base", tss)
	}

	// The entry code parks the user RSP in this vCPU's cpu_tss_rw.sp2.
	rw, ok := tab.Find("cpu_tss_rw")
	if !ok || !linux.IsPerCPU(rw) {
		t.Fatal("kallsyms has no per-CPU cpu_tss_rw")
	}
	sp2 := want + rw.Addr + x86.TSSRSP2
	found := false
	for i := range tr.Len() {
		st := tr.Step(i)
		inst, _, err := annotate.Decode(st.Bytes)
		if err != nil || inst.Op != x86asm.MOV {
			continue
		}
		m, ok := inst.Args[0].(x86asm.Mem)
		if !ok || m.Segment != x86asm.GS || m.Index != 0 {
			continue
		}
		// 6.1 addresses per-CPU data absolutely (%gs:0x6014), 6.12
		// relative to the next instruction (%gs:cpu_tss_rw+0x14(%rip)).
		ea := uint64(m.Disp)
		switch m.Base {
		case 0:
		case x86asm.RIP:
			ea += uint64(st.RIP) + uint64(inst.Len)
		default:
			continue
		}
		if st.Regs.Val(x86.GSBase)+ea != sp2 {
			continue
		}
		found = true
		named := false
		for _, e := range st.Effects {
			named = named || strings.Contains(e.Text, "cpu_tss_rw.sp2")
		}
		if !named {
			t.Errorf("step %d (%s) stores to %#x, this vCPU's cpu_tss_rw.sp2, but no effect names it", i, st.Intel, sp2)
		}
	}
	if !found {
		t.Errorf("no step stores to %#x, vCPU %d's cpu_tss_rw.sp2 (__per_cpu_offset[%d] + cpu_tss_rw + sp2)", sp2, cpu, cpu)
	}

	// The other vCPU stayed stopped while this one stepped.
	if len(h.OtherCPUs) != 1 || h.OtherCPUs[0].Index != 1-cpu {
		t.Fatalf("other vCPUs %+v: want vCPU %d", h.OtherCPUs, 1-cpu)
	}
	o := h.OtherCPUs[0]
	if o.Start.Err != "" || o.Start != o.End {
		t.Errorf("vCPU %d at start %s, at end %s: it should not move while vCPU %d steps", o.Index, o.Start, o.End, cpu)
	}
	// And the header gives the other vCPU's own per-CPU area.
	b, err = kernelMemory{s.Target}.ReadMemory(ctx, offs+8*uint64(o.Index), 8)
	if err != nil {
		t.Fatal(err)
	}
	if theirs := binary.LittleEndian.Uint64(b); uint64(o.Start.GSBase) != theirs || theirs == want {
		t.Errorf("vCPU %d: kernel GS base %#x in the header, __per_cpu_offset[%d] = %#x (vCPU %d's: %#x)", o.Index, uint64(o.Start.GSBase), o.Index, theirs, cpu, want)
	}
	t.Logf("vCPU %d: GS base %#x, TR base %#x, %d steps; vCPU %d at %s", cpu, want, tss.Start, tr.Len(), o.Index, o.Start)
	return want, tss.Start
}

// TestFixtureSMPPerCPU traces the same syscall on the teaching kernel's
// CPU 0 and CPU 1 (cpu=1 wakes the second CPU and runs the program there).
// The expected per-CPU area of each comes from the ELF symbols: percpu
// and percpu_cpu1. The kernel GS base at the syscall must be that area,
// the entry code's store of the user RSP must land in that CPU's TSS.sp2
// (the TSS is the area's first field) and be named after that CPU's TSS,
// and the two areas must differ.
func TestFixtureSMPPerCPU(t *testing.T) {
	testenv.NeedQEMU(t)
	gsOf := map[int]uint64{}
	for cpu := range 2 {
		t.Run(fmt.Sprintf("cpu%d", cpu), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			s, err := StartFixture(ctx, Options{Accel: "tcg", Mechanism: mechanism.Syscall, SMP: 2, UserCPU: cpu})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			tr, err := s.RoundTrip(ctx, mechanism.Syscall)
			if err != nil {
				t.Fatal(err)
			}
			gsOf[cpu] = checkFixtureCPU(t, s, tr, cpu)
			h := tr.Header
			if len(h.OtherCPUs) != 1 || h.OtherCPUs[0].Index != 1-cpu || h.OtherCPUs[0].Moved() {
				t.Errorf("other vCPUs %+v: want vCPU %d, where it was at the start", h.OtherCPUs, 1-cpu)
			}
			t.Logf("vCPU %d: GS base %#x, %d steps; vCPU %d at %s", cpu, gsOf[cpu], tr.Len(), 1-cpu, h.OtherCPUs[0].Start)
		})
	}
	if len(gsOf) == 2 && gsOf[0] == gsOf[1] {
		t.Errorf("both CPUs have the per-CPU area at %#x", gsOf[0])
	}
}

// fixtureAreas are the teaching kernel's per-CPU areas, by CPU.
var fixtureAreas = []string{"percpu", "percpu_cpu1"}

// checkFixtureCPU checks a syscall round trip recorded on the teaching
// kernel's CPU cpu: the header follows that vCPU, its kernel GS base is
// that CPU's per-CPU area (the ELF symbol), and the entry code's store of
// the user RSP lands in that CPU's TSS.sp2 (the TSS is the area's first
// field) and is named after that TSS. It returns the GS base.
func checkFixtureCPU(t *testing.T, s *Session, tr *trace.Trace, cpu int) uint64 {
	t.Helper()
	area := fixtureAreas[cpu]
	want, ok := s.Symbols.Addr(area)
	if !ok {
		t.Fatalf("no %s symbol", area)
	}
	tss := strings.Replace(area, "percpu", "tss", 1)
	h := tr.Header
	if h.Stop != string(trace.StopUser) {
		t.Fatalf("stopped: %s", h.Stop)
	}
	if h.CPU == nil || h.CPU.Index != cpu || h.CPU.Count != 2 || uint64(h.CPU.GSBase) != want {
		t.Fatalf("header: followed %+v; want vCPU %d of 2 with GS base %s = %#x", h.CPU, cpu, area, want)
	}
	if kgs := tr.Step(0).Regs.Val(x86.KernelGSBase); kgs != want {
		t.Errorf("KERNEL_GS_BASE at the syscall %#x, want %s = %#x", kgs, area, want)
	}
	sp2 := want + x86.TSSRSP2
	found := false
	for i := range tr.Len() {
		st := tr.Step(i)
		inst, _, err := annotate.Decode(st.Bytes)
		if err != nil || inst.Op != x86asm.MOV {
			continue
		}
		m, ok := inst.Args[0].(x86asm.Mem)
		if !ok || m.Segment != x86asm.GS || st.Regs.Val(x86.GSBase)+uint64(m.Disp) != sp2 {
			continue
		}
		found = true
		name := strings.ReplaceAll(tss, "_", " ")
		named := false
		for _, e := range st.Effects {
			named = named || strings.Contains(e.Text, `TSS "`+name+`"`)
		}
		if !named {
			t.Errorf("step %d (%s) stores to %#x without naming the TSS %q: %+v", i, st.Intel, sp2, name, st.Effects)
		}
	}
	if !found {
		t.Errorf("no step stores to %#x, %s.sp2", sp2, tss)
	}
	return want
}

// TestFixtureBothCPUs runs the teaching kernel's program on both CPUs at
// once (cpu=both) and traces the same syscall on CPU 0 and on CPU 1
// (--on-cpu), round trip after round trip. Each trace must follow the CPU
// asked for, with its own per-CPU area and TSS (checkFixtureCPU; the two
// areas differ). The other vCPU, stopped by QEMU wherever it was (booting
// still, printing, in its own system call or in user mode), must be seen
// with its own per-CPU area (its kernel GS base is the other ELF symbol)
// and held still from the first step to the last (the header says so).
// And it runs its program too, between the traces: the count of system
// calls in its per-CPU area (the field do_syscall_64's incq %gs:N counts
// in, N read from the trace) must grow within 100 round trips.
// (Between two traces both vCPUs run only as long as the followed one
// takes from its sysretq to its next syscall, and QEMU then stops both:
// the other, whose thread has to wake up first, often gets a few
// translation blocks or none, and several round trips may see no call of
// its own; the bound allows for that.)
func TestFixtureBothCPUs(t *testing.T) {
	testenv.NeedQEMU(t)
	gsOf := map[int]uint64{}
	for cpu := range 2 {
		t.Run(fmt.Sprintf("cpu%d", cpu), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			s, err := StartFixture(ctx, Options{Accel: "tcg", Mechanism: mechanism.Syscall, SMP: 2, UserCPU: BothCPUs, OnCPU: &cpu})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			other, ok := s.Symbols.Addr(fixtureAreas[1-cpu])
			if !ok {
				t.Fatalf("no %s symbol", fixtureAreas[1-cpu])
			}
			const maxRounds = 100
			var counts []uint64
			for round := 0; round < maxRounds && (len(counts) < 2 || counts[len(counts)-1] == counts[0]); round++ {
				tr, err := s.RoundTrip(ctx, mechanism.Syscall)
				if err != nil {
					t.Fatal(err)
				}
				gsOf[cpu] = checkFixtureCPU(t, s, tr, cpu)
				h := tr.Header
				if len(h.OtherCPUs) != 1 || h.OtherCPUs[0].Index != 1-cpu {
					t.Fatalf("other vCPUs %+v: want vCPU %d", h.OtherCPUs, 1-cpu)
				}
				o := h.OtherCPUs[0]
				if o.Start.Err != "" || uint64(o.Start.GSBase) != other {
					t.Errorf("round %d: vCPU %d at %s with kernel GS base %#x; want its own area %s = %#x", round, o.Index, o.Start, uint64(o.Start.GSBase), fixtureAreas[1-cpu], other)
				}
				if o.Moved() {
					t.Errorf("round %d: vCPU %d moved while vCPU %d stepped: %s, then %s", round, o.Index, cpu, o.Start, o.End)
				}
				held := fmt.Sprintf("vCPU %d (thread %s): stopped in %s at %s, kernel GS base %#x, and held there from the first step to the last", o.Index, o.Thread, map[bool]string{true: "user mode", false: "the kernel"}[o.Start.CPL == 3], o.Start, other)
				if lines := h.CPULines(); len(lines) != 2 || lines[1] != held {
					t.Errorf("round %d: header lines %q, want the second %q", round, lines, held)
				}
				counts = append(counts, syscallCount(ctx, t, s, tr, other))
				t.Logf("round %d on vCPU %d: %d steps; %s; status %q", round, cpu, tr.Len(), h.CPULines()[1], h.OtherCPUsLabel())
			}
			if n := len(counts); n < 2 || counts[n-1] <= counts[0] {
				t.Errorf("vCPU %d's system-call count stayed %d over %d round trips on vCPU %d: it did not run its program", 1-cpu, counts[0], n, cpu)
			}
			t.Logf("vCPU %d's system-call count: %v", 1-cpu, counts)
		})
	}
	if len(gsOf) == 2 && gsOf[0] == gsOf[1] {
		t.Errorf("both CPUs have the per-CPU area at %#x", gsOf[0])
	}
}

// syscallCount reads the count of system calls in the per-CPU area at
// area: the field do_syscall_64 increments through GS (its incq %gs:N in
// tr gives N).
func syscallCount(ctx context.Context, t *testing.T, s *Session, tr *trace.Trace, area uint64) uint64 {
	t.Helper()
	for i := range tr.Len() {
		st := tr.Step(i)
		inst, _, err := annotate.Decode(st.Bytes)
		if err != nil || inst.Op != x86asm.INC || !strings.HasPrefix(st.Symbol, "do_syscall_64") {
			continue
		}
		m, ok := inst.Args[0].(x86asm.Mem)
		if !ok || m.Segment != x86asm.GS || m.Base != 0 {
			continue
		}
		b, err := kernelMemory{s.Target}.ReadMemory(ctx, area+uint64(m.Disp), 8)
		if err != nil {
			t.Fatal(err)
		}
		return binary.LittleEndian.Uint64(b)
	}
	t.Fatal("no incq through GS in do_syscall_64 in the trace")
	return 0
}

// TestLinuxSMPLogRecorders boots Linux 6.1 with two vCPUs for the
// recorders that may use QEMU's log (auto, the default, and log), as
// `sctrace run linux --smp 2 --trace` does, and records getpid. Under
// `-icount shift=0` Linux 6.1 never brings its second CPU up (it stops after
// "x86: Booting SMP configuration:"), so the guest must run without it and
// say so once where the log is used; the log then follows the one vCPU
// that made the call back to the instruction after the syscall.
func TestLinuxSMPLogRecorders(t *testing.T) {
	kernel := testenv.LinuxKernel(t, "6.1")
	// What the CLI gives each recorder unless told otherwise.
	logAfter := map[string]int{RecordAuto: DefaultLogAfter, RecordLog: 0}
	for _, rec := range []string{RecordAuto, RecordLog} {
		t.Run(rec, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
			defer cancel()
			s, err := StartLinux(ctx, LinuxOptions{
				Options:     Options{Accel: "tcg", Mechanism: mechanism.Syscall, SMP: 2, Record: rec, LogAfter: logAfter[rec]},
				Kernel:      kernel,
				BootTimeout: 200 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := s.Close(); err != nil {
					t.Error(err)
				}
				os.RemoveAll(s.tmp)
			}()
			if slices.Contains(s.QEMU.Args, "-icount") {
				t.Errorf("QEMU started with -icount on two vCPUs: %q", s.QEMU.Args)
			}
			var notices []string
			s.Notice = func(msg string) { notices = append(notices, msg) }
			// Without -icount the guest's timer follows the host's clock
			// and may interrupt a logged call: record again until a
			// round trip has none, as TestLogRecorderEquivalenceLinux does.
			var tr *trace.Trace
			for try := 1; ; try++ {
				tr, err = s.RoundTrip(ctx, mechanism.Syscall)
				if err != nil {
					t.Fatal(err)
				}
				if tr.Header.IRQs == 0 {
					break
				}
				t.Logf("try %d: %d interrupts taken (%d steps, %s); recording again", try, tr.Header.IRQs, tr.Len(), tr.Header.Stop)
				if try == 10 {
					t.Fatal("an interrupt in every one of 10 round trips")
				}
			}
			checkLinuxTrace(t, tr, []string{"entry_SYSCALL_64"}, "sysretq", []byte{0x0f, 0x05})
			if h := tr.Header; h.CPU == nil || h.CPU.Count != 2 {
				t.Errorf("header names %v as the vCPU followed; the guest has 2", h.CPU)
			}
			if rec == RecordLog {
				if got := tr.Header.RecorderOf(tr.Len() - 1); got != trace.RecorderLog {
					t.Errorf("last step recorded by %q, want the log", got)
				}
			}
			if len(notices) != 1 || notices[0] != noICountSMP {
				t.Errorf("notices %q, want once %q", notices, noICountSMP)
			}
		})
	}
}

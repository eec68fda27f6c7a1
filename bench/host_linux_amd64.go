//go:build linux && amd64

package bench

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"
)

const (
	hostBatch  = 500 // samples per batch; each batch gets its own baseline
	hostWarmup = 200 // untimed calls before each series

	nrGetpid64 = 39   // getpid, x86-64 ABI
	nrInvalid  = 1000 // no such system call: the kernel answers -ENOSYS
	nrGetpid32 = 20   // getpid, i386 ABI (int $0x80)

	clockMonotonic = 1
)

// hostMech is one host series: how to run n timed calls.
type hostMech struct {
	mech, path, label string
	anchor            *Anchor
	// setup checks the mechanism can run here and returns its loop, or
	// the reason it cannot.
	setup func(env *Environment) (func(out []int64, rdtscp bool), string)
}

var hostMechs = []hostMech{
	{"syscall", "getpid", "syscall getpid (39)", &Anchor{1000, "a mitigated Linux getpid, order of magnitude"},
		func(*Environment) (func([]int64, bool), string) {
			return func(out []int64, r bool) { loopSyscall(nrGetpid64, out, r) }, ""
		}},
	{"syscall", "invalid", "syscall 1000: no such call, -ENOSYS", nil,
		func(*Environment) (func([]int64, bool), string) {
			return func(out []int64, r bool) { loopSyscall(nrInvalid, out, r) }, ""
		}},
	{"int80", "getpid", "int $0x80 getpid (i386 ABI, 20)", nil, setupInt80},
	{"vdso", "clock_gettime", "vDSO clock_gettime(CLOCK_MONOTONIC), called from assembly", &Anchor{80, "vDSO clock_gettime, order of magnitude"}, setupVDSO},
}

func setupInt80(env *Environment) (func([]int64, bool), string) {
	if strings.HasPrefix(env.IA32Emulation, "off") {
		return nil, "not allowed by this kernel: IA-32 emulation " + env.IA32Emulation
	}
	var ret uintptr
	if err := faultGuard(func() { ret = int80Once(nrGetpid32) }); err != nil {
		env.IA32Emulation = "off: a guarded int $0x80 getpid raised SIGSEGV (#GP: no user gate at vector 0x80), although the configuration alone said " + env.IA32Emulation
		return nil, "not allowed by this kernel: int $0x80 raised SIGSEGV (#GP), caught and recovered"
	}
	env.IA32Emulation += "; a probe of int $0x80 getpid worked"
	if pid := syscall.Getpid(); ret != uintptr(pid) {
		return nil, fmt.Sprintf("int $0x80 getpid returned %#x, want %d", ret, pid)
	}
	return func(out []int64, r bool) { loopInt80(nrGetpid32, out, r) }, ""
}

func setupVDSO(*Environment) (func([]int64, bool), string) {
	fn, err := vdsoSymbol("__vdso_clock_gettime")
	if err != nil {
		return nil, err.Error()
	}
	return func(out []int64, r bool) { loopVDSO(fn, clockMonotonic, out, r) }, ""
}

// faultGuard runs f and turns a fault inside it (SIGSEGV or SIGBUS, as a
// #GP from a disallowed int $0x80 is delivered) into an error.
func faultGuard(f func()) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("SIGSEGV or SIGBUS, recovered as: %v", r)
		}
	}()
	f()
	return nil
}

func runHost(ctx context.Context, cfg Config, env *Environment) *TargetResult {
	start := time.Now()
	tr := &TargetResult{Name: TargetHost, Title: "This host, natively (" + env.HostKernel + ")"}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	if cfg.Progress != nil {
		cfg.Progress(Progress{Target: TargetHost, Total: len(hostMechs), Label: "calibrating the TSC"})
	}
	rdtscp := env.TSC.RDTSCP
	env.TSC.MHz, env.TSC.Source = calibrateTSC(100 * time.Millisecond)

	base := make([]int64, hostBatch)
	var gcd int64
	for i, m := range hostMechs {
		s := &Series{Mech: m.mech, Path: m.path, Label: m.label, Anchor: m.anchor}
		tr.Series = append(tr.Series, s)
		if ctx.Err() != nil {
			s.Status, s.Reason = StatusNotMeasured, "interrupted before it was measured"
			tr.Interrupted = true
			continue
		}
		loop, why := m.setup(env)
		if loop == nil {
			s.Status, s.Reason = StatusNotMeasured, why
			continue
		}
		loop(make([]int64, min(hostWarmup, cfg.Iters)), rdtscp)
		samples := make([]int64, 0, cfg.Iters)
		var baselines []int64
		for len(samples) < cfg.Iters {
			if ctx.Err() != nil {
				tr.Interrupted = true
				s.Status = StatusPartial
				s.Reason = fmt.Sprintf("interrupted: %d of %d samples", len(samples), cfg.Iters)
				break
			}
			n := min(hostBatch, cfg.Iters-len(samples))
			loopEmpty(base[:n], rdtscp)
			for _, v := range base[:n] {
				gcd = gcdInt(gcd, v)
			}
			sorted := slices.Clone(base[:n])
			slices.Sort(sorted)
			b := Percentile(sorted, 50)
			baselines = append(baselines, b)
			batch := samples[len(samples) : len(samples)+n]
			loop(batch, rdtscp)
			for j := range batch {
				batch[j] -= b
			}
			samples = samples[:len(samples)+n]
		}
		slices.Sort(baselines)
		if len(baselines) > 0 {
			s.Baseline = Percentile(baselines, 50)
		}
		s.Samples = samples
		summarizeSeries(s)
		if cfg.Progress != nil {
			cfg.Progress(Progress{Target: TargetHost, Done: i + 1, Total: len(hostMechs), Label: m.mech + " " + m.path})
		}
	}
	env.TSC.Granularity = gcd
	tr.Elapsed = Duration(time.Since(start))
	tr.Notes = []string{
		fmt.Sprintf("%d samples per series in batches of %d after %d untimed calls; each window is lfence;rdtsc .. %s, and the median of an empty window, measured before each batch, is subtracted. The goroutine is locked to its OS thread.",
			cfg.Iters, hostBatch, hostWarmup, map[bool]string{true: "rdtscp;lfence", false: "lfence;rdtsc"}[rdtscp]),
		"The vDSO's clock_gettime is found through AT_SYSINFO_EHDR and its dynamic symbol table, and called directly from assembly (not through Go's time.Now).",
	}
	if env.HostHypervisor {
		tr.Notes = append(tr.Notes, "This host is itself a virtual machine (CPUID hypervisor bit): its numbers include whatever the outer hypervisor adds.")
	}
	return tr
}

// calibrateTSC measures the TSC rate against CLOCK_MONOTONIC over d.
func calibrateTSC(d time.Duration) (mhz float64, source string) {
	t0, c0 := time.Now(), rdtsc()
	for time.Since(t0) < d {
		time.Sleep(d / 10)
	}
	c1, t1 := rdtsc(), time.Now()
	el := t1.Sub(t0)
	mhz = float64(c1-c0) / float64(el.Nanoseconds()) * 1000
	return mhz, fmt.Sprintf("calibrated against CLOCK_MONOTONIC over %v", el.Round(time.Millisecond))
}

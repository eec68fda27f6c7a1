// Package accel chooses the accelerator QEMU runs a guest with: TCG, QEMU's
// own instruction translator, or KVM, the host CPU's virtualisation.
//
// Tracing wants TCG: it is deterministic, and its gdbstub masks interrupts
// and timers while single-stepping (under KVM it can mask interrupts only
// where the host kernel has KVM_GUESTDBG_BLOCKIRQ, and timers never).
// Timing wants KVM, where the guest runs on the real CPU, but only where
// KVM actually works: /dev/kvm opening proves little (a nested or
// paravirtual KVM may boot a guest and then break it), so KVM is used only
// after the teaching kernel's selftest has passed under it in this process.
package accel

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/sctrace/sctrace/fixtures/kernel"
	"github.com/sctrace/sctrace/internal/scratch"
	"github.com/sctrace/sctrace/qemu"
)

// The accelerators, and the request that lets sctrace choose.
const (
	TCG  = "tcg"
	KVM  = "kvm"
	Auto = "auto"
)

// FlagUsage is the help text of every command's --accel flag.
const FlagUsage = "auto, tcg or kvm; auto: TCG to trace, KVM to bench when its selftest passes"

// Job is what the guest is run for; it decides what Auto means.
type Job int

const (
	// Trace is single-stepping: tracing, the TUI, lessons. Auto means TCG.
	Trace Job = iota
	// Bench is timing round trips. Auto means KVM when it works here.
	Bench
)

// Choice is the accelerator to use and why, in words for the user.
type Choice struct {
	Name string // TCG or KVM
	Note string // e.g. "tcg (auto: kvm present but its selftest failed: ...)"
}

// Verdict is the outcome of a check that KVM works.
type Verdict struct {
	OK     bool
	Reason string // what was seen: why it works, or why not
}

// Checker checks whether KVM works on this host.
type Checker interface {
	CheckKVM(ctx context.Context) Verdict
}

// CheckerFunc adapts a function to Checker.
type CheckerFunc func(ctx context.Context) Verdict

// CheckKVM calls f.
func (f CheckerFunc) CheckKVM(ctx context.Context) Verdict { return f(ctx) }

// CheckerFor returns check, or, when it is nil, the Selftest of the QEMU
// binary qemu ("" finds it on $PATH): what a caller that lets its own
// caller inject a check uses by default.
func CheckerFor(check Checker, qemu string) Checker {
	if check != nil {
		return check
	}
	return Selftest{QEMU: qemu}
}

// Choose turns an accelerator request (Auto or "", TCG, KVM) into the one
// to use for job. KVM, asked for or chosen by Auto for Bench, is used only
// when check says it works; asked for and not working, it is an error that
// says why.
func Choose(ctx context.Context, req string, job Job, check Checker) (Choice, error) {
	switch req {
	case TCG:
		return Choice{TCG, "tcg (requested)"}, nil
	case KVM:
		v := check.CheckKVM(ctx)
		if !v.OK {
			return Choice{}, fmt.Errorf("--accel kvm: KVM does not work on this host: %s; use --accel tcg", v.Reason)
		}
		return Choice{KVM, "kvm (requested; " + v.Reason + ")"}, nil
	case "", Auto:
		if job == Trace {
			return Choice{TCG, "tcg (auto: tracing runs under TCG, deterministic, with interrupts and timers masked while stepping)"}, nil
		}
		v := check.CheckKVM(ctx)
		if v.OK {
			return Choice{KVM, "kvm (auto: " + v.Reason + ")"}, nil
		}
		return Choice{TCG, "tcg (auto: " + v.Reason + ")"}, nil
	default:
		return Choice{}, fmt.Errorf("unknown accelerator %q (want auto, tcg or kvm)", req)
	}
}

// SelftestTimeout bounds the KVM check: the selftest takes well under a
// second where KVM works.
const SelftestTimeout = 8 * time.Second

// Selftest is the Checker sctrace uses: /dev/kvm must open and answer, and
// the bundled teaching kernel's selftest (every entry mechanism, checked
// by the kernel itself) must pass under -accel kvm within SelftestTimeout.
// Verdicts are kept for the life of the process, per QEMU binary.
type Selftest struct {
	QEMU string // QEMU binary; "" finds it on $PATH
}

var (
	cacheMu sync.Mutex
	cache   = map[string]Verdict{}
)

// CheckKVM runs the check once per QEMU binary in this process.
func (s Selftest) CheckKVM(ctx context.Context) Verdict {
	cacheMu.Lock()
	defer cacheMu.Unlock()
	if v, ok := cache[s.QEMU]; ok {
		return v
	}
	v := s.check(ctx)
	if ctx.Err() == nil {
		cache[s.QEMU] = v
	}
	return v
}

func (s Selftest) check(ctx context.Context) Verdict {
	if ok, why := qemu.KVMUsable(); !ok {
		return Verdict{Reason: "kvm not usable: " + why}
	}
	tmp, err := scratch.Dir("kvmcheck-")
	if err != nil {
		return Verdict{Reason: "kvm check: " + err.Error()}
	}
	defer os.RemoveAll(tmp)
	path, err := kernel.WriteTemp(tmp)
	if err != nil {
		return Verdict{Reason: "kvm check: " + err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, SelftestTimeout)
	defer cancel()
	var serial qemu.Output
	inst, err := qemu.Start(ctx, qemu.Config{
		Binary: s.QEMU, Kernel: path, Append: "selftest", Accel: KVM,
		ExitDevice: true, Serial: &serial,
	})
	if err != nil {
		return Verdict{Reason: "kvm present but QEMU could not start under it: " + err.Error() + pvmNote()}
	}
	defer inst.Stop()
	exit, err := inst.WaitContext(ctx)
	out := serial.String()
	switch {
	case err == nil && exit.DebugExit && exit.Code == kernel.ExitSuccess && strings.Contains(out, "selftest pass"):
		return Verdict{OK: true, Reason: "its selftest passed here"}
	case err != nil:
		return Verdict{Reason: fmt.Sprintf("kvm present but the teaching kernel's selftest did not finish under it within %v%s%s", SelftestTimeout, consoleTail(out), pvmNote())}
	default:
		return Verdict{Reason: fmt.Sprintf("kvm present but its selftest failed (%s): %s%s", exit, failure(out), pvmNote())}
	}
}

// failure picks the lines that say what went wrong from the teaching
// kernel's console: the unexpected exception and the registers at it.
func failure(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "kernel: unexpected exception"):
			keep = append(keep, strings.TrimPrefix(l, "kernel: "))
		case strings.HasPrefix(l, "rip "):
			f := strings.Fields(l)
			if len(f) >= 4 {
				keep = append(keep, "rip "+f[1]+" cs "+f[3])
			}
		case strings.Contains(l, "FAIL") || strings.HasPrefix(l, "selftest") && strings.Contains(l, "fail"):
			keep = append(keep, l)
		}
	}
	if len(keep) == 0 {
		return "no report on the console" + consoleTail(out)
	}
	return strings.Join(keep, ", ")
}

func consoleTail(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) == 0 || lines[0] == "" {
		return " (nothing on the console)"
	}
	return fmt.Sprintf(" (console ends: %q)", strings.TrimSpace(lines[len(lines)-1]))
}

// pvmNote names the host's KVM when it is PVM (the kvm_pvm module), which
// runs only guest kernels built for it (CONFIG_PVM_GUEST): the teaching
// kernel and distribution kernels are not.
func pvmNote() string {
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil {
		return "; this host's /dev/kvm is PVM (module kvm_pvm), a software hypervisor that runs only guest kernels built for it"
	}
	return ""
}

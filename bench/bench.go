// Package bench measures the round-trip cost of each way into the x86-64
// kernel: in the teaching kernel under QEMU (int 0x80, a call gate,
// sysenter, syscall, #UD, and a vDSO-style read with no entry at all, each
// as the bare hardware round trip and as the full entry path, plus a
// step-by-step breakdown of the syscall path), and natively on a Linux
// host (syscall getpid, an invalid system call number, int $0x80 getpid
// and the vDSO's clock_gettime).
//
// Every timed window is opened with LFENCE; RDTSC and closed with RDTSCP;
// LFENCE. The median of the same window around nothing (or, in the guest,
// around an empty call) is subtracted from each sample. Statistics are
// computed here from the raw samples; the teaching kernel's own summary is
// kept beside them for comparison.
//
// Numbers taken under QEMU's TCG emulator are the cost of emulating the
// instructions, not of the hardware; Report says so wherever they appear.
package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sctrace/sctrace/accel"
)

// Target names accepted by Config.Targets.
const (
	TargetFixture = "fixture" // the teaching kernel under QEMU
	TargetHost    = "host"    // this machine's kernel, natively
)

// Status of a Series.
const (
	StatusOK          = "ok"           // measured in full
	StatusPartial     = "partial"      // interrupted: some samples
	StatusNotMeasured = "not measured" // Reason says why
)

// ReportVersion is the version of the JSON form of Report.
const ReportVersion = 1

// Config describes a bench run.
type Config struct {
	Targets []string // TargetFixture, TargetHost; empty means both
	Iters   int      // samples per series; 0 means DefaultIters
	// Kernel is the teaching kernel's ELF image (or KernelPath a file
	// holding it), needed for TargetFixture.
	Kernel     []byte
	KernelPath string
	QEMU       string // QEMU binary; "" finds it on $PATH
	Accel      string // "", "auto", "tcg" or "kvm" (see package accel: auto is KVM where it works)
	CPU        string // guest -cpu; "" means qemu.DefaultCPU
	// KVMCheck decides whether KVM works; nil runs the teaching kernel's
	// selftest under it (accel.Selftest).
	KVMCheck accel.Checker
	// Progress, when set, is told how far the run has got.
	Progress func(Progress)
}

// DefaultIters is the number of samples per series when Config.Iters is 0.
const DefaultIters = 2000

// Progress reports how many series of a target are done.
type Progress struct {
	Target string
	Done   int
	Total  int
	Label  string // the series just finished
}

// Anchor is a published figure to compare a series with.
type Anchor struct {
	Ticks  float64 `json:"ticks"`
	Source string  `json:"source"`
}

// Series is the measurement of one mechanism and path.
type Series struct {
	Mech  string `json:"mech"`  // vdso, syscall, int80, sysenter, callgate, ud2
	Path  string `json:"path"`  // guest: full, bare, +swapgs, ...; host: getpid, invalid, clock_gettime
	Label string `json:"label"` // what the round trip is, in words
	// Status is StatusOK, StatusPartial or StatusNotMeasured.
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	// Baseline is the median of the empty timed window, in TSC ticks,
	// already subtracted from every sample.
	Baseline int64    `json:"baseline_ticks"`
	Stats    *Summary `json:"stats,omitempty"`
	// Guest is the summary the teaching kernel printed, for comparison.
	Guest *GuestSummary `json:"guest_summary,omitempty"`
	// GuestMismatch says how the guest's summary differs from Stats; empty
	// when they agree (see GuestSeries.Check).
	GuestMismatch string  `json:"guest_mismatch,omitempty"`
	Anchor        *Anchor `json:"anchor,omitempty"`
	Samples       []int64 `json:"samples,omitempty"`
}

// Measured reports whether s has statistics.
func (s *Series) Measured() bool { return s.Stats != nil }

// TargetResult is what one target measured.
type TargetResult struct {
	Name  string `json:"name"`  // TargetFixture or TargetHost
	Title string `json:"title"` // for the table heading
	// Emulated is true for numbers taken under TCG: the cost of
	// emulation, not of the hardware.
	Emulated bool `json:"emulated"`
	// Notes say how the numbers were taken and what they mean.
	Notes []string `json:"notes,omitempty"`
	// Error is set when the target could not run at all.
	Error       string    `json:"error,omitempty"`
	Interrupted bool      `json:"interrupted,omitempty"`
	Series      []*Series `json:"series"`
	Elapsed     Duration  `json:"elapsed"`
}

// Find returns the series for mech and path, or nil.
func (t *TargetResult) Find(mech, path string) *Series {
	for _, s := range t.Series {
		if s.Mech == mech && s.Path == path {
			return s
		}
	}
	return nil
}

// Report is the outcome of Run: the environment and every target's series.
type Report struct {
	Version     int             `json:"version"`
	Started     time.Time       `json:"started"`
	Iters       int             `json:"iters"`
	Env         *Environment    `json:"environment"`
	Targets     []*TargetResult `json:"targets"`
	Interrupted bool            `json:"interrupted,omitempty"`
}

// Duration is a time.Duration that is written to JSON as a string.
type Duration time.Duration

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(time.Duration(d).Round(time.Millisecond).String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}

// Run measures the configured targets in turn and returns the report. A
// target that cannot run (QEMU missing, not Linux) is recorded in its
// TargetResult.Error and does not stop the others; Run fails only when
// nothing at all was measured. When ctx ends, Run returns what was
// measured so far with Interrupted set.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Iters == 0 {
		cfg.Iters = DefaultIters
	}
	if cfg.Iters < 1 {
		return nil, fmt.Errorf("iterations %d: want at least 1", cfg.Iters)
	}
	targets := cfg.Targets
	if len(targets) == 0 {
		targets = []string{TargetFixture, TargetHost}
	}
	for _, t := range targets {
		if t != TargetFixture && t != TargetHost {
			return nil, fmt.Errorf("unknown target %q (want %s or %s)", t, TargetFixture, TargetHost)
		}
	}
	if cfg.Iters > MaxGuestIters && contains(targets, TargetFixture) {
		return nil, fmt.Errorf("iterations %d: the teaching kernel takes at most %d", cfg.Iters, MaxGuestIters)
	}
	if cfg.Accel == accel.KVM && contains(targets, TargetFixture) {
		// Asked for KVM: stop before measuring anything when it does not
		// work here, as every other command does.
		if _, err := cfg.chooseAccel(ctx); err != nil {
			return nil, err
		}
	}
	rep := &Report{Version: ReportVersion, Started: time.Now().UTC(), Iters: cfg.Iters}
	rep.Env = CollectEnvironment(ctx, cfg.QEMU)
	var errs []error
	for _, t := range targets {
		if ctx.Err() != nil {
			rep.Interrupted = true
			rep.Targets = append(rep.Targets, &TargetResult{Name: t, Title: t, Interrupted: true, Error: "not run: interrupted"})
			continue
		}
		var tr *TargetResult
		switch t {
		case TargetFixture:
			tr = runFixture(ctx, cfg, rep.Env)
		case TargetHost:
			tr = runHost(ctx, cfg, rep.Env)
		}
		rep.Targets = append(rep.Targets, tr)
		if tr.Error != "" {
			errs = append(errs, fmt.Errorf("%s: %s", t, tr.Error))
		}
		if tr.Interrupted {
			rep.Interrupted = true
		}
	}
	if len(errs) == len(targets) && !rep.Interrupted {
		return rep, errors.Join(errs...)
	}
	return rep, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// summarizeSeries fills s.Stats from s.Samples, or marks s not measured.
func summarizeSeries(s *Series) {
	if len(s.Samples) == 0 {
		s.Status = StatusNotMeasured
		if s.Reason == "" {
			s.Reason = "no samples"
		}
		return
	}
	st, err := Summarize(s.Samples)
	if err != nil {
		s.Status, s.Reason = StatusNotMeasured, err.Error()
		return
	}
	s.Stats = &st
	if s.Status == "" {
		s.Status = StatusOK
	}
}

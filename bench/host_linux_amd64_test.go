//go:build linux && amd64

package bench

import (
	"context"
	"strings"
	"testing"
)

// TestRunHost takes a few samples of every host mechanism and checks the
// shape of the result, not the timings.
func TestRunHost(t *testing.T) {
	env := CollectEnvironment(context.Background(), "")
	tr := runHost(context.Background(), Config{Iters: 50}, env)
	if tr.Error != "" {
		t.Fatal(tr.Error)
	}
	if len(tr.Series) != len(hostMechs) {
		t.Fatalf("%d series, want %d", len(tr.Series), len(hostMechs))
	}
	for _, s := range tr.Series {
		switch {
		case s.Measured():
			if s.Status != StatusOK || s.Stats.N != 50 || len(s.Samples) != 50 {
				t.Errorf("%s %s: status %q, N %d", s.Mech, s.Path, s.Status, s.Stats.N)
			}
		case s.Mech == "syscall":
			t.Errorf("%s %s not measured: %s", s.Mech, s.Path, s.Reason)
		case s.Reason == "":
			t.Errorf("%s %s not measured, with no reason", s.Mech, s.Path)
		}
	}
	if s := tr.Find("int80", "getpid"); !s.Measured() && !strings.Contains(s.Reason, "not allowed") {
		t.Errorf("int80 reason %q, want it to say the kernel does not allow it", s.Reason)
	}
	if env.TSC.MHz <= 0 || !strings.Contains(env.TSC.Source, "calibrated") {
		t.Errorf("TSC %+v: want a calibrated frequency", env.TSC)
	}
}

func TestRunHostInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tr := runHost(ctx, Config{Iters: 50}, &Environment{})
	if !tr.Interrupted {
		t.Error("Interrupted = false after a cancelled context")
	}
	for _, s := range tr.Series {
		if s.Status != StatusNotMeasured || !strings.Contains(s.Reason, "interrupted") {
			t.Errorf("%s %s: status %q, reason %q", s.Mech, s.Path, s.Status, s.Reason)
		}
	}
}

func TestFaultGuard(t *testing.T) {
	if err := faultGuard(func() {}); err != nil {
		t.Errorf("faultGuard(no fault) = %v", err)
	}
	// int $0x81 has no user gate: #GP, delivered as SIGSEGV.
	if err := faultGuard(int81Once); err == nil {
		t.Error("faultGuard(int $0x81) = nil, want the fault as an error")
	}
}

func TestVDSOSymbol(t *testing.T) {
	if addr, err := vdsoSymbol("__vdso_clock_gettime"); err != nil || addr == 0 {
		t.Errorf("vdsoSymbol(__vdso_clock_gettime) = %#x, %v", addr, err)
	}
	if _, err := vdsoSymbol("__vdso_no_such_function"); err == nil || !strings.Contains(err.Error(), "no function") {
		t.Errorf("vdsoSymbol(missing) error %v", err)
	}
}

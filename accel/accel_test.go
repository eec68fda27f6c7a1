package accel

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/qemu"
)

// fixed is a Checker with a given verdict that counts its calls.
type fixed struct {
	v     Verdict
	calls int
}

func (f *fixed) CheckKVM(context.Context) Verdict { f.calls++; return f.v }

// TestChoose covers each request and job against the three kinds of host:
// KVM that works, KVM present whose selftest fails (as on a host whose
// /dev/kvm is a nested or paravirtual KVM that breaks the guest), and no
// KVM at all.
func TestChoose(t *testing.T) {
	hosts := map[string]Verdict{
		"usable":  {OK: true, Reason: "its selftest passed here"},
		"failing": {Reason: "kvm present but its selftest failed (guest exit code 3 (qemu status 7)): unexpected exception #PF page fault (vector 14), error code 0x15, in user mode"},
		"absent":  {Reason: "kvm not usable: /dev/kvm: no such file or directory"},
	}
	tests := []struct {
		host, req string
		job       Job
		want      string // accelerator, or "" for an error
		checked   bool   // whether the KVM check must run
		noteHas   string
	}{
		{"usable", "", Trace, TCG, false, "auto: tracing runs under TCG"},
		{"usable", Auto, Trace, TCG, false, "auto"},
		{"usable", TCG, Trace, TCG, false, "requested"},
		{"usable", KVM, Trace, KVM, true, "selftest passed"},
		{"usable", Auto, Bench, KVM, true, "selftest passed"},
		{"usable", TCG, Bench, TCG, false, "requested"},
		{"failing", Auto, Trace, TCG, false, "auto"},
		{"failing", Auto, Bench, TCG, true, "selftest failed"},
		{"failing", KVM, Trace, "", true, "KVM does not work on this host"},
		{"failing", KVM, Bench, "", true, "#PF"},
		{"absent", Auto, Bench, TCG, true, "/dev/kvm"},
		{"absent", KVM, Trace, "", true, "/dev/kvm: no such file"},
		{"absent", "hvf", Trace, "", false, "unknown accelerator"},
	}
	for _, tt := range tests {
		t.Run(tt.host+"/"+tt.req+"/"+[]string{"trace", "bench"}[tt.job], func(t *testing.T) {
			c := &fixed{v: hosts[tt.host]}
			got, err := Choose(context.Background(), tt.req, tt.job, c)
			if tt.want == "" {
				if err == nil || !strings.Contains(err.Error(), tt.noteHas) {
					t.Fatalf("Choose = %+v, %v; want an error with %q", got, err, tt.noteHas)
				}
			} else if err != nil || got.Name != tt.want || !strings.HasPrefix(got.Note, tt.want+" (") || !strings.Contains(got.Note, tt.noteHas) {
				t.Fatalf("Choose = %+v, %v; want %s with a note saying %q", got, err, tt.want, tt.noteHas)
			}
			if (c.calls > 0) != tt.checked {
				t.Errorf("KVM checked %d times, want checked: %v", c.calls, tt.checked)
			}
		})
	}
}

func TestFailure(t *testing.T) {
	// The console of the teaching kernel's selftest under a KVM that
	// breaks it (observed on a host whose /dev/kvm is kvm_pvm).
	out := `kernel: sctrace teaching kernel, cpu vendor GenuineIntel, command line "selftest"

kernel: unexpected exception #PF page fault (vector 14), error code 0x15, in user mode
  rip ffffffff80202000  cs  0033  rflags 00010006  rsp 00000000007ffda0  ss 002b
kernel: stopping with exit code 3
`
	want := "unexpected exception #PF page fault (vector 14), error code 0x15, in user mode, rip ffffffff80202000 cs 0033"
	if got := failure(out); got != want {
		t.Errorf("failure = %q\nwant      %q", got, want)
	}
	if got := failure("kernel: sctrace teaching kernel\n"); !strings.Contains(got, "no report") || !strings.Contains(got, "sctrace teaching kernel") {
		t.Errorf("failure with no report = %q", got)
	}
}

// TestSelftest runs the real check on this host. What it must say depends
// on the host, so each outcome is checked for what it claims: usable only
// where /dev/kvm answers, and a reason either way.
func TestSelftest(t *testing.T) {
	testenv.NeedQEMU(t)
	v := Selftest{}.CheckKVM(context.Background())
	t.Logf("KVM on this host: ok=%v: %s", v.OK, v.Reason)
	if v.Reason == "" {
		t.Error("the verdict gives no reason")
	}
	if devOK, why := qemu.KVMUsable(); !devOK {
		if v.OK || !strings.Contains(v.Reason, why) {
			t.Errorf("/dev/kvm not usable (%s), yet the verdict is ok=%v: %s", why, v.OK, v.Reason)
		}
	}
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil && v.OK {
		t.Logf("KVM is PVM here and the selftest passed: the note about PVM in fixtures/kernel/README.md no longer holds for this host")
	}
	if again := (Selftest{}).CheckKVM(context.Background()); again != v {
		t.Errorf("a second check in the same process gave %+v, want the cached %+v", again, v)
	}
}

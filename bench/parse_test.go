package bench

import (
	"os"
	"strings"
	"testing"
)

// captureFile is the serial output of a real run of the teaching kernel:
// qemu-system-x86_64 -accel tcg -cpu qemu64,vendor=GenuineIntel ...
// -append 'bench iters=100'.
const captureFile = "testdata/kernel-bench-tcg-iters100.txt"

func TestParseCapture(t *testing.T) {
	f, err := os.Open(captureFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out, err := ParseGuest(f)
	if err != nil {
		t.Fatal(err)
	}
	if !out.Done {
		t.Error("Done = false, want true")
	}
	wantCPU := GuestCPU{Vendor: "GenuineIntel", Hypervisor: "TCGTCGTCGTCG", Timer: "rdtsc"}
	if out.CPU == nil || *out.CPU != wantCPU {
		t.Errorf("CPU = %+v, want %+v", out.CPU, wantCPU)
	}
	if !out.CPU.TCG() {
		t.Error("TCG() = false for a TCG signature")
	}
	// Every series the bench command expects is there, measured in full.
	for _, g := range guestSeries {
		s := out.Find(g.mech, g.path)
		if s == nil {
			t.Errorf("mech=%s path=%s missing", g.mech, g.path)
			continue
		}
		if s.Status != "" || len(s.Samples) != 100 || s.Summary.N != 100 || !s.Complete() {
			t.Errorf("mech=%s path=%s: status %q, %d samples, n=%d", g.mech, g.path, s.Status, len(s.Samples), s.Summary.N)
		}
	}
	if len(out.Series) != len(guestSeries) {
		t.Errorf("%d series, want %d", len(out.Series), len(guestSeries))
	}
	// Our statistics on the raw samples agree with the guest's own summary.
	for _, s := range out.Series {
		if err := s.Check(); err != nil {
			t.Error(err)
		}
	}
}

func TestParseStatusLine(t *testing.T) {
	out, err := ParseGuest(strings.NewReader("bench mech=sysenter path=full status=unsupported\nbench done\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := out.Find("sysenter", "full")
	if s == nil || s.Status != "unsupported" || !s.Complete() || !out.Done {
		t.Errorf("got %+v, done %v", s, out.Done)
	}
}

func TestParseTruncated(t *testing.T) {
	in := "bench mech=syscall path=full n=4 min=1 median=2 p90=3 p99=3 mean=2 baseline=5\n" +
		"samples mech=syscall path=full part=1/2 1 2\n"
	var seen []string
	p := Parser{OnSeries: func(s *GuestSeries) { seen = append(seen, s.Mech) }}
	for line := range strings.Lines(in) {
		if err := p.Line(strings.TrimSuffix(line, "\n")); err != nil {
			t.Fatal(err)
		}
	}
	out := p.Output()
	s := out.Find("syscall", "full")
	if out.Done || s == nil || s.Complete() || len(s.Samples) != 2 || len(seen) != 0 {
		t.Errorf("done %v, series %+v, completed %v", out.Done, s, seen)
	}
}

func TestParseErrors(t *testing.T) {
	const head = "bench mech=syscall path=full n=2 min=1 median=1 p90=2 p99=2 mean=1 baseline=5\n"
	tests := []struct {
		name, in, want string
	}{
		{"unknown bench line", "bench frobnicate\n", "unknown bench line"},
		{"bad cpu line", "bench cpu vendor=X\n", "want 3 fields"},
		{"misnamed field", "bench mech=syscall path=full n=2 low=1 median=1 p90=2 p99=2 mean=1 baseline=5\n", `field 4 is "low=1", want min=`},
		{"bad n", "bench mech=syscall path=full n=x min=1 median=1 p90=2 p99=2 mean=1 baseline=5\n", `n="x"`},
		{"bad median", "bench mech=syscall path=full n=2 min=1 median=1.5 p90=2 p99=2 mean=1 baseline=5\n", `median="1.5": not an integer`},
		{"samples before bench line", "samples mech=syscall path=full 1 2\n", "before its bench line"},
		{"bad sample", head + "samples mech=syscall path=full part=1/1 1 zz\n", `sample "zz"`},
		{"too many samples", head + "samples mech=syscall path=full 1 2 3\n", "more than n=2"},
		{"part out of order", head + "samples mech=syscall path=full part=2/2 1\n", "out of order"},
		{"bad part", head + "samples mech=syscall path=full part=3/2 1\n", "want I/K"},
		{"duplicate series", head + "samples mech=syscall path=full 1 2\n" + head, "reported twice"},
		{"next series too early", head + "bench mech=int80 path=full status=error\n", "before mech=syscall path=full has all its samples"},
		{"done too early", head + "bench done\n", "has 0 of 2 samples"},
		{"line after done", "bench done\nbench done\n", "after \"bench done\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseGuest(strings.NewReader("kernel: boot noise is ignored\n" + tt.in))
			if err == nil {
				t.Fatalf("no error, want one containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "bench output line") {
				t.Errorf("error %q, want it to name the line and contain %q", err, tt.want)
			}
		})
	}
}

package walkthrough

import (
	"fmt"
	"text/template"

	"github.com/sctrace/sctrace/bench"
)

// Data is what a lesson's template reads: round-trip costs measured on
// this machine when the lesson runs.
type Data struct {
	// Bench is the teaching kernel's bench report, nil when not measured.
	Bench *bench.Report
	// BenchErr says why Bench is nil or incomplete.
	BenchErr error
}

// fixture returns the teaching kernel's results, or nil.
func (d *Data) fixture() *bench.TargetResult {
	if d == nil || d.Bench == nil {
		return nil
	}
	for _, t := range d.Bench.Targets {
		if t.Name == bench.TargetFixture && t.Error == "" {
			return t
		}
	}
	return nil
}

func (d *Data) median(mech, path string) (int64, bool) {
	t := d.fixture()
	if t == nil {
		return 0, false
	}
	s := t.Find(mech, path)
	if s == nil || !s.Measured() {
		return 0, false
	}
	return s.Stats.Median, true
}

// notMeasured is what a cost reads as when nothing was measured.
func (d *Data) notMeasured() string {
	if d != nil && d.BenchErr != nil {
		return fmt.Sprintf("(not measured: %v)", d.BenchErr)
	}
	return "(measured when the lesson runs)"
}

func (d *Data) funcs() template.FuncMap {
	return template.FuncMap{
		// cost "int80": the median of the full round trip, in TSC ticks.
		"cost": func(mech string) string {
			if v, ok := d.median(mech, "full"); ok {
				return ticks(v)
			}
			return d.notMeasured()
		},
		// bare "int80": the median of the bare hardware round trip.
		"bare": func(mech string) string {
			if v, ok := d.median(mech, "bare"); ok {
				return ticks(v)
			}
			return d.notMeasured()
		},
		// times "int80" "syscall": how many times the first full round
		// trip costs the second, e.g. "1.2×".
		"times": func(a, b string) string {
			va, ok1 := d.median(a, "full")
			vb, ok2 := d.median(b, "full")
			if !ok1 || !ok2 || vb == 0 {
				return d.notMeasured()
			}
			return fmt.Sprintf("%.1f×", float64(va)/float64(vb))
		},
		// baretimes "int80" "syscall": the same for the bare round trips.
		"baretimes": func(a, b string) string {
			va, ok1 := d.median(a, "bare")
			vb, ok2 := d.median(b, "bare")
			if !ok1 || !ok2 || vb == 0 {
				return d.notMeasured()
			}
			return fmt.Sprintf("%.1f×", float64(va)/float64(vb))
		},
		// measured: where the numbers come from, in one sentence.
		"measured": func() string {
			t := d.fixture()
			if t == nil {
				return "No costs were measured " + d.notMeasured() + "."
			}
			s := fmt.Sprintf("The costs were measured on this machine just before the lesson started: median of %d round trips each, in TSC ticks.", d.Bench.Iters)
			if t.Emulated {
				s += " QEMU ran the teaching kernel under TCG, its emulator, so they are the cost of emulating each instruction, not of the hardware; the order of magnitude between the bare and the full paths is what carries over."
			}
			return s
		},
	}
}

// ticks formats a tick count with thousands separators.
func ticks(v int64) string {
	s := fmt.Sprint(v)
	out := ""
	for len(s) > 3 {
		out = "," + s[len(s)-3:] + out
		s = s[:len(s)-3]
	}
	return s + out + " ticks"
}

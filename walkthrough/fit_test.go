package walkthrough

import (
	"context"
	"github.com/sctrace/sctrace/internal/testenv"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/session"
	"github.com/sctrace/sctrace/trace"
)

// recordLesson boots what lesson l needs and records its round trips.
func recordLesson(t *testing.T, l *Lesson) []*trace.Trace {
	t.Helper()
	testenv.NeedQEMU(t)
	kernel := ""
	if l.Target == TargetLinux {
		kernel = testenv.LinuxKernel(t, "6.1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := Open(ctx, l, kernel, session.Options{Accel: "tcg"})
	if err != nil {
		t.Fatalf("boot for lesson %s: %v", l.Name(), err)
	}
	defer s.Close()
	traces, err := Record(ctx, l, s)
	if err != nil {
		t.Fatalf("%v\nserial:\n%s", err, s.Serial)
	}
	return traces
}

// TestLessonsFitTheirTraces records the real round trips of every lesson
// (the teaching kernel, its bug variant and Linux under QEMU) and checks
// that every event a lesson names occurs, in order, and that every
// question's example answer is right at its step. A kernel change that
// breaks a lesson fails here.
func TestLessonsFitTheirTraces(t *testing.T) {
	lessons, err := All(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lessons {
		t.Run(l.Name(), func(t *testing.T) {
			traces := recordLesson(t, l)
			if err := Check(l, traces); err != nil {
				t.Fatal(err)
			}
			for i, seg := range l.Segments() {
				b := Bind(l, seg, traces[i])
				for j, k := range seg.Steps {
					t.Logf("round trip %d step %q at trace step %d (shown at %d)", i+1, l.Steps[k].ID, b.Index[j], b.Pos[j])
				}
			}
		})
	}
}

// TestBugLessonFindings checks what lesson 5 relies on: on the kernel
// booted with bug=int80-noswapgs, annotate's findings point at the
// defect: the iretq that returns with the per-CPU GS base, and then the
// first per-CPU access of the next entry.
func TestBugLessonFindings(t *testing.T) {
	l, err := Get(5, nil)
	if err != nil {
		t.Fatal(err)
	}
	traces := recordLesson(t, l)
	var found []string
	for _, tr := range traces {
		for _, s := range tr.All() {
			for _, e := range s.Effects {
				if e.Verdict == annotate.Finding {
					found = append(found, s.Symbol+": "+e.Text)
				}
			}
		}
	}
	want := []string{"int80_iretq_insn: back in user mode with gs_base", "entry_INT80"}
	if len(found) < 2 || !strings.HasPrefix(found[0], want[0]) || !strings.Contains(found[1], "missing swapgs") || !strings.HasPrefix(found[1], want[1]) {
		t.Fatalf("findings %q; want the iretq at int80_iretq_insn, then a GS access in entry_INT80", found)
	}
	var before *trace.Step
	for i, s := range traces[0].All() {
		if strings.HasPrefix(s.Symbol, "int80_iretq_insn") {
			before = traces[0].Step(i - 1)
		}
	}
	if before == nil || before.Symbol != "int80_exit_swapgs" || before.Mnemonic != "nop" {
		t.Errorf("the step before iretq is %+v; want the NOP at int80_exit_swapgs", before)
	}
}

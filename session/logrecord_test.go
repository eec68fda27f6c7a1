package session

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/fixtures/linuxinit"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// useLog makes s record with QEMU's instruction log.
func useLog(s *Session) *trace.LogRecorder {
	l := trace.NewLogRecorder(s.Recorder)
	s.rec = l
	return l
}

// withoutIRQ returns the events of s other than interrupts taken while
// recording, which only a recorder that lets them in has.
func withoutIRQ(ev []annotate.Event) []annotate.Event {
	return slices.DeleteFunc(slices.Clone(ev), func(e annotate.Event) bool { return e == annotate.EventIRQ })
}

func findings(s *trace.Step) []string {
	var out []string
	for _, e := range s.Effects {
		if e.Verdict == annotate.Finding {
			out = append(out, e.Text)
		}
	}
	return out
}

// traceDiffs lists every difference between a stepped trace and a logged
// one in what both must agree on: the RIP sequence, the bytes and
// mnemonics, every register of every state, the registers each step
// changed, the events (interrupts taken while logging aside) and the
// findings, and the final state. effects lists, apart, the effects that
// differ (memory the log does not capture changes what some say).
func traceDiffs(step, log *trace.Trace) (diffs, effects []string) {
	add := func(format string, args ...any) { diffs = append(diffs, fmt.Sprintf(format, args...)) }
	if step.Len() != log.Len() {
		add("%d steps stepped, %d logged", step.Len(), log.Len())
	}
	for i := range min(step.Len(), log.Len()) {
		a, b := step.Step(i), log.Step(i)
		if a.RIP != b.RIP || string(a.Bytes) != string(b.Bytes) || a.Mnemonic != b.Mnemonic {
			add("step %d: %s %#x % x stepped, %s %#x % x logged", i, a.Mnemonic, uint64(a.RIP), []byte(a.Bytes), b.Mnemonic, uint64(b.RIP), []byte(b.Bytes))
			continue
		}
		if d := stateDiff(a.Regs, b.Regs); d != "" {
			add("step %d (%s at %s): before: %s", i, a.Mnemonic, a.Symbol, d)
		}
		if !slices.Equal(a.Changed, b.Changed) {
			add("step %d (%s): changed %v stepped, %v logged", i, a.Mnemonic, a.Changed, b.Changed)
		}
		if ea, eb := withoutIRQ(a.Events), withoutIRQ(b.Events); !slices.Equal(ea, eb) {
			add("step %d (%s): events %v stepped, %v logged", i, a.Mnemonic, ea, eb)
		}
		if fa, fb := findings(a), findings(b); !slices.Equal(fa, fb) {
			add("step %d (%s): findings %q stepped, %q logged", i, a.Mnemonic, fa, fb)
		}
		ta, tb := effectTexts(a), effectTexts(b)
		for _, t := range ta {
			if !slices.Contains(tb, t) {
				effects = append(effects, fmt.Sprintf("step %d (%s): stepped only: %s", i, a.Mnemonic, t))
			}
		}
		for _, t := range tb {
			if !slices.Contains(ta, t) {
				effects = append(effects, fmt.Sprintf("step %d (%s): logged only: %s", i, a.Mnemonic, t))
			}
		}
	}
	if d := stateDiff(step.Final, log.Final); d != "" {
		add("final state: %s", d)
	}
	return diffs, effects
}

func effectTexts(s *trace.Step) []string {
	var out []string
	for _, e := range s.Effects {
		if e.Event != annotate.EventIRQ {
			out = append(out, e.Text)
		}
	}
	return out
}

// stateDiff says which registers differ between two states, in value or
// in being known.
func stateDiff(a, b *x86.State) string {
	if a == nil || b == nil {
		if a != b {
			return fmt.Sprintf("one state missing (%v, %v)", a != nil, b != nil)
		}
		return ""
	}
	var out string
	for r := x86.Reg(0); r < x86.NumRegs; r++ {
		va, oka := a.Get(r)
		vb, okb := b.Get(r)
		if oka != okb || va != vb {
			out += fmt.Sprintf(" %s %#x/%v vs %#x/%v", r, va, oka, vb, okb)
		}
	}
	return out
}

// TestLogRecorderEquivalence records the first round trip of each of the
// teaching kernel's five mechanisms twice, on two guests booted alike, on
// QEMU 7.2 and 10.0: by single steps and from QEMU's instruction log. The
// traces must agree in every step's address, bytes, registers before it,
// registers changed, events and findings, and in the final state; every
// difference is listed.
func TestLogRecorderEquivalence(t *testing.T) {
	for _, q := range []struct {
		name string
		bin  func(testing.TB) string
	}{{"7.2", func(testing.TB) string { return "" }}, {"10.0", testenv.QEMU10}} {
		for _, tt := range fixtureMechanisms {
			t.Run(q.name+"/"+string(tt.mech), func(t *testing.T) {
				bin := q.bin(t)
				ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
				defer cancel()
				stepped := startFixture(t, Options{QEMU: bin, Mechanism: tt.mech})
				st, err := stepped.RoundTrip(ctx, tt.mech)
				if err != nil {
					t.Fatal(err)
				}
				logged := startFixture(t, Options{QEMU: bin, Mechanism: tt.mech})
				useLog(logged)
				lt, err := logged.RoundTrip(ctx, tt.mech)
				if err != nil {
					t.Fatal(err)
				}
				checkFixtureRoundTrip(t, logged, lt, tt.mech, tt.first, tt.entry, tt.last)
				checkEquivalent(t, st, lt)
			})
		}
	}
}

// checkEquivalent fails with every difference between a stepped trace and
// a logged one (see traceDiffs), and logs the effects that differ.
func checkEquivalent(t *testing.T, st, lt *trace.Trace) {
	t.Helper()
	if got := lt.Header.RecorderOf(0); got != trace.RecorderLog {
		t.Errorf("step 0 recorded by %q, want %q", got, trace.RecorderLog)
	}
	diffs, effects := traceDiffs(st, lt)
	for _, d := range diffs {
		t.Error(d)
	}
	for _, e := range effects {
		t.Log(e)
	}
	t.Logf("%d steps stepped, %d logged; %d differences, %d effects differ (memory the log lacks)", st.Len(), lt.Len(), len(diffs), len(effects))
}

// TestLogRecorderEquivalencePaused compares, as the two tests above do,
// the stepping recorder's round trip with the log recorder's when the log
// is turned into steps while the guest runs, from the first instruction on
// (PauseAfter of a nanosecond): the guest is then paused at every first
// read of a page of guest memory, as it is in long runs. The path is
// Linux 6.1's read of 64 KiB from /init's file, long enough for the guest
// to be still running when the first pages are asked for, on a guest
// started as for `--record auto` (guest time follows the instructions).
// The pauses must leave the trace as it is without them. With guest time
// following the instructions, the same timer interrupt comes in every
// logged read; its handler is left out of the trace, and the path is the
// same as stepping's.
func TestLogRecorderEquivalencePaused(t *testing.T) {
	kernel := testenv.LinuxKernel(t, "6.1")
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Second)
	defer cancel()
	o := LinuxOptions{Options: Options{Accel: "tcg", Record: RecordAuto, Syscall: "read"}, Kernel: kernel, Mode: linuxinit.Read}
	m, err := o.ChooseMechanism("", false)
	if err != nil {
		t.Fatal(err)
	}
	s, err := StartLinux(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The first read warms the page cache; the next ones take one path.
	for range 2 {
		if err := s.ToEntry(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	s.rec = s.Recorder
	st, err := s.Record(ctx)
	if err != nil {
		t.Fatal(err)
	}
	useLog(s).PauseAfter = time.Nanosecond
	if err := s.ToEntry(ctx, m); err != nil {
		t.Fatal(err)
	}
	lt, err := s.Record(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkEquivalent(t, st, lt)
	sp := lt.Header.Recorders
	detail := sp[len(sp)-1].Detail
	if p := pausesRE.FindStringSubmatch(detail); p == nil || p[1] == "0" {
		t.Errorf("the guest was not paused to read memory: %s", detail)
	}
	t.Log(detail)
}

// pausesRE finds in a log span's Detail how often the guest was paused.
var pausesRE = regexp.MustCompile(`paused ([0-9]+) times to read memory`)

// TestLogRecorderEquivalenceLinux records getpid by syscall and by
// int $0x80 on Debian's Linux 6.1 and 6.12 (pti=on), first by single steps
// (interrupts masked), then from the log on the same guest, and compares
// the two (see traceDiffs). The log cannot mask interrupts: a timer tick
// in the window runs its handler (left out of the trace) and may make the
// kernel reschedule on the way out, a longer path that stepping never
// sees. Such a recording is not compared: the round trip is recorded
// again, up to ten times, and each retry is logged.
func TestLogRecorderEquivalenceLinux(t *testing.T) {
	for _, series := range []string{"6.1", "6.12"} {
		for _, m := range []mechanism.Mechanism{mechanism.Syscall, mechanism.Int80} {
			t.Run(series+"/"+string(m), func(t *testing.T) {
				kernel := testenv.LinuxKernel(t, series)
				ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
				defer cancel()
				s, err := StartLinux(ctx, LinuxOptions{Options: Options{Accel: "tcg", Mechanism: m}, Kernel: kernel})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				st, err := s.RoundTrip(ctx, m)
				if err != nil {
					t.Fatal(err)
				}
				useLog(s)
				for try := 1; ; try++ {
					lt, err := s.RoundTrip(ctx, m)
					if err != nil {
						t.Fatal(err)
					}
					if lt.Header.IRQs == 0 {
						checkEquivalent(t, st, lt)
						return
					}
					t.Logf("try %d: %d interrupts taken while logging (%d steps, %s); recording again", try, lt.Header.IRQs, lt.Len(), lt.Header.Stop)
					if try == 10 {
						t.Fatal("an interrupt in every one of 10 logged round trips")
					}
				}
			})
		}
	}
}

// benchRecorders measures, on one guest, three ways through the same
// round trip by m, each in instructions per second of recording (the run
// to the entry not counted): the stub's raw `s`+`g` with nothing else
// (the ceiling of any stepping recorder), the stepping recorder, and the
// log recorder.
func benchRecorders(b *testing.B, s *Session, m mechanism.Mechanism) {
	ctx := context.Background()
	stepper := s.Recorder
	logger := trace.NewLogRecorder(s.Recorder)
	defer func() { s.rec = stepper }()
	toEntry := func(b *testing.B) {
		b.StopTimer()
		if err := s.ToEntry(ctx, m); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.Run("raw-s+g", func(b *testing.B) {
		s.rec = stepper
		n := 0
		for range b.N {
			toEntry(b)
			entered := false
			for i := 0; ; i++ {
				st, err := s.Target.Step(ctx)
				if err != nil {
					b.Fatal(err)
				}
				n++
				if st.CPL() != 3 {
					entered = true
				} else if entered || i > trace.DefaultBudget {
					break
				}
			}
			// The recorder did not see these steps: let it read where
			// the CPU is before the next run to the entry.
			b.StopTimer()
			if err := stepper.Init(ctx); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "insns/s")
		b.ReportMetric(float64(n)/float64(b.N), "insns/op")
	})
	for _, r := range []struct {
		name string
		rec  Recorder
	}{{"step", stepper}, {"log", logger}} {
		b.Run(r.name, func(b *testing.B) {
			s.rec = r.rec
			n := 0
			for range b.N {
				toEntry(b)
				tr, err := s.Record(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if why := tr.Header.Stop; why != string(trace.StopUser) && why != string(trace.StopBudget) {
					b.Fatalf("stopped: %s", why)
				}
				n += tr.Len()
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "insns/s")
			b.ReportMetric(float64(n)/float64(b.N), "insns/op")
		})
	}
}

// BenchmarkRecorders compares the raw stub, the stepping recorder and the
// log recorder on the teaching kernel's syscall round trip.
func BenchmarkRecorders(b *testing.B) {
	benchRecorders(b, startFixture(b, Options{Mechanism: mechanism.Syscall}), mechanism.Syscall)
}

// BenchmarkRecordersLinux compares them on Linux 6.1's getpid by syscall
// (pti=on).
func BenchmarkRecordersLinux(b *testing.B) {
	kernel := testenv.LinuxKernel(b, "6.1")
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	s, err := StartLinux(ctx, LinuxOptions{Options: Options{Accel: "tcg", Mechanism: mechanism.Syscall}, Kernel: kernel})
	cancel()
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	benchRecorders(b, s, mechanism.Syscall)
}

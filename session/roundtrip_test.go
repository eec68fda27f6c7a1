package session

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// fakeRecorder is a Recorder whose steps run straight on, at CPL 0 until
// the nth, which leaves the CPU at CPL 3, and which logs the operations the round trip asks of it.
type fakeRecorder struct {
	n     int
	ops   []string
	tr    trace.Trace
	probe bool // ProbeMSRs was called
}

func (f *fakeRecorder) Init(context.Context) error { f.ops = append(f.ops, "init"); return nil }

func (f *fakeRecorder) ToEntry(_ context.Context, m mechanism.Mechanism) error {
	f.ops = append(f.ops, "entry "+string(m))
	f.tr = trace.Trace{}
	return nil
}

func (f *fakeRecorder) Step(context.Context) (*trace.Step, error) {
	f.ops = append(f.ops, "step")
	i := f.tr.Len()
	cs := uint64(0x10)
	if i+1 >= f.n {
		cs = 0x33
	}
	f.tr.Append(trace.Step{Index: i, RIP: trace.Hex(0x1000 + i), Bytes: []byte{0x90}})
	st := &x86.State{}
	st.Set(x86.CS, cs)
	st.Set(x86.RIP, uint64(0x1000+i+1))
	f.tr.Final = st
	return f.tr.Step(i), nil
}

func (f *fakeRecorder) Run(ctx context.Context, until ...trace.Until) (trace.StopReason, error) {
	f.ops = append(f.ops, "run")
	for range 100 {
		if ctx.Err() != nil {
			f.tr.Header.Stop = string(trace.StopCancel)
			return trace.StopCancel, nil
		}
		s, _ := f.Step(ctx)
		for _, c := range until {
			if why := c(s, f.tr.Final); why != "" {
				f.tr.Header.Stop = string(why)
				return why, nil
			}
		}
	}
	f.tr.Header.Stop = string(trace.StopBudget)
	return trace.StopBudget, nil
}

func (f *fakeRecorder) Trace() *trace.Trace { return &f.tr }

// prober is a fakeRecorder that can probe the MSRs.
type prober struct{ fakeRecorder }

func (p *prober) ProbeMSRs(context.Context) ([]annotate.Effect, error) {
	p.ops = append(p.ops, "probe")
	return nil, nil
}

// TestRoundTripOrchestration drives fake recorders through Session's round
// trip: to the entry, then recording back to user mode, with the MSR probe
// one step in when asked for and the recorder can, and ctrl-c returning
// what was recorded with the context's error.
func TestRoundTripOrchestration(t *testing.T) {
	tests := []struct {
		name    string
		rec     Recorder
		probe   bool
		cancel  bool
		ops     string
		err     error
		stop    trace.StopReason
		headerM string
	}{
		{"plain", &fakeRecorder{n: 3}, false, false, "entry int80 run step step step", nil, trace.StopUser, "int80"},
		{"probe", &prober{fakeRecorder{n: 3}}, true, false, "entry int80 step probe run step step", nil, trace.StopUser, "int80"},
		{"probe, back at once", &prober{fakeRecorder{n: 1}}, true, false, "entry int80 step", nil, trace.StopOnce, "int80"},
		{"probe unsupported", &fakeRecorder{n: 3}, true, false, "entry int80", errNoProbe, "", "int80"},
		{"ctrl-c", &fakeRecorder{n: 3}, false, true, "entry int80 run", context.Canceled, trace.StopCancel, "int80"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Session{rec: tt.rec, probeMSRs: tt.probe}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var f *fakeRecorder
			switch r := tt.rec.(type) {
			case *fakeRecorder:
				f = r
			case *prober:
				f = &r.fakeRecorder
			}
			if tt.cancel {
				// Cancelled once the entry is reached.
				if err := s.ToEntry(ctx, mechanism.Int80); err != nil {
					t.Fatal(err)
				}
				cancel()
				f.ops = []string{"entry int80"}
			}
			var tr *trace.Trace
			var err error
			if tt.cancel {
				tr, err = s.Record(ctx)
			} else {
				tr, err = s.RoundTrip(ctx, mechanism.Int80)
			}
			if !errors.Is(err, tt.err) {
				t.Errorf("error %v, want %v", err, tt.err)
			}
			if got := strings.Join(f.ops, " "); got != tt.ops {
				t.Errorf("operations %q, want %q", got, tt.ops)
			}
			if tr == nil {
				t.Fatal("no trace returned")
			}
			if trace.StopReason(tr.Header.Stop) != tt.stop || tr.Header.Mechanism != tt.headerM {
				t.Errorf("header stop %q mechanism %q, want %q %q", tr.Header.Stop, tr.Header.Mechanism, tt.stop, tt.headerM)
			}
		})
	}
}

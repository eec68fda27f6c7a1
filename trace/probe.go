package trace

import (
	"context"
	"fmt"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/x86"
)

// ProbedMSRs are the MSRs ProbeMSRs reads: those that steer the system-call
// instructions, EFER, the GS bases and TSC_AUX.
var ProbedMSRs = []uint32{
	x86.MSREFER, x86.MSRSTAR, x86.MSRLSTAR, x86.MSRCSTAR, x86.MSRFMASK,
	x86.MSRSysenterCS, x86.MSRSysenterESP, x86.MSRSysenterEIP,
	x86.MSRGSBase, x86.MSRKernelGSBase, x86.MSRTSCAux,
}

// ProbeMSRs reads ProbedMSRs with target.ProbeMSRs (rdmsr run in the guest,
// opt-in, everything put back) at the current stop, which must be at CPL 0.
// Each value is learnt with the provenance "probed", and compared with what
// the trace had already inferred: an agreement is shown as a check that
// passed, a contradiction as a finding. The effects are recorded as a new
// entry in the trace's Probes, at the stop they were read at; the steps
// already recorded are left as they were, so that a snapshot of them can
// be read while the probe runs.
func (r *Recorder) ProbeMSRs(ctx context.Context) ([]annotate.Effect, error) {
	readings, err := r.T.ProbeMSRs(ctx, ProbedMSRs)
	at := r.name(r.cur.Val(x86.RIP))
	step := r.trace.Len()
	k := r.Ctx.Knowledge
	var effs []annotate.Effect
	for _, rd := range readings {
		name := x86.MSRName(rd.Index)
		if rd.Err != nil {
			effs = append(effs, annotate.Effect{Kind: annotate.KindMSR, Text: fmt.Sprintf("%s: not readable: %v", name, rd.Err)})
			continue
		}
		m := annotate.MSR{Index: rd.Index, Value: rd.Value, Known: ^uint64(0), Source: annotate.SourceProbed, Step: step, How: "rdmsr run by sctrace at " + at}
		e := annotate.Effect{Kind: annotate.KindMSR, Text: fmt.Sprintf("%s = %#x (probed: rdmsr at %s)", name, rd.Value, at)}
		if old := k.MSR(rd.Index); old != nil {
			if c := k.Conflict(m); c != 0 {
				e.Verdict = annotate.Finding
				e.Text += fmt.Sprintf("; contradicts %s = %s in bits %#x", old.Provenance(), old.ValueString(), c)
			} else {
				e.Verdict = annotate.OK
				e.Text += "; agrees with " + old.Provenance()
			}
		}
		effs = append(effs, e)
		k.Learn(m)
	}
	if len(effs) > 0 {
		r.trace.Probes = append(r.trace.Probes, Probe{Step: step, At: at, Effects: effs})
	}
	return effs, err
}

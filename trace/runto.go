package trace

import "context"

// stepOff executes the instruction at the current stop, stepping again
// when the stub reports a step with nothing executed (see stepOnce), so
// that a continue does not stop again at a breakpoint there. The steps
// are not recorded.
func (r *Recorder) stepOff(ctx context.Context) error {
	before := r.cur
	for i := 0; ; i++ {
		st, err := r.T.Step(ctx)
		if err != nil {
			return err
		}
		st.Sys = r.tables
		r.cur = st
		if i == maxSpurious || st.R != before.R || st.Known != before.Known {
			return nil
		}
	}
}

// RunTo lets the guest run from wherever it is now until it reaches addr
// (a hardware breakpoint there, removed on every path) and makes that stop
// the current state. A guest already at addr stays put.
func (r *Recorder) RunTo(ctx context.Context, addr uint64) error {
	st, err := r.T.State(ctx)
	if err != nil {
		return err
	}
	st.Sys = r.tables
	r.cur = st
	return r.runTo(ctx, addr)
}

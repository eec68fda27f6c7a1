package trace

import "context"

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

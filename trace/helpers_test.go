package trace

// stepsOf returns copies of t's steps.
func stepsOf(t *Trace) []Step {
	var out []Step
	for _, s := range t.All() {
		out = append(out, *s)
	}
	return out
}

// withSteps returns a trace with t's header, probes and final state and
// the given steps, renumbered from 0.
func withSteps(t *Trace, steps []Step) *Trace {
	n := New(steps...)
	n.Format, n.Version, n.Header, n.Probes, n.UserWrites, n.Final = t.Format, t.Version, t.Header, t.Probes, t.UserWrites, t.Final
	return n
}

// edit returns t with step i changed by f.
func edit(t *Trace, i int, f func(*Step)) *Trace {
	steps := stepsOf(t)
	f(&steps[i])
	return withSteps(t, steps)
}

package trace

import (
	"slices"
	"strings"

	"github.com/sctrace/sctrace/annotate"
)

// The lookups below use indexes built once, as steps are appended or as a
// file is opened, so that a viewer's jumps cost the same in a trace of a
// million steps as in one of a hundred: NextEvent, PrevEvent, NextAt and
// NextCPLChange take logarithmic time, Search a pass over one number a
// step. Each answers within the steps t shows (Len), and -1 for none.

// NextEvent returns the first step at or after from that has one of the
// events.
func (t *Trace) NextEvent(from int, events ...annotate.Event) int {
	n := t.Len()
	if t.st == nil || from >= n {
		return -1
	}
	from = max(from, 0)
	t.st.mu.Lock()
	defer t.st.mu.Unlock()
	best := -1
	for _, e := range events {
		l := t.st.idx.events[e]
		k, _ := slices.BinarySearch(l, int32(from))
		if k < len(l) && int(l[k]) < n && (best < 0 || int(l[k]) < best) {
			best = int(l[k])
		}
	}
	return best
}

// PrevEvent returns the last step before before that has one of the
// events.
func (t *Trace) PrevEvent(before int, events ...annotate.Event) int {
	before = min(before, t.Len())
	if t.st == nil || before <= 0 {
		return -1
	}
	t.st.mu.Lock()
	defer t.st.mu.Unlock()
	best := -1
	for _, e := range events {
		l := t.st.idx.events[e]
		k, _ := slices.BinarySearch(l, int32(before))
		if k > 0 && int(l[k-1]) > best {
			best = int(l[k-1])
		}
	}
	return best
}

// NextAt returns the first step at or after from whose RIP is rip.
func (t *Trace) NextAt(from int, rip uint64) int {
	n := t.Len()
	if t.st == nil || from >= n {
		return -1
	}
	t.st.mu.Lock()
	defer t.st.mu.Unlock()
	r := t.st.idx.rips[rip]
	if r == nil {
		return -1
	}
	k, _ := slices.BinarySearch(r.steps, int32(max(from, 0)))
	if k < len(r.steps) && int(r.steps[k]) < n {
		return int(r.steps[k])
	}
	return -1
}

// SymbolAt returns the symbol of the first step at rip, "" when no step
// ran there or it has no symbol.
func (t *Trace) SymbolAt(rip uint64) string {
	if t.st == nil {
		return ""
	}
	t.st.mu.Lock()
	defer t.st.mu.Unlock()
	if r := t.st.idx.rips[rip]; r != nil && len(r.steps) > 0 && int(r.steps[0]) < t.lenLocked() {
		return r.symbol
	}
	return ""
}

func (t *Trace) lenLocked() int {
	if t.view {
		return min(t.st.n, t.lim)
	}
	return t.st.n
}

// NextCPLChange returns the first step at or after from (and after step
// 0) whose CPL differs from the step before's.
func (t *Trace) NextCPLChange(from int) int {
	n := t.Len()
	if t.st == nil || from >= n {
		return -1
	}
	t.st.mu.Lock()
	defer t.st.mu.Unlock()
	l := t.st.idx.cpl
	k, _ := slices.BinarySearch(l, int32(max(from, 0)))
	if k < len(l) && int(l[k]) < n {
		return int(l[k])
	}
	return -1
}

// Search returns the first step after from, wrapping around to step 0 and
// ending at from itself, whose symbol, Intel or AT&T text contains q,
// ignoring case.
func (t *Trace) Search(from int, q string) int {
	if q == "" {
		return -1
	}
	lq := strings.ToLower(q)
	return t.SearchFunc(from, false, func(sym, intel, att string) bool {
		return strings.Contains(sym, lq) || strings.Contains(intel, lq) || strings.Contains(att, lq)
	})
}

// SearchFunc returns the first step after from (with back, the last step
// before from), wrapping around and ending at from itself, whose
// lower-cased symbol, Intel and AT&T text match accepts. match is called
// once for each distinct text, not once a step.
func (t *Trace) SearchFunc(from int, back bool, match func(symbol, intel, att string) bool) int {
	n := t.Len()
	if t.st == nil || n == 0 {
		return -1
	}
	t.st.mu.Lock()
	defer t.st.mu.Unlock()
	x := &t.st.idx
	// Which distinct texts match: each is tested once.
	ok := make([]bool, len(x.lines))
	any := false
	for i, l := range x.lines {
		sym, rest, _ := strings.Cut(l, "\x00")
		intel, att, _ := strings.Cut(rest, "\x00")
		if match(sym, intel, att) {
			ok[i], any = true, true
		}
	}
	if !any {
		return -1
	}
	from = min(max(from, 0), n-1)
	d := 1
	if back {
		d = n - 1
	}
	for i := 1; i <= n; i++ {
		k := (from + i*d) % n
		if ok[x.lineOf[k]] {
			return k
		}
	}
	return -1
}

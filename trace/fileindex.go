package trace

import (
	"encoding/binary"
	"slices"
	"strings"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/internal/termtext"
)

// lookups is the part of a version 2 file's index that Open loads instead
// of reading every chunk: the trace's index (see index) as of its first n
// steps. Lists of step numbers are unsigned varints, each the difference
// from the one before (the first from -1), so that they are strictly
// increasing by construction.
type lookups struct {
	// Events maps an event kind to the steps that have it.
	Events map[string][]byte `json:"events"`
	// CPL lists the steps whose privilege level differs from the step
	// before's; LastCPL is the last step's.
	CPL     []byte `json:"cpl"`
	LastCPL int    `json:"last_cpl"`
	// Lines are the distinct "symbol NUL Intel NUL AT&T" texts; LineOf
	// gives each step's, by number (varints).
	Lines  []string `json:"lines"`
	LineOf []byte   `json:"line_of"`
	// RIPs lists, for each address steps ran at (in increasing order),
	// the address, the number of steps, and the steps.
	RIPs []byte `json:"rips"`
}

func appendSteps(b []byte, l []int32) []byte {
	prev := int32(-1)
	for _, v := range l {
		b = binary.AppendUvarint(b, uint64(v-prev))
		prev = v
	}
	return b
}

// below returns the part of the sorted l that is below n.
func below(l []int32, n int) []int32 {
	k, _ := slices.BinarySearch(l, int32(n))
	return l[:k]
}

// lookupsOf returns x's lookups as of the first n steps, whose last step
// has privilege level lastCPL.
func lookupsOf(x *index, n, lastCPL int) *lookups {
	if n > len(x.lineOf) {
		return nil // not indexed (cannot happen: every step is)
	}
	lk := &lookups{Events: map[string][]byte{}, LastCPL: lastCPL, Lines: x.keys}
	for e, l := range x.events {
		if l = below(l, n); len(l) > 0 {
			lk.Events[string(e)] = appendSteps(nil, l)
		}
	}
	lk.CPL = appendSteps(nil, below(x.cpl, n))
	lk.LineOf = make([]byte, 0, 2*n)
	for _, id := range x.lineOf[:n] {
		lk.LineOf = binary.AppendUvarint(lk.LineOf, uint64(id))
	}
	rips := make([]uint64, 0, len(x.rips))
	for rip, r := range x.rips {
		if len(r.steps) > 0 && int(r.steps[0]) < n {
			rips = append(rips, rip)
		}
	}
	slices.Sort(rips)
	for _, rip := range rips {
		l := below(x.rips[rip].steps, n)
		lk.RIPs = binary.AppendUvarint(lk.RIPs, rip)
		lk.RIPs = binary.AppendUvarint(lk.RIPs, uint64(len(l)))
		lk.RIPs = appendSteps(lk.RIPs, l)
	}
	return lk
}

// stepList reads count step numbers (all of b when count < 0), checking
// that they increase and stay below n.
func stepList(b []byte, count, n int, what string) ([]int32, []byte, error) {
	var out []int32
	prev := int64(-1)
	for count != 0 && len(b) > 0 {
		d, k := binary.Uvarint(b)
		if k <= 0 || d == 0 || d > uint64(n) || prev+int64(d) >= int64(n) {
			return nil, nil, errV2("the index's %s: bad step number", what)
		}
		prev += int64(d)
		out = append(out, int32(prev))
		b = b[k:]
		count--
	}
	if count > 0 {
		return nil, nil, errV2("the index's %s: cut short", what)
	}
	return out, b, nil
}

// index returns the index lk holds for a trace of n steps, after checking
// every number in it.
func (lk *lookups) index(n int) (*index, error) {
	x := &index{n: n, lastCPL: lk.LastCPL}
	x.init()
	for name, b := range lk.Events {
		l, _, err := stepList(b, -1, n, "event "+termtext.Line(name))
		if err != nil {
			return nil, err
		}
		x.events[annotate.Event(termtext.Line(name))] = l
	}
	var err error
	if x.cpl, _, err = stepList(lk.CPL, -1, n, "privilege changes"); err != nil {
		return nil, err
	}
	x.keys = make([]string, len(lk.Lines))
	x.lines = make([]string, len(lk.Lines))
	for i, k := range lk.Lines {
		// Escape each of the three texts, keeping the NULs between them.
		parts := strings.Split(k, "\x00")
		for j := range parts {
			parts[j] = termtext.Line(parts[j])
		}
		x.keys[i] = strings.Join(parts, "\x00")
		x.lines[i] = strings.ToLower(x.keys[i])
	}
	x.lineOf = make([]uint32, 0, n)
	for b := lk.LineOf; len(b) > 0; {
		v, k := binary.Uvarint(b)
		if k <= 0 || v >= uint64(len(x.keys)) {
			return nil, errV2("the index's line numbers: bad number")
		}
		x.lineOf = append(x.lineOf, uint32(v))
		b = b[k:]
	}
	if len(x.lineOf) != n {
		return nil, errV2("the index gives lines for %d steps of %d", len(x.lineOf), n)
	}
	total := 0
	for b := lk.RIPs; len(b) > 0; {
		rip, k := binary.Uvarint(b)
		if k <= 0 {
			return nil, errV2("the index's addresses: bad number")
		}
		b = b[k:]
		count, k := binary.Uvarint(b)
		if k <= 0 || count == 0 || count > uint64(n-total) {
			return nil, errV2("the index's addresses: bad count")
		}
		b = b[k:]
		var l []int32
		if l, b, err = stepList(b, int(count), n, "addresses"); err != nil {
			return nil, err
		}
		if x.rips[rip] != nil {
			return nil, errV2("the index lists address %#x twice", rip)
		}
		sym, _, _ := strings.Cut(x.keys[x.lineOf[l[0]]], "\x00")
		x.rips[rip] = &ripSteps{symbol: sym, steps: l}
		total += len(l)
	}
	if total != n {
		return nil, errV2("the index gives addresses for %d steps of %d", total, n)
	}
	return x, nil
}

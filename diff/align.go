// Package diff aligns two traces of a system call's path and says what
// differs: instructions inserted, removed or replaced, per function, and
// the events (CR3 writes, swapgs, mitigations, stack switches, findings)
// that one trace has and the other has not.
//
// Steps are matched by what they are, not where they are: a step's key is
// the function it runs in (from its symbol) and the instruction's
// operation and operands as x86asm decodes them, with addresses taken out.
// Addresses differ between kernels and with KASLR, and register values
// differ from run to run; neither makes two steps different. Where a trace
// has no symbols, steps are keyed by the instruction alone, and the result
// says so.
//
// The alignment follows the calls: each call's steps form a frame, which
// its caller sees as one item keyed by the callee. Frames are aligned with
// Myers' algorithm, and the frames of matched calls are aligned in turn, so
// a long call made in one trace only is one insertion in its caller and
// cannot pull the rest of the path out of line. The steps left unmatched
// that way (a call only one trace makes, or one made from a caller the
// other trace lacks) are aligned once more step by step, so that a
// function both traces call from differently named callers still pairs.
package diff

import (
	"unicode/utf8"

	"github.com/sergi/go-diff/diffmatchpatch"
	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/trace"
)

// Op says how a pair of steps is aligned.
type Op byte

// The ways steps align.
const (
	Equal   Op = '=' // the same instruction in both traces
	Changed Op = '~' // the same place, a different instruction
	Removed Op = '-' // a step of A that B does not have
	Added   Op = '+' // a step of B that A does not have
)

func (o Op) String() string { return string(rune(o)) }

// Pair is one line of the alignment: a step of A, a step of B, or both.
// A or B is -1 where the pair has no step of that trace.
type Pair struct {
	Op   Op
	A, B int
}

// item is one element of a frame: a step, or a call's whole frame.
type item struct {
	step  int    // the step's index; for a call frame, its first step's
	child *frame // set for an item that stands for a call
	key   uint32 // interned key
}

// frame is the steps run by one call, from the callee's first
// instruction to its return, with the calls it makes as single items.
// The top frame holds the whole trace.
type frame struct{ items []item }

// interner numbers keys: equal keys, in either trace, get the same number.
type interner map[insnKey]uint32

func (in interner) id(k insnKey) uint32 {
	if v, ok := in[k]; ok {
		return v
	}
	v := uint32(len(in))
	in[k] = v
	return v
}

// side is one trace prepared for alignment.
type side struct {
	t   *trace.Trace
	fn  []string // each step's function ("" without a symbol)
	off []uint64 // each step's offset in its function
	// target is the function each step's call or jump went to, when
	// it left its own ("" otherwise, and without symbols).
	target []string
	key    []uint32 // each step's interned key
	top    *frame
}

// prepare splits t's steps into frames, keyed through k and in.
func prepare(t *trace.Trace, k *keyer, in interner) *side {
	n := t.Len()
	s := &side{t: t, fn: make([]string, n), off: make([]uint64, n), target: make([]string, n), key: make([]uint32, n), top: &frame{}}
	stack := []*frame{s.top}
	for i := range n {
		st := t.Step(i)
		var next *trace.Step
		if i+1 < n {
			next = t.Step(i + 1)
		}
		s.fn[i], s.off[i] = splitSymbol(st.Symbol)
		key := k.key(st, next)
		s.target[i], s.key[i] = key.target, in.id(key)
		cur := stack[len(stack)-1]
		cur.items = append(cur.items, item{step: i, key: s.key[i]})
		op := k.decode(st.Bytes).inst.Op
		switch {
		case op == x86asm.CALL && st.Over == nil && next != nil:
			// The callee's steps go in a frame of their own, which
			// the caller sees as one item keyed by the callee.
			callee, _ := splitSymbol(next.Symbol)
			if !k.symbols {
				callee = ""
			}
			f := &frame{}
			cur.items = append(cur.items, item{step: i + 1, child: f, key: in.id(insnKey{frame: true, target: callee})})
			stack = append(stack, f)
		case op == x86asm.RET && len(stack) > 1:
			stack = stack[:len(stack)-1]
		}
	}
	return s
}

// aligner aligns two prepared traces into pairs.
type aligner struct {
	a, b   *side
	places bool // the same build: offsets are comparable
	pairs  []Pair
	dmp    *diffmatchpatch.DiffMatchPatch
}

// align appends the alignment of frames fa and fb.
func (al *aligner) align(fa, fb *frame) {
	for _, h := range myers(keys(fa.items), keys(fb.items), al.dmp) {
		if h.op == Equal {
			for k := range h.n {
				ia, ib := fa.items[h.a+k], fb.items[h.b+k]
				if ia.child != nil {
					al.align(ia.child, ib.child)
					continue
				}
				al.pairs = append(al.pairs, Pair{Equal, ia.step, ib.step})
			}
			continue
		}
		var as, bs []int
		for _, it := range fa.items[h.a : h.a+h.na] {
			as = steps(as, it)
		}
		for _, it := range fb.items[h.b : h.b+h.nb] {
			bs = steps(bs, it)
		}
		al.unmatched(as, bs)
	}
}

// unmatched appends the pairs of steps as of A and bs of B that the calls
// left unmatched: those of calls made by one trace only, or by callers
// the other trace does not have (a function renamed or inlined between
// two kernels). Their steps are aligned once more, one by one, so that
// the functions both call from there still pair up.
func (al *aligner) unmatched(as, bs []int) {
	if len(as) == 0 || len(bs) == 0 {
		al.hunk(as, bs)
		return
	}
	ka, kb := make([]uint32, len(as)), make([]uint32, len(bs))
	for k, i := range as {
		ka[k] = al.a.key[i]
	}
	for k, j := range bs {
		kb[k] = al.b.key[j]
	}
	for _, h := range myers(ka, kb, al.dmp) {
		if h.op == Equal {
			for k := range h.n {
				al.pairs = append(al.pairs, Pair{Equal, as[h.a+k], bs[h.b+k]})
			}
			continue
		}
		al.hunk(as[h.a:h.a+h.na], bs[h.b:h.b+h.nb])
	}
}

// steps appends the steps an item stands for.
func steps(out []int, it item) []int {
	if it.child == nil {
		return append(out, it.step)
	}
	for _, c := range it.child.items {
		out = steps(out, c)
	}
	return out
}

// hunk appends the pairs of a run of steps of A (as) that B has in place
// of the run bs. When both traces ran the same kernel build, steps at the
// same place (function and offset) pair as Changed: the kernel patched
// them differently. Across builds, which move code, the runs pair from
// their start while both are in the same function. The rest is Removed
// and Added.
func (al *aligner) hunk(as, bs []int) {
	type place struct {
		fn  string
		off uint64
	}
	pa := func(i int) place { return place{al.a.fn[i], al.a.off[i]} }
	pb := func(i int) place { return place{al.b.fn[i], al.b.off[i]} }
	inB := map[place]int{}
	for k, j := range bs {
		if _, dup := inB[pb(j)]; !dup && al.b.fn[j] != "" {
			inB[pb(j)] = k
		}
	}
	i, j := 0, 0
	if al.places {
		for i < len(as) && j < len(bs) {
			k, ok := inB[pa(as[i])]
			switch {
			case ok && k == j:
				al.pairs = append(al.pairs, Pair{Changed, as[i], bs[j]})
				i, j = i+1, j+1
			case ok && k > j:
				al.pairs = append(al.pairs, Pair{Added, -1, bs[j]})
				j++
			default:
				al.pairs = append(al.pairs, Pair{Removed, as[i], -1})
				i++
			}
		}
	} else {
		for i < len(as) && j < len(bs) && al.a.fn[as[i]] == al.b.fn[bs[j]] {
			al.pairs = append(al.pairs, Pair{Changed, as[i], bs[j]})
			i, j = i+1, j+1
		}
	}
	for ; i < len(as); i++ {
		al.pairs = append(al.pairs, Pair{Removed, as[i], -1})
	}
	for ; j < len(bs); j++ {
		al.pairs = append(al.pairs, Pair{Added, -1, bs[j]})
	}
}

func keys(items []item) []uint32 {
	out := make([]uint32, len(items))
	for i, it := range items {
		out[i] = it.key
	}
	return out
}

// run is a stretch of Myers' edit script: n equal items at a and b, or
// na items of A replaced by nb items of B.
type run struct {
	op     Op
	a, b   int
	n      int // Equal
	na, nb int // otherwise
}

// myers returns the shortest edit script from a to b, as runs of equal
// items and replaced stretches (a deletion and an insertion side by side
// are one replaced stretch).
//
// Items whose key the other sequence lacks cannot be matched; they are set
// aside first (as GNU diff discards lines found in one file only), so that
// two unrelated stretches cost nothing to align: Myers' algorithm takes
// time in proportion to the length times the number of differences.
//
// The rest is aligned by go-diff's Myers implementation (diff-match-patch),
// which works on rune strings: each key becomes one rune, skipping the
// surrogate range, which a Go string cannot hold. With no timeout set,
// diff-match-patch neither gives up early nor takes its half-match
// shortcut, so the script is a shortest one.
func myers(a, b []uint32, dmp *diffmatchpatch.DiffMatchPatch) []run {
	inA, inB := make(map[uint32]bool, len(a)), make(map[uint32]bool, len(b))
	for _, k := range a {
		inA[k] = true
	}
	for _, k := range b {
		inB[k] = true
	}
	var ka, kb []uint32 // the keys both have
	var ia, ib []int    // where they are in a and b
	for i, k := range a {
		if inB[k] {
			ka, ia = append(ka, k), append(ia, i)
		}
	}
	for j, k := range b {
		if inA[k] {
			kb, ib = append(kb, k), append(ib, j)
		}
	}
	var out []run
	// emit adds the stretch up to a[i], b[j] (replaced) and then n
	// equal items from there.
	pa, pb := 0, 0
	emit := func(i, j, n int) {
		if i > pa || j > pb {
			out = append(out, run{op: Removed, a: pa, b: pb, na: i - pa, nb: j - pb})
		}
		if n > 0 {
			if l := len(out); l > 0 && out[l-1].op == Equal && out[l-1].a+out[l-1].n == i && out[l-1].b+out[l-1].n == j {
				out[l-1].n += n
			} else {
				out = append(out, run{op: Equal, a: i, b: j, n: n})
			}
		}
		pa, pb = i+n, j+n
	}
	i, j := 0, 0 // in ka and kb
	if len(ka) > 0 && len(kb) > 0 {
		ra, rb := runes(ka, kb)
		for _, d := range dmp.DiffMainRunes(ra, rb, false) {
			n := utf8.RuneCountInString(d.Text)
			switch d.Type {
			case diffmatchpatch.DiffEqual:
				for k := range n {
					emit(ia[i+k], ib[j+k], 1)
				}
				i, j = i+n, j+n
			case diffmatchpatch.DiffDelete:
				i += n
			case diffmatchpatch.DiffInsert:
				j += n
			}
		}
	}
	emit(len(a), len(b), 0)
	for k := range out {
		if out[k].op != Equal && out[k].na == 0 {
			out[k].op = Added
		}
	}
	return out
}

// runes turns two sequences of keys into runes, one for each key,
// numbered from 0 in the order they first appear, skipping the surrogate
// range, which a Go string cannot hold. Both sequences hold only keys the
// other has, so there are no more distinct keys than a trace has steps,
// and a trace (at most trace.MaxFileSize bytes, about 700,000 steps) has
// fewer than there are runes.
func runes(a, b []uint32) ([]rune, []rune) {
	ids := make(map[uint32]rune)
	conv := func(keys []uint32) []rune {
		out := make([]rune, len(keys))
		for i, k := range keys {
			r, ok := ids[k]
			if !ok {
				r = rune(len(ids))
				if r >= 0xd800 {
					r += 0x800
				}
				ids[k] = r
			}
			out[i] = r
		}
		return out
	}
	return conv(a), conv(b)
}

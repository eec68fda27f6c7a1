package trace

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sync"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/internal/termtext"
	"github.com/sctrace/sctrace/x86"
)

// A chunk is up to ChunkSteps consecutive steps in the compact encoding
// that version 2 files store, and that a Trace keeps in memory once a
// chunk is full. It is written by hand because it is specific to traces:
// each step stores only the registers that differ from the step before
// it (the chunk starts from a full state), and every string (symbol,
// instruction text, effect text, event name) is stored once per chunk
// and referred to by number. General encoders (JSON, gob) spell out
// every register of every step and are several times larger and slower;
// gzip then removes what repeats across steps.
//
// The encoding, all integers unsigned LEB128 varints unless said:
//
//	chunk   = first count nstr {len bytes}  ; the chunk's strings
//	          ncode {len bytes}               ; its distinct instruction bytes
//	          state {step}
//	state   = known {value}                   ; one value per bit set in known, low bit first
//	step    = flags rip cpl code sym intel att mnemonic
//	          regdiff [known] {value}         ; known only when flags has stepKnown
//	          [n {reg old new}]               ; changed, when stepChanged
//	          [n {kind text verdict event}]   ; effects, when stepEffects
//	          [n {event}]                     ; events, when stepEvents
//	          [n {addr after len bytes}]      ; memory, when stepMem
//	          [n {8-byte little-endian word}] ; stack, when stepStack
//	          [target depth]                  ; over, when stepOver
//
// code, sym, intel, att, mnemonic, reg, kind, text, verdict and event are
// string numbers (code in the code table, the rest in the string table;
// string 0 is always ""). regdiff has bit r set for each register whose
// value or knownness differs from the previous step's state.

// ChunkSteps is how many steps a chunk holds (the last one of a trace may
// hold fewer).
const ChunkSteps = 1024

// Limits on what decoding a chunk accepts, so that a damaged or hostile
// file cannot make a reader allocate without bound.
const (
	maxChunkRaw     = 64 << 20 // decompressed bytes of one chunk
	maxChunkStrings = 1 << 20  // strings in one chunk's table
	maxPerStep      = 4096     // effects, events, memory reads, stack words, changes of one step
)

const (
	stepKnown   = 1 << iota // the known mask changed
	stepChanged             // changed registers follow
	stepEffects
	stepEvents
	stepMem
	stepStack
	stepOver
	stepFlagsAll = 1<<iota - 1
)

// chunkEncoder builds the encoding of one chunk.
type chunkEncoder struct {
	strs  map[string]uint64
	slist []string
	codes map[string]uint64
	clist []string
	body  []byte
	prev  x86.State
	n     int
}

func newChunkEncoder(base *x86.State) *chunkEncoder {
	e := chunkEncoders.Get().(*chunkEncoder)
	e.strs[""] = 0
	e.slist = append(e.slist, "")
	if base != nil {
		e.prev = *base
	}
	e.prev.Sys = nil
	e.body = appendState(e.body, &e.prev)
	return e
}

// chunkEncoders keeps encoders for reuse, with their tables and buffer
// at the size a chunk grew them to: a long recording encodes a chunk
// every ChunkSteps steps.
var chunkEncoders = sync.Pool{New: func() any {
	return &chunkEncoder{strs: map[string]uint64{}, codes: map[string]uint64{}}
}}

// release empties e and keeps it for reuse; e must not be used after.
func (e *chunkEncoder) release() {
	clear(e.strs)
	clear(e.codes)
	clear(e.slist) // no strings kept alive from the pool
	clear(e.clist)
	*e = chunkEncoder{strs: e.strs, codes: e.codes, slist: e.slist[:0], clist: e.clist[:0], body: e.body[:0]}
	chunkEncoders.Put(e)
}

func appendState(b []byte, st *x86.State) []byte {
	b = binary.AppendUvarint(b, st.Known)
	for k := st.Known; k != 0; k &= k - 1 {
		r := bits.TrailingZeros64(k)
		if r < int(x86.NumRegs) {
			b = binary.AppendUvarint(b, st.R[r])
		}
	}
	return b
}

func (e *chunkEncoder) str(s string) uint64 {
	if i, ok := e.strs[s]; ok {
		return i
	}
	i := uint64(len(e.slist))
	e.strs[s] = i
	e.slist = append(e.slist, s)
	return i
}

func (e *chunkEncoder) code(b []byte) uint64 {
	if i, ok := e.codes[string(b)]; ok {
		return i
	}
	i := uint64(len(e.clist))
	e.codes[string(b)] = i
	e.clist = append(e.clist, string(b))
	return i
}

// add appends s to the chunk.
func (e *chunkEncoder) add(s *Step) {
	u := func(v uint64) { e.body = binary.AppendUvarint(e.body, v) }
	regs := s.Regs
	if regs == nil {
		regs = &x86.State{}
	}
	var diff uint64
	for r := 0; r < int(x86.NumRegs); r++ {
		if e.prev.R[r] != regs.R[r] {
			diff |= 1 << r
		}
	}
	knownDiff := regs.Known ^ e.prev.Known
	diff |= knownDiff
	var flags uint64
	if knownDiff != 0 {
		flags |= stepKnown
	}
	if len(s.Changed) > 0 {
		flags |= stepChanged
	}
	if len(s.Effects) > 0 {
		flags |= stepEffects
	}
	if len(s.Events) > 0 {
		flags |= stepEvents
	}
	if len(s.Mem) > 0 {
		flags |= stepMem
	}
	if len(s.Stack) > 0 {
		flags |= stepStack
	}
	if s.Over != nil {
		flags |= stepOver
	}
	u(flags)
	u(uint64(s.RIP))
	e.body = binary.AppendVarint(e.body, int64(s.CPL))
	u(e.code(s.Bytes))
	u(e.str(s.Symbol))
	u(e.str(s.Intel))
	u(e.str(s.ATT))
	u(e.str(s.Mnemonic))
	u(diff)
	if knownDiff != 0 {
		u(regs.Known)
	}
	for k := diff & regs.Known; k != 0; k &= k - 1 {
		r := bits.TrailingZeros64(k)
		if r < int(x86.NumRegs) {
			u(regs.R[r])
		}
	}
	e.prev.R, e.prev.Known = regs.R, regs.Known
	if len(s.Changed) > 0 {
		u(uint64(len(s.Changed)))
		for _, c := range s.Changed {
			u(e.str(c.Reg))
			u(uint64(c.Old))
			u(uint64(c.New))
		}
	}
	if len(s.Effects) > 0 {
		u(uint64(len(s.Effects)))
		for _, f := range s.Effects {
			u(e.str(string(f.Kind)))
			u(e.str(f.Text))
			u(e.str(string(f.Verdict)))
			u(e.str(string(f.Event)))
		}
	}
	if len(s.Events) > 0 {
		u(uint64(len(s.Events)))
		for _, v := range s.Events {
			u(e.str(string(v)))
		}
	}
	if len(s.Mem) > 0 {
		u(uint64(len(s.Mem)))
		for _, m := range s.Mem {
			u(m.Addr)
			if m.After {
				u(1)
			} else {
				u(0)
			}
			u(uint64(len(m.Data)))
			e.body = append(e.body, m.Data...)
		}
	}
	if len(s.Stack) > 0 {
		u(uint64(len(s.Stack)))
		for _, w := range s.Stack {
			e.body = binary.LittleEndian.AppendUint64(e.body, uint64(w))
		}
	}
	if s.Over != nil {
		u(e.str(s.Over.Target))
		u(uint64(max(0, s.Over.Depth)))
	}
	e.n++
}

// bytes returns the whole chunk: its tables, then the steps.
func (e *chunkEncoder) bytes(first int) []byte {
	n := 16 + len(e.body)
	for _, s := range e.slist {
		n += len(s) + 2
	}
	for _, s := range e.clist {
		n += len(s) + 1
	}
	b := make([]byte, 0, n)
	b = binary.AppendUvarint(b, uint64(first))
	b = binary.AppendUvarint(b, uint64(e.n))
	b = binary.AppendUvarint(b, uint64(len(e.slist)))
	for _, s := range e.slist {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, uint64(len(e.clist)))
	for _, s := range e.clist {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return append(b, e.body...)
}

// errChunk is wrapped by every error decoding a chunk.
var errChunk = errors.New("corrupt step data")

// chunkDecoder reads a chunk's encoding. Every read checks its bounds:
// a decoder on hostile bytes returns an error, never panics.
type chunkDecoder struct {
	b   []byte
	off int
	err error
}

func (d *chunkDecoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s (at byte %d of the chunk)", errChunk, fmt.Sprintf(format, args...), d.off)
	}
}

func (d *chunkDecoder) u() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail("bad number")
		return 0
	}
	d.off += n
	return v
}

func (d *chunkDecoder) i() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b[d.off:])
	if n <= 0 {
		d.fail("bad number")
		return 0
	}
	d.off += n
	return v
}

// count reads a length of at most max.
func (d *chunkDecoder) count(max int, what string) int {
	v := d.u()
	if v > uint64(max) {
		d.fail("%d %s, more than the %d allowed", v, what, max)
		return 0
	}
	return int(v)
}

func (d *chunkDecoder) raw(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b)-d.off {
		d.fail("%d bytes past the end", n)
		return nil
	}
	b := d.b[d.off : d.off+n : d.off+n]
	d.off += n
	return b
}

func (d *chunkDecoder) table(max int, what string) []string {
	n := d.count(max, what)
	// Each entry takes at least one byte: a count over what is left is a lie.
	if n > len(d.b)-d.off {
		d.fail("%d %s in %d bytes", n, what, len(d.b)-d.off)
		return nil
	}
	out := make([]string, 0, n)
	for range n {
		out = append(out, string(d.raw(d.count(len(d.b), "bytes"))))
	}
	return out
}

// decodedChunk is a chunk decoded: its steps, numbered from first.
type decodedChunk struct {
	first int
	steps []Step
}

// chunkOpts says how decodeChunk treats what it reads.
type chunkOpts struct {
	// clean escapes control characters in every string (termtext.Line):
	// set for chunks read from files, which are untrusted.
	clean bool
	// verify walks the steps without building them, to check a chunk
	// once when a file is opened.
	verify bool
	// visit, when set, is called with every step as it is decoded (for
	// building indexes while verifying): only the fields the indexes
	// use (Index, RIP, CPL, Symbol, Intel, ATT, Events, Regs) are set
	// then, and only until the next step. line holds the numbers of the
	// step's symbol, Intel and AT&T text in the chunk's string table.
	visit func(s *Step, line *[3]uint32)
}

// decodeChunk decodes b, which must hold steps first..first+count-1.
func decodeChunk(b []byte, first, count int, o chunkOpts) (*decodedChunk, error) {
	d := &chunkDecoder{b: b}
	if f := d.u(); d.err == nil && f != uint64(first) {
		return nil, fmt.Errorf("%w: the chunk starts at step %d, not %d", errChunk, f, first)
	}
	if n := d.u(); d.err == nil && n != uint64(count) {
		return nil, fmt.Errorf("%w: the chunk holds %d steps, not %d", errChunk, n, count)
	}
	strs := d.table(maxChunkStrings, "strings")
	codes := d.table(maxChunkStrings, "instructions")
	if d.err != nil {
		return nil, d.err
	}
	if len(strs) == 0 || strs[0] != "" {
		return nil, fmt.Errorf("%w: the string table does not start with the empty string", errChunk)
	}
	// Per instruction: its operation, decoded once per chunk.
	type codeInfo struct {
		bytes Bytes
		s     Step
		done  bool
	}
	infos := make([]codeInfo, len(codes))
	for i, c := range codes {
		if len(c) == 0 || len(c) > 15 {
			return nil, fmt.Errorf("%w: an instruction of %d bytes", errChunk, len(c))
		}
		infos[i].bytes = Bytes(c)
	}
	// Strings are escaped when first used: checking walks only those
	// the indexes need.
	var cleaned []bool
	if o.clean {
		cleaned = make([]bool, len(strs))
	}
	strIdx := func() uint64 {
		i := d.u()
		if i >= uint64(len(strs)) {
			d.fail("string %d of %d", i, len(strs))
			return 0
		}
		return i
	}
	get := func(i uint64) string {
		if o.clean && !cleaned[i] {
			strs[i], cleaned[i] = termtext.Line(strs[i]), true
		}
		return strs[i]
	}
	str := func() string { return get(strIdx()) }
	// text reads a string only the built steps need.
	text := func() string {
		if o.verify {
			strIdx()
			return ""
		}
		return str()
	}
	var line [3]uint32
	var prev x86.State
	prev.Known = d.u()
	for k := prev.Known; k != 0; k &= k - 1 {
		r := bits.TrailingZeros64(k)
		if r >= int(x86.NumRegs) {
			d.fail("register %d", r)
			break
		}
		prev.R[r] = d.u()
	}
	if d.err != nil {
		return nil, d.err
	}
	out := &decodedChunk{first: first}
	var regs []x86.State
	if !o.verify {
		out.steps = make([]Step, count)
		regs = make([]x86.State, count) // one allocation for the chunk's states
	}
	var scratch Step
	var events []annotate.Event
	for j := 0; j < count && d.err == nil; j++ {
		s := &scratch
		if !o.verify {
			s = &out.steps[j]
		} else {
			scratch = Step{Regs: &prev}
		}
		s.Index = first + j
		flags := d.u()
		if flags&^stepFlagsAll != 0 {
			d.fail("step %d: unknown flags %#x", s.Index, flags)
			break
		}
		s.RIP = Hex(d.u())
		cpl := d.i()
		if cpl < -1<<31 || cpl >= 1<<31 {
			d.fail("step %d: CPL %d", s.Index, cpl)
			break
		}
		s.CPL = int(cpl)
		ci := d.u()
		if d.err == nil && ci >= uint64(len(infos)) {
			d.fail("step %d: instruction %d of %d", s.Index, ci, len(infos))
			break
		}
		for k := range line {
			line[k] = uint32(strIdx())
		}
		s.Symbol, s.Intel, s.ATT, s.Mnemonic = get(uint64(line[0])), get(uint64(line[1])), get(uint64(line[2])), text()
		diff := d.u()
		if flags&stepKnown != 0 {
			prev.Known = d.u()
		}
		if (diff|prev.Known)>>x86.NumRegs != 0 {
			d.fail("step %d: register bits %#x", s.Index, diff|prev.Known)
			break
		}
		for r := 0; r < int(x86.NumRegs); r++ {
			if diff&(1<<r) == 0 {
				continue
			}
			if prev.Known&(1<<r) != 0 {
				prev.R[r] = d.u()
			} else {
				prev.R[r] = 0
			}
		}
		if d.err != nil {
			break
		}
		if !o.verify {
			info := &infos[ci]
			if !info.done {
				info.s.Bytes = info.bytes
				info.s.decodeOp()
				info.done = true
			}
			s.Bytes, s.Op = info.bytes, info.s.Op
			if s.Mnemonic == "" {
				s.Mnemonic = info.s.Mnemonic
			}
			regs[j] = prev
			s.Regs = &regs[j]
		}
		if flags&stepChanged != 0 {
			n := d.count(maxPerStep, "changed registers")
			for range n {
				c := Change{Reg: text(), Old: Hex(d.u()), New: Hex(d.u())}
				if !o.verify {
					s.Changed = append(s.Changed, c)
				}
			}
			if n == 0 {
				d.fail("step %d: an empty list", s.Index)
			}
		}
		if flags&stepEffects != 0 {
			n := d.count(maxPerStep, "effects")
			if !o.verify {
				s.Effects = make([]annotate.Effect, 0, n)
			}
			for range n {
				f := annotate.Effect{Kind: annotate.Kind(text()), Text: text(), Verdict: annotate.Verdict(text()), Event: annotate.Event(text())}
				if !o.verify {
					s.Effects = append(s.Effects, f)
				}
			}
			if n == 0 {
				d.fail("step %d: an empty list", s.Index)
			}
		}
		if flags&stepEvents != 0 {
			n := d.count(maxPerStep, "events")
			if o.verify {
				s.Events = events[:0] // read by visit before the next step
			} else {
				s.Events = make([]annotate.Event, 0, n)
			}
			for range n {
				s.Events = append(s.Events, annotate.Event(str()))
			}
			events = s.Events
			if n == 0 {
				d.fail("step %d: an empty list", s.Index)
			}
		}
		if flags&stepMem != 0 {
			n := d.count(maxPerStep, "memory reads")
			for range n {
				m := annotate.Memory{Addr: d.u()}
				switch d.u() {
				case 0:
				case 1:
					m.After = true
				default:
					d.fail("step %d: bad memory flag", s.Index)
				}
				m.Data = d.raw(d.count(maxPerStep, "bytes of memory"))
				if !o.verify {
					s.Mem = append(s.Mem, m)
				}
			}
			if n == 0 {
				d.fail("step %d: an empty list", s.Index)
			}
		}
		if flags&stepStack != 0 {
			n := d.count(maxPerStep, "stack words")
			w := d.raw(8 * n)
			if !o.verify && d.err == nil {
				s.Stack = make([]Hex, n)
				for k := range s.Stack {
					s.Stack[k] = Hex(binary.LittleEndian.Uint64(w[8*k:]))
				}
			}
			if n == 0 {
				d.fail("step %d: an empty list", s.Index)
			}
		}
		if flags&stepOver != 0 {
			ov := &Over{Target: text()}
			dep := d.u()
			if dep > 1<<31 {
				d.fail("step %d: call depth %d", s.Index, dep)
			}
			ov.Depth = int(dep)
			if !o.verify {
				s.Over = ov
			}
		}
		if o.visit != nil && d.err == nil {
			o.visit(s, &line)
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	if d.off != len(d.b) {
		return nil, fmt.Errorf("%w: %d bytes after the last step", errChunk, len(d.b)-d.off)
	}
	return out, nil
}

package trace

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/x86"
)

// cacheChunks is how many decoded chunks a trace keeps: enough for the
// window a viewer shows (which may straddle two chunks) and a jump away.
const cacheChunks = 8

// store holds a trace's steps compactly: full chunks of ChunkSteps steps
// in their file encoding (compressed), the steps after the last full chunk
// as they were appended, and the indexes the viewer searches. Steps are
// decoded a chunk at a time when asked for, and a few decoded chunks are
// kept. A store only grows: a step, once appended, never changes, so a
// Trace that is a view of the first n steps (Trace.View) stays valid while
// the owner appends. Every method is safe for concurrent use.
type store struct {
	mu     sync.Mutex
	n      int
	chunks []*sealed
	open   []Step // steps chunks*ChunkSteps.. as appended; cap ChunkSteps
	// clean is set for stores read from a file: strings are escaped when
	// chunks are decoded.
	clean   bool
	cache   []*decodedChunk // most recently used last
	idx     index
	sealing int // chunks being compressed in the background
}

// sealed is a full chunk, compressed.
type sealed struct {
	first, count int
	data         []byte // one gzip member holding the chunk's encoding
	raw          int    // the encoding's length
	// sys gives each step's Regs.Sys (the recorder's descriptor tables,
	// which are not saved): runs of steps sharing one pointer. Nil for
	// chunks read from a file.
	sys []sysRun
	// steps are the chunk's steps until it is compressed (data is nil
	// until then).
	steps []Step
}

type sysRun struct {
	from int // first step of the run, relative to the chunk
	sys  *x86.SysRegs
}

func newStore() *store {
	return &store{open: make([]Step, 0, ChunkSteps)}
}

func (st *store) len() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.n
}

// append adds s, numbered, and returns the stored step. h, when set,
// remembers the index line of s's symbol and texts (see Trace.appendLine).
func (st *store) append(s Step, h *lineHint) *Step {
	st.mu.Lock()
	defer st.mu.Unlock()
	s.Index = st.n
	st.open = append(st.open, s)
	p := &st.open[len(st.open)-1]
	st.idx.addHinted(p, h)
	st.n++
	if len(st.open) == ChunkSteps {
		st.seal()
	}
	return p
}

// maxSealing is how many chunks may be compressed in the background at
// once; past it, appending waits by sealing the next one itself.
const maxSealing = 2

// seal turns the full open steps into a chunk, compressed in the
// background so that a recorder appending steps runs alongside. Until the
// chunk is compressed its steps are read as they are; they also stay
// reachable as the most recently decoded chunk, so the pointers append
// handed out keep pointing at what Step returns until the chunk leaves
// the cache.
func (st *store) seal() {
	first := st.n - len(st.open)
	var base *x86.State
	if first > 0 {
		// The previous step's state: the chunk's first step then
		// stores only what changed since.
		base = st.stepLocked(first - 1).Regs
	}
	steps := st.open
	c := &sealed{first: first, count: len(steps), steps: steps}
	st.chunks = append(st.chunks, c)
	st.remember(&decodedChunk{first: first, steps: steps})
	st.open = make([]Step, 0, ChunkSteps)
	if st.sealing >= maxSealing {
		st.mu.Unlock()
		st.compressChunk(c, base)
		st.mu.Lock()
		return
	}
	st.sealing++
	go func() {
		st.compressChunk(c, base)
		st.mu.Lock()
		st.sealing--
		st.mu.Unlock()
	}()
}

// compressChunk encodes and compresses c's steps, without the lock held;
// the steps never change, and c is updated under the lock.
func (st *store) compressChunk(c *sealed, base *x86.State) {
	raw := encodeChunk(base, c.first, c.steps)
	var runs []sysRun
	for j := range c.steps {
		var sys *x86.SysRegs
		if r := c.steps[j].Regs; r != nil {
			sys = r.Sys
		}
		if len(runs) == 0 || runs[len(runs)-1].sys != sys {
			runs = append(runs, sysRun{from: j, sys: sys})
		}
	}
	if len(runs) == 1 && runs[0].sys == nil {
		runs = nil
	}
	data := compress(raw)
	st.mu.Lock()
	c.data, c.raw, c.sys, c.steps = data, len(raw), runs, nil
	st.mu.Unlock()
}

func encodeChunk(base *x86.State, first int, steps []Step) []byte {
	e := newChunkEncoder(base)
	for i := range steps {
		e.add(&steps[i])
	}
	b := e.bytes(first)
	e.release()
	return b
}

// compress returns raw as one gzip member.
func compress(raw []byte) []byte {
	var b bytes.Buffer
	b.Grow(len(raw)/4 + 64)
	zw := gzipWriters.Get().(*gzip.Writer)
	zw.Reset(&b)
	zw.Write(raw)
	zw.Close()
	zw.Reset(nil)
	gzipWriters.Put(zw)
	return bytes.Clone(b.Bytes())
}

// gzipWriters keeps compressors for reuse: each holds some hundreds of KB
// of tables, and a recording compresses a chunk every ChunkSteps steps.
var gzipWriters = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed) // the level is valid
	return zw
}}

// decompress returns the content of the gzip member data, which must be
// exactly n bytes long.
func decompress(data []byte, n int) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	zr.Multistream(false)
	out := make([]byte, n)
	if _, err := io.ReadFull(zr, out); err != nil {
		return nil, err
	}
	// One more byte must be the end, and reading it checks the CRC.
	var one [1]byte
	if k, err := zr.Read(one[:]); k != 0 || err != io.EOF {
		if err == nil || err == io.EOF {
			return nil, fmt.Errorf("more than the %d bytes the index gives", n)
		}
		return nil, err
	}
	return out, nil
}

func (st *store) remember(c *decodedChunk) {
	if len(st.cache) == cacheChunks {
		st.cache = slices.Delete(st.cache, 0, 1)
	}
	st.cache = append(st.cache, c)
}

func (st *store) step(i int) *Step {
	st.mu.Lock()
	defer st.mu.Unlock()
	if i < 0 || i >= st.n {
		panic(fmt.Sprintf("trace: step %d of %d", i, st.n))
	}
	return st.stepLocked(i)
}

func (st *store) stepLocked(i int) *Step {
	base := len(st.chunks) * ChunkSteps
	if i >= base {
		return &st.open[i-base]
	}
	k := i / ChunkSteps
	for j := len(st.cache) - 1; j >= 0; j-- {
		if c := st.cache[j]; c.first == k*ChunkSteps {
			if j != len(st.cache)-1 {
				st.cache = append(slices.Delete(st.cache, j, j+1), c)
			}
			return &c.steps[i-c.first]
		}
	}
	var c *decodedChunk
	if s := st.chunks[k]; s.data == nil {
		c = &decodedChunk{first: s.first, steps: s.steps}
	} else {
		c = st.decode(s)
	}
	st.remember(c)
	return &c.steps[i-c.first]
}

// decode decodes a sealed chunk. A chunk read from a file was checked
// when the file was opened, and one sealed in memory was encoded here, so
// decoding cannot fail short of a bug; if it does, the steps say so
// rather than bring the program down.
func (st *store) decode(s *sealed) *decodedChunk {
	raw, err := decompress(s.data, s.raw)
	var c *decodedChunk
	if err == nil {
		c, err = decodeChunk(raw, s.first, s.count, chunkOpts{clean: st.clean})
	}
	if err != nil {
		return &decodedChunk{first: s.first, steps: damagedSteps(s.first, s.count, err)}
	}
	for r, run := range s.sys {
		end := s.count
		if r+1 < len(s.sys) {
			end = s.sys[r+1].from
		}
		for j := run.from; j < end && j < len(c.steps); j++ {
			c.steps[j].Regs.Sys = run.sys
		}
	}
	return c
}

// damagedSteps stands for count steps from first of a chunk that could
// not be decoded: each says why in a finding, and has no instruction.
func damagedSteps(first, count int, err error) []Step {
	steps := make([]Step, count)
	for j := range steps {
		steps[j] = Step{Index: first + j, Regs: &x86.State{}, Intel: "(undecodable)", ATT: "(undecodable)",
			Effects: []annotate.Effect{{Kind: annotate.KindControl, Text: "this step could not be decoded: " + err.Error(), Verdict: annotate.Finding}}}
	}
	return steps
}

// index is what the viewer looks steps up by, built once as steps are
// appended or as a file's chunks are checked: steps by event kind, by
// address, by the text a search matches, and where the privilege level
// changes. Step numbers are kept as int32: a trace holds far fewer steps.
// A file's chunks are indexed each on its own, in parallel, and the parts
// merged in order (merge).
type index struct {
	events map[annotate.Event][]int32
	rips   map[uint64]*ripSteps
	// cpl lists the steps whose privilege level (by their registers' CS)
	// differs from the step before's.
	cpl               []int32
	n                 int // steps indexed
	firstCPL, lastCPL int
	lineIDs           map[string]uint32
	keys              []string // distinct (symbol, Intel, AT&T) texts, NUL-separated
	lines             []string // the same, lower-cased
	lineOf            []uint32 // each step's line
	key               []byte
	// byTable finds lines by string table numbers, in a chunk's part.
	byTable map[[3]uint32]uint32
}

type ripSteps struct {
	symbol string // the symbol of the first step at this address
	steps  []int32
}

func (x *index) init() {
	if x.events == nil {
		x.events = map[annotate.Event][]int32{}
	}
	if x.rips == nil {
		x.rips = map[uint64]*ripSteps{}
	}
	if x.lineIDs == nil {
		// Empty, or an index loaded from a file's lookups.
		x.lineIDs = make(map[string]uint32, len(x.keys))
		for i, k := range x.keys {
			x.lineIDs[k] = uint32(i)
		}
	}
}

func stepCPL(s *Step) int {
	if s.Regs != nil && s.Regs.Has(x86.CS) {
		return s.Regs.CPL()
	}
	return s.CPL
}

func (x *index) add(s *Step) { x.addEntry(s, nil, nil) }

func (x *index) addHinted(s *Step, h *lineHint) { x.addEntry(s, nil, h) }

// addLine adds s; tri, when set, numbers its symbol, Intel and AT&T text
// in the chunk it came from, which finds its line faster.
func (x *index) addLine(s *Step, tri *[3]uint32) { x.addEntry(s, tri, nil) }

// lineHint remembers the line of the index x that a step's symbol and
// texts are, and its address's entry, so that the steps after it with
// the same ones need not look them up.
type lineHint struct {
	x    *index
	id   uint32
	addr uint64
	rip  *ripSteps
}

// addEntry adds s, with tri as addLine has it; h, when set, gives or
// remembers the line.
func (x *index) addEntry(s *Step, tri *[3]uint32, h *lineHint) {
	x.init()
	i := int32(s.Index)
	for _, e := range s.Events {
		l := x.events[e]
		if len(l) == 0 || l[len(l)-1] != i {
			x.events[e] = append(l, i)
		}
	}
	var r *ripSteps
	if h != nil && h.x == x && h.addr == uint64(s.RIP) {
		r = h.rip
	} else if r = x.rips[uint64(s.RIP)]; r == nil {
		r = &ripSteps{symbol: s.Symbol}
		x.rips[uint64(s.RIP)] = r
	}
	r.steps = append(r.steps, i)
	cpl := stepCPL(s)
	if x.n == 0 {
		x.firstCPL = cpl
	} else if cpl != x.lastCPL {
		x.cpl = append(x.cpl, i)
	}
	x.lastCPL = cpl
	x.n++
	if h != nil && h.x == x {
		x.lineOf = append(x.lineOf, h.id)
		return
	}
	x.key = append(append(append(append(append(x.key[:0], s.Symbol...), 0), s.Intel...), 0), s.ATT...)
	if tri != nil {
		// A chunk's part: a line per distinct trio of table strings,
		// found by their numbers; merge lower-cases the new ones.
		if x.byTable == nil {
			x.byTable = map[[3]uint32]uint32{}
		}
		id, ok := x.byTable[*tri]
		if !ok {
			id = uint32(len(x.keys))
			x.byTable[*tri] = id
			x.keys = append(x.keys, string(x.key))
		}
		x.lineOf = append(x.lineOf, id)
		return
	}
	id, ok := x.lineIDs[string(x.key)]
	if !ok {
		id = uint32(len(x.lines))
		k := string(x.key)
		x.lineIDs[k] = id
		x.keys = append(x.keys, k)
		x.lines = append(x.lines, strings.ToLower(k))
	}
	if h != nil {
		h.x, h.id, h.addr, h.rip = x, id, uint64(s.RIP), r
	}
	x.lineOf = append(x.lineOf, id)
}

// merge appends p, the index of the steps that follow x's.
func (x *index) merge(p *index) {
	x.init()
	if p.n == 0 {
		return
	}
	first := int32(len(x.lineOf))
	for e, l := range p.events {
		x.events[e] = append(x.events[e], l...)
	}
	for rip, r := range p.rips {
		if g := x.rips[rip]; g != nil {
			g.steps = append(g.steps, r.steps...)
		} else {
			x.rips[rip] = r
		}
	}
	if x.n > 0 && p.firstCPL != x.lastCPL {
		x.cpl = append(x.cpl, first)
	}
	if x.n == 0 {
		x.firstCPL = p.firstCPL
	}
	x.cpl = append(x.cpl, p.cpl...)
	x.lastCPL = p.lastCPL
	x.n += p.n
	remap := make([]uint32, len(p.keys))
	for id, k := range p.keys {
		g, ok := x.lineIDs[k]
		if !ok {
			g = uint32(len(x.lines))
			x.lineIDs[k] = g
			x.keys = append(x.keys, k)
			x.lines = append(x.lines, strings.ToLower(k))
		}
		remap[id] = g
	}
	for _, id := range p.lineOf {
		x.lineOf = append(x.lineOf, remap[id])
	}
}

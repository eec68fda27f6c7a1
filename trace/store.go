package trace

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

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
	clean bool
	cache []*decodedChunk // most recently used last
	idx   index
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

// append adds s, numbered, and returns the stored step.
func (st *store) append(s Step) *Step {
	st.mu.Lock()
	defer st.mu.Unlock()
	s.Index = st.n
	st.open = append(st.open, s)
	p := &st.open[len(st.open)-1]
	st.idx.add(p)
	st.n++
	if len(st.open) == ChunkSteps {
		st.seal()
	}
	return p
}

// seal compresses the open steps into a chunk. The steps themselves stay
// reachable, as the most recently decoded chunk, so the pointers append
// handed out keep pointing at what Step returns until the chunk leaves
// the cache.
func (st *store) seal() {
	first := st.n - len(st.open)
	var base *x86.State
	if first > 0 {
		// The previous step's state: the chunk's first step then
		// stores only what changed since.
		if prev := st.stepLocked(first - 1); prev.Regs != nil {
			base = prev.Regs
		}
	}
	raw := encodeChunk(base, first, st.open)
	var runs []sysRun
	for j := range st.open {
		var sys *x86.SysRegs
		if r := st.open[j].Regs; r != nil {
			sys = r.Sys
		}
		if len(runs) == 0 || runs[len(runs)-1].sys != sys {
			runs = append(runs, sysRun{from: j, sys: sys})
		}
	}
	if len(runs) == 1 && runs[0].sys == nil {
		runs = nil
	}
	st.chunks = append(st.chunks, &sealed{first: first, count: len(st.open), data: compress(raw), raw: len(raw), sys: runs})
	st.remember(&decodedChunk{first: first, steps: st.open})
	st.open = make([]Step, 0, ChunkSteps)
}

func encodeChunk(base *x86.State, first int, steps []Step) []byte {
	e := newChunkEncoder(base)
	for i := range steps {
		e.add(&steps[i])
	}
	return e.bytes(first)
}

// compress returns raw as one gzip member.
func compress(raw []byte) []byte {
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.BestSpeed) // the level is valid
	zw.Write(raw)
	zw.Close()
	return bytes.Clone(b.Bytes())
}

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
	c := st.decode(st.chunks[k])
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
		c = &decodedChunk{first: s.first, steps: make([]Step, s.count)}
		for j := range c.steps {
			c.steps[j] = Step{Index: s.first + j, Regs: &x86.State{}, Intel: "(undecodable)", ATT: "(undecodable)",
				Effects: []annotate.Effect{{Kind: annotate.KindControl, Text: "this step could not be decoded: " + err.Error(), Verdict: annotate.Finding}}}
		}
		return c
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

// index is what the viewer looks steps up by, built once as steps are
// appended or as a file's chunks are checked: steps by event kind, by
// address, by the text a search matches, and where the privilege level
// changes. Step numbers are kept as int32: a trace holds far fewer steps.
type index struct {
	events map[annotate.Event][]int32
	rips   map[uint64]*ripSteps
	cpl    []int32 // steps whose CPL differs from the step before's
	last   int     // the previous step's CPL
	// lines are the distinct (symbol, Intel, AT&T) texts, lower-cased;
	// lineOf gives each step's.
	lineIDs map[string]uint32
	lines   []string
	lineOf  []uint32
	key     []byte
}

type ripSteps struct {
	symbol string // the symbol of the first step at this address
	steps  []int32
}

func (x *index) add(s *Step) {
	if x.events == nil {
		x.events = map[annotate.Event][]int32{}
		x.rips = map[uint64]*ripSteps{}
		x.lineIDs = map[string]uint32{}
	}
	i := int32(s.Index)
	for _, e := range s.Events {
		l := x.events[e]
		if len(l) == 0 || l[len(l)-1] != i {
			x.events[e] = append(l, i)
		}
	}
	r := x.rips[uint64(s.RIP)]
	if r == nil {
		r = &ripSteps{symbol: s.Symbol}
		x.rips[uint64(s.RIP)] = r
	}
	r.steps = append(r.steps, i)
	if s.Index > 0 && s.CPL != x.last {
		x.cpl = append(x.cpl, i)
	}
	x.last = s.CPL
	x.key = append(append(append(append(append(x.key[:0], s.Symbol...), 0), s.Intel...), 0), s.ATT...)
	id, ok := x.lineIDs[string(x.key)]
	if !ok {
		id = uint32(len(x.lines))
		k := string(x.key)
		x.lineIDs[k] = id
		x.lines = append(x.lines, strings.ToLower(k))
	}
	x.lineOf = append(x.lineOf, id)
}

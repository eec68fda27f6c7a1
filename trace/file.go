package trace

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/klauspost/compress/gzip"

	"github.com/sctrace/sctrace/internal/termtext"
	"github.com/sctrace/sctrace/x86"
)

// Version is the trace file version Write writes. Read reads it and
// version 1, the JSON that WriteJSON writes.
//
// A version 2 file is a series of gzip members, so that `gzip -dc` (or
// any reader of concatenated gzip streams) reads it whole:
//
//  1. the head: JSON holding the format, the version, the header, the
//     probes, the final state and the number of steps;
//  2. the chunks, each up to ChunkSteps steps in the compact encoding
//     described in chunk.go (a full register state at the start of each
//     chunk, then each step's changed registers and its strings by
//     number);
//  3. the index: JSON listing each chunk's offset and lengths;
//  4. the trailer: an empty member of fixed size whose gzip extra field
//     holds "SCTRACE2" and the index's offset and length.
//
// A reader opens the file by its trailer and index and decodes a chunk
// when one of its steps is asked for. Every chunk is checked once when
// the file is opened (decompressed and walked without building steps),
// and the indexes the viewer uses (events, addresses, search text) are
// built then.
const Version = 2

// trailerMagic opens the trailer's extra field.
const trailerMagic = "SCTRACE2"

// Limits on what reading a version 2 file accepts besides MaxFileSize.
const (
	maxHeadRaw  = 64 << 20 // the head's JSON
	maxIndexRaw = 64 << 20 // the index's JSON
)

// fileHead is the first member of a version 2 file.
type fileHead struct {
	Format     string      `json:"format"`
	Version    int         `json:"version"`
	Steps      int         `json:"steps"`
	ChunkSteps int         `json:"chunk_steps"`
	Header     Header      `json:"header"`
	Probes     []Probe     `json:"probes,omitempty"`
	UserWrites []UserWrite `json:"user_writes,omitempty"`
	Gaps       []Gap       `json:"gaps,omitempty"`
	Final      *x86.State  `json:"final,omitempty"`
}

// fileIndex is the index member of a version 2 file.
type fileIndex struct {
	Chunks []chunkEntry `json:"chunks"`
	// Lookups are what Open loads instead of reading every chunk.
	Lookups *lookups `json:"lookups,omitempty"`
}

// chunkEntry locates one chunk: the offset of its gzip member in the
// file, the member's length, the length of the encoding it holds, and
// how many steps it holds.
type chunkEntry struct {
	Off   int64 `json:"off"`
	Size  int64 `json:"size"`
	Raw   int   `json:"raw"`
	Count int   `json:"steps"`
}

// countWriter counts what passes through it.
type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
	return n, err
}

func gzipJSON(v any) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return compress(raw), nil
}

// Write saves t in the trace file format, version 2 (see Version): about
// 40 bytes a step. Full chunks are written as they are kept in memory,
// so saving costs little more than the bytes written.
func (t *Trace) Write(w io.Writer) error {
	n := t.Len()
	bw := bufio.NewWriterSize(w, 256<<10)
	cw := &countWriter{w: bw}
	head := fileHead{Format: Format, Version: Version, Steps: n, ChunkSteps: ChunkSteps,
		Header: t.Header, Probes: t.Probes, UserWrites: t.UserWrites, Gaps: t.Gaps, Final: t.Final}
	b, err := gzipJSON(head)
	if err != nil {
		return err
	}
	cw.Write(b)
	var idx fileIndex
	// The chunks compressed already are written as they are.
	type done struct {
		data       []byte
		raw, count int
	}
	var chunks []done
	if t.st != nil {
		t.st.mu.Lock()
		for _, c := range t.st.chunks {
			chunks = append(chunks, done{c.data, c.raw, c.count})
		}
		t.st.mu.Unlock()
	}
	for first := 0; first < n && cw.err == nil; first += ChunkSteps {
		k := first / ChunkSteps
		count := min(ChunkSteps, n-first)
		var data []byte
		raw := 0
		if k < len(chunks) && chunks[k].count == count && chunks[k].data != nil {
			data, raw = chunks[k].data, chunks[k].raw
		} else {
			enc := t.encodeRange(first, count)
			data, raw = compress(enc), len(enc)
		}
		idx.Chunks = append(idx.Chunks, chunkEntry{Off: cw.n, Size: int64(len(data)), Raw: raw, Count: count})
		cw.Write(data)
	}
	if n > 0 {
		last := stepCPL(t.Step(n - 1))
		t.st.mu.Lock()
		idx.Lookups = lookupsOf(&t.st.idx, n, last)
		t.st.mu.Unlock()
	}
	ib, err := gzipJSON(idx)
	if err != nil {
		return err
	}
	ioff := cw.n
	cw.Write(ib)
	cw.Write(trailer(ioff, int64(len(ib))))
	if cw.err != nil {
		return cw.err
	}
	return bw.Flush()
}

// encodeRange encodes steps first..first+count-1 as a chunk.
func (t *Trace) encodeRange(first, count int) []byte {
	var base *x86.State
	if first > 0 {
		base = t.Step(first - 1).Regs
	}
	e := newChunkEncoder(base)
	for i := first; i < first+count; i++ {
		e.add(t.Step(i))
	}
	b := e.bytes(first)
	e.release()
	return b
}

// trailer returns the last member of a version 2 file, which points at
// the index. Its length is trailerSize whatever the numbers.
func trailer(indexOff, indexLen int64) []byte {
	extra := make([]byte, 0, len(trailerMagic)+16)
	extra = append(extra, trailerMagic...)
	extra = binary.LittleEndian.AppendUint64(extra, uint64(indexOff))
	extra = binary.LittleEndian.AppendUint64(extra, uint64(indexLen))
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.NoCompression) // the level is valid
	zw.Extra = extra
	zw.Close()
	return b.Bytes()
}

var trailerSize = len(trailer(0, 0))

// isGzip reports whether b starts like a gzip member.
func isGzip(b []byte) bool { return len(b) >= 2 && b[0] == 0x1f && b[1] == 0x8b }

// errV2 makes the errors of a version 2 file that is not what it claims.
func errV2(format string, args ...any) error {
	return fmt.Errorf("corrupt trace (version 2): "+format, args...)
}

// readMember decompresses the gzip member at b[off:off+size], allowing at
// most max bytes out.
func readMember(b []byte, off, size int64, max int, what string) ([]byte, error) {
	if off < 0 || size <= 0 || off > int64(len(b)) || size > int64(len(b))-off {
		return nil, errV2("the %s at byte %d (%d bytes) is outside the file (%d bytes)", what, off, size, len(b))
	}
	zr, err := gzip.NewReader(bytes.NewReader(b[off : off+size]))
	if err != nil {
		return nil, errV2("the %s at byte %d: %v", what, off, err)
	}
	zr.Multistream(false)
	out, err := io.ReadAll(io.LimitReader(zr, int64(max)+1))
	if err != nil {
		return nil, errV2("the %s at byte %d: %v", what, off, err)
	}
	if len(out) > max {
		return nil, fmt.Errorf("%w: the %s is over %s", ErrTooLarge, what, size64(int64(max)))
	}
	return out, nil
}

func size64(n int64) string { return size(n) }

// readV2 opens a version 2 file held in b. Unless lazy, every chunk is
// checked and the indexes are built from the steps; when lazy they are
// loaded from the file's lookups, and a chunk is first decoded when one
// of its steps is asked for.
func readV2(ctx context.Context, b []byte, lazy bool) (*Trace, error) {
	if len(b) < trailerSize {
		return nil, errV2("the file is cut short (%d bytes, no trailer)", len(b))
	}
	tb := b[len(b)-trailerSize:]
	zr, err := gzip.NewReader(bytes.NewReader(tb))
	if err != nil || len(zr.Extra) != len(trailerMagic)+16 || string(zr.Extra[:len(trailerMagic)]) != trailerMagic {
		return nil, errV2("the file is cut short or damaged: its last %d bytes are not the trailer", trailerSize)
	}
	ioff := int64(binary.LittleEndian.Uint64(zr.Extra[len(trailerMagic):]))
	ilen := int64(binary.LittleEndian.Uint64(zr.Extra[len(trailerMagic)+8:]))
	body := b[:len(b)-trailerSize]
	if ioff < 0 || ilen <= 0 || ioff > int64(len(body)) || ilen != int64(len(body))-ioff {
		return nil, errV2("the trailer puts the index at byte %d (%d bytes) in a file of %d bytes before it", ioff, ilen, len(body))
	}
	ib, err := readMember(body, ioff, ilen, maxIndexRaw, "index")
	if err != nil {
		return nil, err
	}
	var idx fileIndex
	if err := json.Unmarshal(ib, &idx); err != nil {
		return nil, errV2("the index: %v", err)
	}
	// The head runs from the start to the first chunk (or the index).
	hend := ioff
	if len(idx.Chunks) > 0 {
		hend = idx.Chunks[0].Off
	}
	hb, err := readMember(body, 0, hend, maxHeadRaw, "head")
	if err != nil {
		return nil, err
	}
	var head fileHead
	if err := json.Unmarshal(hb, &head); err != nil {
		return nil, errV2("the head: %v", err)
	}
	if head.Format != Format {
		return nil, fmt.Errorf("%w: format is %q, want %q", ErrNotTrace, termtext.Line(head.Format), Format)
	}
	if head.Version != Version {
		return nil, versionError(head.Version)
	}
	if head.ChunkSteps != ChunkSteps {
		return nil, errV2("chunks of %d steps, this sctrace reads chunks of %d", head.ChunkSteps, ChunkSteps)
	}
	// The chunks must tile the file between the head and the index, each
	// full but the last.
	steps, at := 0, hend
	for k, c := range idx.Chunks {
		switch {
		case c.Off != at:
			return nil, errV2("chunk %d is at byte %d, want %d", k, c.Off, at)
		case c.Count <= 0 || c.Count > ChunkSteps || (c.Count < ChunkSteps && k != len(idx.Chunks)-1):
			return nil, errV2("chunk %d holds %d steps", k, c.Count)
		case c.Raw <= 0 || c.Raw > maxChunkRaw:
			return nil, errV2("chunk %d is %d bytes decompressed", k, c.Raw)
		case c.Size <= 0 || c.Size > ioff-at:
			return nil, errV2("chunk %d (%d bytes at byte %d) runs past the index", k, c.Size, c.Off)
		}
		steps += c.Count
		at += c.Size
	}
	if at != ioff {
		return nil, errV2("%d bytes between the last chunk and the index", ioff-at)
	}
	if steps != head.Steps {
		return nil, errV2("the head says %d steps, the chunks hold %d", head.Steps, steps)
	}
	t := &Trace{Format: head.Format, Version: head.Version, Header: head.Header, Probes: head.Probes,
		UserWrites: head.UserWrites, Gaps: head.Gaps, Final: head.Final, lim: -1}
	for i, p := range t.Probes {
		if p.Step < 0 || p.Step > steps {
			return nil, fmt.Errorf("corrupt trace: probe %d ran before step %d of %d", i, p.Step, steps)
		}
	}
	for i, w := range t.UserWrites {
		if w.Step < 0 || w.Step > steps {
			return nil, fmt.Errorf("corrupt trace: write by hand %d made before step %d of %d", i, w.Step, steps)
		}
	}
	if err := checkGaps(t.Gaps, steps); err != nil {
		return nil, err
	}
	termtext.LineAll(&t.Header)
	termtext.LineAll(&t.Probes)
	termtext.LineAll(&t.UserWrites)
	termtext.LineAll(&t.Gaps)
	termtext.LineAll(&t.Final)
	st := &store{clean: true, n: steps}
	for _, c := range idx.Chunks {
		first := len(st.chunks) * ChunkSteps
		s := &sealed{first: first, count: c.Count, data: body[c.Off : c.Off+c.Size : c.Off+c.Size], raw: c.Raw}
		if c.Count == ChunkSteps {
			st.chunks = append(st.chunks, s)
			continue
		}
		// The last, partial chunk becomes the open steps, so that
		// appending goes on from it. Opened to be viewed (lazy, with
		// the lookups in the index), a damaged one reads as steps that
		// say so, as a damaged full chunk does when it is decoded.
		full, err := decompress(s.data, s.raw)
		var d *decodedChunk
		if err == nil {
			d, err = decodeChunk(full, s.first, s.count, chunkOpts{clean: true})
		}
		switch {
		case err != nil && lazy && idx.Lookups != nil:
			d = &decodedChunk{first: s.first, steps: damagedSteps(s.first, s.count, errV2("chunk %d: %v", len(st.chunks), err))}
		case err != nil:
			return nil, errV2("chunk %d: %v", len(st.chunks), err)
		}
		st.open = make([]Step, 0, ChunkSteps)
		st.open = append(st.open, d.steps...)
	}
	if st.open == nil {
		st.open = make([]Step, 0, ChunkSteps)
	}
	if lazy && idx.Lookups != nil {
		x, err := idx.Lookups.index(steps)
		if err != nil {
			return nil, err
		}
		st.idx = *x
		t.st = st
		return t, nil
	}
	if err := st.verify(ctx); err != nil {
		return nil, err
	}
	t.st = st
	return t, nil
}

// checkChunk decompresses and walks one chunk, returning its steps'
// index.
func (st *store) checkChunk(s *sealed) (*index, error) {
	raw, err := decompress(s.data, s.raw)
	if err != nil {
		return nil, errV2("chunk %d: %v", s.first/ChunkSteps, err)
	}
	var x index
	_, err = decodeChunk(raw, s.first, s.count, chunkOpts{clean: true, verify: true, visit: x.addLine})
	if err != nil {
		return nil, errV2("chunk %d: %w", s.first/ChunkSteps, err)
	}
	return &x, nil
}

// verify checks every full chunk, several at a time, and builds the
// indexes from them in order, then from the open steps.
func (st *store) verify(ctx context.Context) error {
	type result struct {
		idx  *index
		err  error
		done chan struct{}
	}
	res := make([]result, len(st.chunks))
	for k := range res {
		res[k].done = make(chan struct{})
	}
	work := make(chan int)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	defer func() { close(stop); wg.Wait() }()
	for range max(1, runtime.GOMAXPROCS(0)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range work {
				res[k].idx, res[k].err = st.checkChunk(st.chunks[k])
				close(res[k].done)
			}
		}()
	}
	go func() {
		defer close(work)
		for k := range res {
			select {
			case work <- k:
			case <-stop:
				return
			}
		}
	}()
	for k := range res {
		select {
		case <-res[k].done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if res[k].err != nil {
			return res[k].err
		}
		st.idx.merge(res[k].idx)
		res[k].idx = nil
	}
	for j := range st.open {
		st.idx.add(&st.open[j])
	}
	if len(st.idx.lineOf) != st.n {
		return errV2("%d steps indexed of %d", len(st.idx.lineOf), st.n)
	}
	return nil
}

// readAllLimited reads r to its end, refusing more than MaxFileSize bytes.
func readAllLimited(ctx context.Context, r io.Reader, hint int64) ([]byte, error) {
	var buf bytes.Buffer
	if hint > 0 && hint <= MaxFileSize {
		buf.Grow(int(hint) + 1)
	}
	p := make([]byte, 256<<10)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n, err := r.Read(p)
		if int64(buf.Len()+n) > MaxFileSize {
			return nil, &limitError{limit: MaxFileSize}
		}
		buf.Write(p[:n])
		if errors.Is(err, io.EOF) {
			return buf.Bytes(), nil
		}
		if err != nil {
			return nil, err
		}
	}
}

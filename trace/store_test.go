package trace

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/x86"
)

// bigTrace returns a trace of n steps made from the steps of
// testdata/int80.json, repeated with registers that differ from one
// repetition to the next, as a long recording's do.
func bigTrace(tb testing.TB, n int) (*Trace, []Step) {
	tb.Helper()
	src := readTestTrace(tb)
	t := withSteps(src, nil)
	var want []Step
	for i := range n {
		s := *src.Step(i % src.Len())
		regs := *s.Regs
		regs.Set(x86.RAX, uint64(i))
		regs.R[x86.R11] += uint64(i / src.Len())
		s.Regs = &regs
		t.Append(s)
		s.Index = i
		want = append(want, s)
	}
	return t, want
}

// TestStoreKeepsSteps checks that every step reads back as it was
// appended, from the chunks kept in memory and from a version 2 file,
// and that the JSON of both is the JSON of the steps appended.
func TestStoreKeepsSteps(t *testing.T) {
	const n = 3*ChunkSteps + 17
	tr, want := bigTrace(t, n)
	var buf bytes.Buffer
	if err := tr.Write(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := Read(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	opened, err := readV2(context.Background(), buf.Bytes(), true)
	if err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string]*Trace{"in memory": tr, "read back": back, "opened": opened} {
		if got.Len() != n {
			t.Fatalf("%s: %d steps, want %d", name, got.Len(), n)
		}
		// Out of order, so that chunks leave the cache and are decoded again.
		for _, i := range []int{0, n - 1, ChunkSteps, ChunkSteps - 1, 2*ChunkSteps + 5, 1, n - 17, 5 * 1, 3 * ChunkSteps} {
			if !reflect.DeepEqual(got.Step(i), &want[i]) {
				t.Errorf("%s: step %d\n got %+v\nwant %+v", name, i, got.Step(i), &want[i])
			}
		}
		for i, s := range got.All() {
			if !reflect.DeepEqual(s, &want[i]) {
				t.Fatalf("%s: step %d differs:\n got %+v\nwant %+v", name, i, s, &want[i])
			}
		}
	}
	var a bytes.Buffer
	if err := tr.WriteJSON(&a); err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string]*Trace{"read back": back, "opened": opened} {
		var b bytes.Buffer
		if err := got.WriteJSON(&b); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a.Bytes(), b.Bytes()) {
			t.Errorf("%s: the JSON differs from the JSON of the trace written", name)
		}
		// Written again, a trace file is the same file.
		b.Reset()
		if err := got.Write(&b); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), b.Bytes()) {
			t.Errorf("%s: written again, the trace file differs", name)
		}
	}
}

// TestViewIsStable checks that a view shows the steps it was taken with
// while the trace it came from goes on growing, across chunk ends.
func TestViewIsStable(t *testing.T) {
	tr, _ := bigTrace(t, ChunkSteps-3)
	v := tr.View(tr.Len())
	last := *v.Step(v.Len() - 1)
	src := readTestTrace(t)
	for i := range 10 {
		tr.Append(*src.Step(i))
	}
	if v.Len() != ChunkSteps-3 || !reflect.DeepEqual(*v.Step(v.Len() - 1), last) {
		t.Errorf("the view has %d steps, want %d, and its last must not change", v.Len(), ChunkSteps-3)
	}
	if tr.Len() != ChunkSteps+7 {
		t.Errorf("the trace has %d steps, want %d", tr.Len(), ChunkSteps+7)
	}
	// Appending to the view leaves the trace alone.
	v.Append(*src.Step(0))
	if v.Len() != ChunkSteps-2 || tr.Len() != ChunkSteps+7 || v.Step(v.Len()-1).Index != ChunkSteps-3 {
		t.Errorf("after appending to the view: view %d, trace %d steps", v.Len(), tr.Len())
	}
	var buf bytes.Buffer
	if err := tr.View(ChunkSteps + 2).Write(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := Read(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if back.Len() != ChunkSteps+2 || !reflect.DeepEqual(back.Step(ChunkSteps+1), tr.Step(ChunkSteps+1)) {
		t.Errorf("a view written and read: %d steps", back.Len())
	}
}

// TestReadV2Damaged cuts, flips and pads a version 2 file and checks
// that each gets an error that says what is wrong, never a panic.
func TestReadV2Damaged(t *testing.T) {
	tr, _ := bigTrace(t, ChunkSteps+100)
	var buf bytes.Buffer
	if err := tr.Write(&buf); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	flip := func(at int) []byte {
		b := bytes.Clone(good)
		b[at] ^= 0x40
		return b
	}
	for _, tt := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty gzip magic", good[:2], "no trailer"},
		{"cut in the middle", good[:len(good)/2], "not the trailer"},
		{"cut by one byte", good[:len(good)-1], "not the trailer"},
		{"a byte more", append(bytes.Clone(good), 0), "not the trailer"},
		{"a chunk's byte flipped", flip(len(good) / 3), "chunk 0"},
		{"the index's byte flipped", flip(len(good) - trailerSize - 10), "index"},
		{"the head's byte flipped", flip(20), "head"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Read(bytes.NewReader(tt.data))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Read = %v, want an error about %q", err, tt.want)
			}
		})
	}
	// Opened to be viewed, a file whose chunk is damaged opens, and the
	// chunk's steps say what is wrong with them when they are shown.
	opened, err := readV2(context.Background(), flip(len(good)/3), true)
	if err != nil {
		t.Fatalf("Open of a file with a damaged chunk: %v", err)
	}
	s := opened.Step(5)
	if len(s.Effects) != 1 || s.Effects[0].Verdict != annotate.Finding || !strings.Contains(s.Effects[0].Text, "could not be decoded") || s.Regs == nil {
		t.Errorf("a step of a damaged chunk: %+v", s)
	}
	if ok := opened.Step(ChunkSteps + 5); !reflect.DeepEqual(ok, tr.Step(ChunkSteps+5)) {
		t.Errorf("a step of the undamaged chunk after it differs: %+v", ok)
	}
}

// TestIndexes checks the lookups the viewer uses against a scan of the
// steps.
func TestIndexes(t *testing.T) {
	tr, want := bigTrace(t, 2*ChunkSteps+50)
	var buf bytes.Buffer
	if err := tr.Write(&buf); err != nil {
		t.Fatal(err)
	}
	opened, err := readV2(context.Background(), buf.Bytes(), true)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Read(&buf)
	if err != nil {
		t.Fatal(err)
	}
	// As the log recorder appends: with a hint kept for each instruction.
	hinted := withSteps(readTestTrace(t), nil)
	hints := map[Hex]*lineHint{}
	for _, s := range want {
		if hints[s.RIP] == nil {
			hints[s.RIP] = &lineHint{}
		}
		hinted.appendLine(s, hints[s.RIP])
	}
	for name, tr := range map[string]*Trace{"in memory": tr, "read back": back, "opened": opened, "hinted": hinted} {
		for _, from := range []int{0, 7, ChunkSteps + 3, len(want) - 1} {
			for _, ev := range []string{"cpl-change", "swapgs", "stack-switch", "iret"} {
				next, prev := -1, -1
				for k := from; k < len(want) && next < 0; k++ {
					for _, e := range want[k].Events {
						if string(e) == ev && next < 0 {
							next = k
						}
					}
				}
				for k := from - 1; k >= 0 && prev < 0; k-- {
					for _, e := range want[k].Events {
						if string(e) == ev && prev < 0 {
							prev = k
						}
					}
				}
				if got := tr.NextEvent(from, eventsOf(ev)...); got != next {
					t.Errorf("%s: NextEvent(%d, %s) = %d, want %d", name, from, ev, got, next)
				}
				if got := tr.PrevEvent(from, eventsOf(ev)...); got != prev {
					t.Errorf("%s: PrevEvent(%d, %s) = %d, want %d", name, from, ev, got, prev)
				}
			}
			for _, q := range []string{"SWAPGS", "iretq", "entry_int80", "no such thing"} {
				found := -1
				for i := 1; i <= len(want) && found < 0; i++ {
					k := (from + i) % len(want)
					s := want[k]
					if strings.Contains(strings.ToLower(s.Symbol+"\x00"+s.Intel+"\x00"+s.ATT), strings.ToLower(q)) {
						found = k
					}
				}
				if got := tr.Search(from, q); got != found {
					t.Errorf("%s: Search(%d, %q) = %d, want %d", name, from, q, got, found)
				}
			}
			rip := uint64(want[(from+5)%len(want)].RIP)
			at := -1
			for k := from; k < len(want) && at < 0; k++ {
				if uint64(want[k].RIP) == rip {
					at = k
				}
			}
			if got := tr.NextAt(from, rip); got != at {
				t.Errorf("%s: NextAt(%d, %#x) = %d, want %d", name, from, rip, got, at)
			}
			cpl := -1
			for k := max(from, 1); k < len(want) && cpl < 0; k++ {
				if want[k].Regs.CPL() != want[k-1].Regs.CPL() {
					cpl = k
				}
			}
			if got := tr.NextCPLChange(from); got != cpl {
				t.Errorf("%s: NextCPLChange(%d) = %d, want %d", name, from, got, cpl)
			}
		}
	}
}

func TestChunkDecodeNeverPanics(t *testing.T) {
	tr, _ := bigTrace(t, 40)
	raw := tr.encodeRange(0, 40)
	for i := range raw {
		for _, b := range []byte{0, 0xff, raw[i] + 1} {
			bad := bytes.Clone(raw)
			bad[i] = b
			_, err := decodeChunk(bad, 0, 40, chunkOpts{clean: true})
			if err != nil && !errors.Is(err, errChunk) {
				t.Fatalf("byte %d = %#x: %v does not wrap errChunk", i, b, err)
			}
		}
		if _, err := decodeChunk(raw[:i], 0, 40, chunkOpts{}); err == nil {
			t.Fatalf("a chunk cut at byte %d of %d decoded", i, len(raw))
		}
	}
}

func eventsOf(names ...string) []annotate.Event {
	var out []annotate.Event
	for _, n := range names {
		out = append(out, annotate.Event(n))
	}
	return out
}

// TestAppendWhileReading appends steps across several chunk ends (whose
// compression runs in the background) while another goroutine takes
// views, reads their steps and writes them: run with -race, and every
// step read must be the step appended.
func TestAppendWhileReading(t *testing.T) {
	_, want := bigTrace(t, 5*ChunkSteps+3)
	tr := New()
	done := make(chan struct{})
	errs := make(chan error, 1)
	go func() {
		defer close(errs)
		for {
			select {
			case <-done:
				return
			default:
			}
			v := tr.View(tr.Len())
			n := v.Len()
			for _, i := range []int{0, n / 2, n - 1, n - ChunkSteps} {
				if i >= 0 && i < n && !reflect.DeepEqual(v.Step(i), &want[i]) {
					errs <- fmt.Errorf("step %d of a view of %d differs", i, n)
					return
				}
			}
			if err := v.Write(io.Discard); err != nil {
				errs <- err
				return
			}
		}
	}()
	for _, s := range want {
		tr.Append(s)
	}
	close(done)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	for i, s := range tr.All() {
		if !reflect.DeepEqual(s, &want[i]) {
			t.Fatalf("step %d differs", i)
		}
	}
}

// TestMarshalJSON: a trace inside other JSON keeps its steps.
func TestMarshalJSON(t *testing.T) {
	tr := readTestTrace(t)
	b, err := json.Marshal(struct{ T *Trace }{tr})
	if err != nil {
		t.Fatal(err)
	}
	var back struct{ T *Trace }
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.T.Len() != tr.Len() || !reflect.DeepEqual(back.T.Step(3), tr.Step(3)) {
		t.Errorf("%d steps back of %d", back.T.Len(), tr.Len())
	}
}

// damagedFile is a version 2 file of testdata/int80.json (one partial
// chunk) with a byte of its chunk's gzip checksum flipped; -update writes
// it again.
const damagedFile = "testdata/damaged-chunk0.sctrace"

// TestOpenDamagedLastChunk checks damagedFile: Read refuses it naming the
// chunk, and Open, as the interactive view opens a file, opens it with the
// chunk's steps saying they could not be decoded.
func TestOpenDamagedLastChunk(t *testing.T) {
	tr := readTestTrace(t)
	if tr.Len() >= ChunkSteps {
		t.Fatalf("the test trace has %d steps, want a partial chunk", tr.Len())
	}
	if *update {
		var buf bytes.Buffer
		if err := tr.Write(&buf); err != nil {
			t.Fatal(err)
		}
		b := buf.Bytes()
		zr, err := gzip.NewReader(bytes.NewReader(b[len(b)-trailerSize:]))
		if err != nil {
			t.Fatal(err)
		}
		ioff := int64(binary.LittleEndian.Uint64(zr.Extra[len(trailerMagic):]))
		ilen := int64(binary.LittleEndian.Uint64(zr.Extra[len(trailerMagic)+8:]))
		ib, err := readMember(b[:len(b)-trailerSize], ioff, ilen, maxIndexRaw, "index")
		if err != nil {
			t.Fatal(err)
		}
		var idx fileIndex
		if err := json.Unmarshal(ib, &idx); err != nil || len(idx.Chunks) != 1 {
			t.Fatalf("index: %v, %d chunks, want 1", err, len(idx.Chunks))
		}
		c := idx.Chunks[0]
		// A gzip member ends in CRC-32 and length (RFC 1952): the byte
		// 8 from the end is the checksum's first.
		b[c.Off+c.Size-8] ^= 0xff
		if err := os.WriteFile(damagedFile, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(damagedFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Read(bytes.NewReader(b)); err == nil || !strings.Contains(err.Error(), "chunk 0: gzip: invalid checksum") {
		t.Errorf("Read = %v, want an error naming chunk 0's checksum", err)
	}
	opened, err := Open(context.Background(), damagedFile)
	if err != nil {
		t.Fatalf("Open of a file with its last chunk damaged: %v", err)
	}
	if opened.Len() != tr.Len() {
		t.Errorf("opened %d steps, want %d", opened.Len(), tr.Len())
	}
	for _, i := range []int{0, tr.Len() - 1} {
		s := opened.Step(i)
		if s.Index != i || len(s.Effects) != 1 || s.Effects[0].Verdict != annotate.Finding ||
			!strings.Contains(s.Effects[0].Text, "could not be decoded") || !strings.Contains(s.Effects[0].Text, "chunk 0") || s.Regs == nil {
			t.Errorf("step %d of the damaged chunk: %+v", i, s)
		}
	}
}

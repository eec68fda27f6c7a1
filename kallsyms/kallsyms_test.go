package kallsyms

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// sym is one symbol of a synthetic table.
type sym struct {
	typ  byte
	name string
	addr uint64
}

// layout chooses how build lays the tables out, after the kernel versions
// that used each arrangement.
type layout struct {
	offsetsAfter bool // kallsyms_offsets after the token index (later kernels)
	seqs         bool // kallsyms_seqs_of_names between markers and tokens (6.2 on)
	wideMarkers  bool // 64-bit markers (older kernels)
	absolute     bool // 64-bit kallsyms_addresses (no base-relative)
}

const relBase = 0xffffffff81000000

// build assembles kallsyms tables as scripts/kallsyms.c lays them out, at
// virtual address base, with a token table that maps each byte to itself
// except 0x01, which expands to "entry_" (so names are really expanded).
func build(t *testing.T, base uint64, syms []sym, lay layout) []byte {
	t.Helper()
	var img bytes.Buffer
	img.Write(bytes.Repeat([]byte{0xcc}, 24)) // something before the tables
	align := func() {
		for (base+uint64(img.Len()))%8 != 0 {
			img.WriteByte(0)
		}
	}
	u32 := func(v uint32) { binary.Write(&img, binary.LittleEndian, v) }
	u64 := func(v uint64) { binary.Write(&img, binary.LittleEndian, v) }
	n := len(syms)
	neg := false
	for _, s := range syms {
		neg = neg || s.addr < relBase
	}
	offsets := func() {
		align()
		for _, s := range syms {
			switch {
			case s.addr < relBase: // absolute per-CPU
				u32(uint32(s.addr))
			case neg:
				u32(uint32(int32(-int64(s.addr-relBase) - 1)))
			default:
				u32(uint32(s.addr - relBase))
			}
		}
		align()
		u64(relBase)
	}
	switch {
	case lay.absolute:
		align()
		for _, s := range syms {
			u64(s.addr)
		}
	case !lay.offsetsAfter:
		offsets()
	}
	align()
	u32(uint32(n))
	align()
	var markers []uint64
	start := img.Len()
	for i, s := range syms {
		if i%256 == 0 {
			markers = append(markers, uint64(img.Len()-start))
		}
		enc := []byte(string(s.typ) + strings.ReplaceAll(s.name, "entry_", "\x01"))
		if l := len(enc); l > 0x7f {
			img.Write([]byte{byte(l&0x7f | 0x80), byte(l >> 7)})
		} else {
			img.WriteByte(byte(l))
		}
		img.Write(enc)
	}
	align()
	for _, m := range markers {
		if lay.wideMarkers {
			u64(m)
		} else {
			u32(uint32(m))
		}
	}
	if lay.seqs {
		align()
		for i := range n {
			u32(uint32(i))
		}
	}
	align()
	tt := img.Len()
	var idx []uint16
	for c := range 256 {
		idx = append(idx, uint16(img.Len()-tt))
		switch {
		case c == 1:
			img.WriteString("entry_")
		case c == 0:
			img.WriteString("?0")
		default:
			img.WriteByte(byte(c))
		}
		img.WriteByte(0)
	}
	align()
	for _, v := range idx {
		binary.Write(&img, binary.LittleEndian, v)
	}
	if lay.offsetsAfter && !lay.absolute {
		offsets()
	}
	img.Write(bytes.Repeat([]byte{0xcc}, 64))
	return img.Bytes()
}

// kernelSyms returns n symbols in address order: a few per-CPU ones when
// percpu is set, then text with one very long (two-byte length) name.
func kernelSyms(n int, percpu bool) []sym {
	var out []sym
	if percpu {
		out = append(out, sym{'A', "fixed_percpu_data", 0}, sym{'D', "cpu_tss_rw", 0x6000}, sym{'D', "pcpu_hot", 0x1fb40})
	}
	out = append(out, sym{'T', "_text", relBase}, sym{'T', "startup_64", relBase})
	for i := len(out); i < n-2; i++ {
		out = append(out, sym{'t', fmt.Sprintf("func_%05d", i), relBase + 0x1000 + uint64(i)*0x40})
	}
	last := out[len(out)-1].addr
	out = append(out,
		sym{'T', "entry_SYSCALL_64", last + 0x40},
		sym{'T', "entry_" + strings.Repeat("long", 40), last + 0x80})
	return out
}

func TestFind(t *testing.T) {
	tests := []struct {
		name   string
		lay    layout
		percpu bool
		enc    string
	}{
		{"6.1: offsets first, absolute per-CPU", layout{}, true, EncodingAbsolutePercpu},
		{"6.2+: seqs_of_names", layout{seqs: true}, true, EncodingAbsolutePercpu},
		{"offsets after the token index", layout{offsetsAfter: true, seqs: true}, true, EncodingAbsolutePercpu},
		{"relative only", layout{}, false, EncodingRelative},
		{"64-bit markers", layout{wideMarkers: true}, true, EncodingAbsolutePercpu},
		{"absolute addresses", layout{absolute: true, wideMarkers: true}, false, EncodingAbsolute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			syms := kernelSyms(1300, tt.percpu)
			const base = 0xffffffff82000004
			img := build(t, base, syms, tt.lay)
			res, err := Find(img, base)
			if err != nil {
				t.Fatal(err)
			}
			if res.Layout.Count != len(syms) || len(res.Symbols) != len(syms) {
				t.Fatalf("%d symbols, want %d", len(res.Symbols), len(syms))
			}
			if res.Layout.Encoding != tt.enc {
				t.Errorf("encoding %q, want %q", res.Layout.Encoding, tt.enc)
			}
			for i, s := range syms {
				got := res.Symbols[i]
				if got.Name != s.name || got.Addr != s.addr || got.Type != s.typ {
					t.Fatalf("symbol %d = %c %s %#x, want %c %s %#x", i, got.Type, got.Name, got.Addr, s.typ, s.name, s.addr)
				}
			}
			if a, ok := res.Table("test").Addr("entry_SYSCALL_64"); !ok || a != syms[len(syms)-2].addr {
				t.Errorf("entry_SYSCALL_64 = %#x, %v", a, ok)
			}
		})
	}
}

func TestFindNothing(t *testing.T) {
	tests := []struct {
		name string
		img  []byte
	}{
		{"empty", nil},
		{"no token table", bytes.Repeat([]byte("kernel text "), 1000)},
		{"digits without a table", append(bytes.Repeat([]byte{0xff}, 64), digits...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Find(tt.img, 0xffffffff81000000); !errors.Is(err, ErrNotFound) {
				t.Errorf("Find = %v, want ErrNotFound", err)
			}
		})
	}
}

// fakeMemory serves an image at a base address, with unmapped holes.
type fakeMemory struct {
	base  uint64
	img   []byte
	holes [][2]uint64
	reads int
}

func (m *fakeMemory) ReadMemory(_ context.Context, addr uint64, n int) ([]byte, error) {
	m.reads++
	for _, h := range m.holes {
		if addr < h[1] && addr+uint64(n) > h[0] {
			return nil, fmt.Errorf("read %#x: E14", addr)
		}
	}
	if addr < m.base || addr+uint64(n) > m.base+uint64(len(m.img)) {
		return nil, fmt.Errorf("read %#x: E14", addr)
	}
	return m.img[addr-m.base : addr-m.base+uint64(n)], nil
}

// TestRead finds the tables over a Memory from an address in the text
// before them, across an unmapped gap like the one between Linux's text
// and read-only data.
func TestRead(t *testing.T) {
	syms := kernelSyms(3000, true)
	const base = 0xffffffff81000000
	tables := build(t, base+0x300000, syms, layout{seqs: true})
	img := append(bytes.Repeat([]byte{0x90}, 0x300000), tables...)
	img = append(img, make([]byte, 1<<20)...)
	mem := &fakeMemory{base: base, img: img, holes: [][2]uint64{{base + 0x100000, base + 0x200000}}}
	res, err := Read(context.Background(), mem, base+0x1234, ReadOptions{Chunk: 64 << 10, Limit: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Symbols) != len(syms) || res.Symbols[len(syms)-2].Name != "entry_SYSCALL_64" {
		t.Errorf("read %d symbols, last but one %q", len(res.Symbols), res.Symbols[len(res.Symbols)-2].Name)
	}
	if _, err := Read(context.Background(), &fakeMemory{base: base, img: img[:0x300000]}, base, ReadOptions{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Read without tables = %v, want ErrNotFound", err)
	}
}

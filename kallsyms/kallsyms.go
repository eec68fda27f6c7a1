// Package kallsyms reads the symbol table a Linux kernel keeps in its own
// memory for /proc/kallsyms, so that sctrace can name kernel addresses
// without a vmlinux or System.map: distribution kernels ship neither in a
// usable form.
//
// The tables are those scripts/kallsyms.c generates for kernels 4.x to 6.x:
// kallsyms_num_syms, kallsyms_names (each name a length, in one byte or two
// ULEB128 bytes, then indices into a token table, the first token's first
// character being the nm type letter), kallsyms_markers (the offset of
// every 256th name), kallsyms_token_table (256 NUL-terminated strings),
// kallsyms_token_index (their 16-bit offsets), and the addresses: 32-bit
// kallsyms_offsets from kallsyms_relative_base (with or without absolute
// per-CPU symbols) or, in old kernels, 64-bit kallsyms_addresses. The
// tables are found by their shape, not by symbols: the token table holds
// the digits "0" to "9" as consecutive one-character tokens, and everything
// else is checked against it. The layout differs across versions (the
// offsets come before kallsyms_num_syms up to 6.x and after the token index
// in some later ones); Find tries each.
//
// Find works on a copy of guest memory; Read copies it from a live guest
// over any Memory, such as a *target.Target.
package kallsyms

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/x86"
)

// Layout says where the tables were found, as virtual addresses.
type Layout struct {
	NumSyms      uint64 `json:"num_syms"`
	Names        uint64 `json:"names"`
	Markers      uint64 `json:"markers"`
	TokenTable   uint64 `json:"token_table"`
	TokenIndex   uint64 `json:"token_index"`
	Addresses    uint64 `json:"addresses"`     // kallsyms_offsets or kallsyms_addresses
	RelativeBase uint64 `json:"relative_base"` // the value of kallsyms_relative_base; 0 with absolute addresses
	Count        int    `json:"count"`
	// Encoding is how addresses are stored: "relative", "relative with
	// absolute per-CPU" or "absolute".
	Encoding string `json:"encoding"`
}

// Address encodings.
const (
	EncodingRelative       = "relative"
	EncodingAbsolutePercpu = "relative with absolute per-CPU"
	EncodingAbsolute       = "absolute"
)

// Result is a decoded symbol table.
type Result struct {
	Symbols []symbols.Symbol // in kallsyms order (by address)
	Layout  Layout
}

// Table returns the symbols as a symbols.Table.
func (r *Result) Table(source string) *symbols.Table { return symbols.New(source, r.Symbols) }

// ErrNotFound is returned (wrapped) when no kallsyms tables are in the
// memory searched.
var ErrNotFound = errors.New("no kallsyms tables found")

// digits is the run of one-character tokens every token table holds.
var digits = []byte("0\x001\x002\x003\x004\x005\x006\x007\x008\x009\x00")

// Limits on what a plausible table looks like.
const (
	minSyms    = 1000
	maxSyms    = 1 << 22
	maxNameLen = 0x3fff
)

// Find decodes the kallsyms tables in img, a copy of guest memory starting
// at virtual address base. Bytes that could not be read should be zero.
func Find(img []byte, base uint64) (*Result, error) {
	var errs []error
	for from := 0; ; {
		i := bytes.Index(img[from:], digits)
		if i < 0 {
			break
		}
		p := from + i
		from = p + 1
		tt, ti, err := tokenTable(img, base, p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		res, err := fromTokens(img, base, tt, ti)
		if err != nil {
			errs = append(errs, fmt.Errorf("token table at %#x: %w", base+uint64(tt), err))
			continue
		}
		return res, nil
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w in %d bytes at %#x: %w", ErrNotFound, len(img), base, errors.Join(errs...))
	}
	return nil, fmt.Errorf("%w in %d bytes at %#x (no token table)", ErrNotFound, len(img), base)
}

// tokens is a decoded token table.
type tokens [256]string

// tokenTable checks that the digit run at p is tokens 0x30-0x39 of a token
// table followed by its index, and returns the table's and the index's
// offsets in img.
func tokenTable(img []byte, base uint64, p int) (int, int, error) {
	// Walk to the end of token 255.
	e := p
	for n := 0; n < 256-'0'; n++ {
		k := bytes.IndexByte(img[e:], 0)
		if k < 0 {
			return 0, 0, fmt.Errorf("digit run at %#x: no token table end", base+uint64(p))
		}
		e += k + 1
	}
	ti := align8(base, e)
	if ti+512 > len(img) {
		return 0, 0, fmt.Errorf("digit run at %#x: token index past the memory read", base+uint64(p))
	}
	tt := p - int(le16(img[ti+2*'0':]))
	if tt < 0 || le16(img[ti:]) != 0 || (base+uint64(tt))%8 != 0 {
		return 0, 0, fmt.Errorf("digit run at %#x: no token index after it", base+uint64(p))
	}
	off := 0
	for i := range 256 {
		if int(le16(img[ti+2*i:])) != off {
			return 0, 0, fmt.Errorf("digit run at %#x: token index entry %d is %d, want %d", base+uint64(p), i, le16(img[ti+2*i:]), off)
		}
		k := bytes.IndexByte(img[tt+off:], 0)
		if k < 0 {
			return 0, 0, fmt.Errorf("digit run at %#x: token %d unterminated", base+uint64(p), i)
		}
		off += k + 1
	}
	if tt+off != e {
		return 0, 0, fmt.Errorf("digit run at %#x: token table ends at %#x, want %#x", base+uint64(p), base+uint64(tt+off), base+uint64(e))
	}
	return tt, ti, nil
}

// fromTokens finds the names before the token table and the addresses, and
// decodes them.
func fromTokens(img []byte, base uint64, tt, ti int) (*Result, error) {
	var tok tokens
	for i := range 256 {
		s := img[tt+int(le16(img[ti+2*i:])):]
		tok[i] = string(s[:bytes.IndexByte(s, 0)])
	}
	// kallsyms_num_syms sits 8 bytes before kallsyms_names; search down from
	// the token table for a count whose names decode and end at the markers.
	for a := align8(base, tt) - 8; a >= 0; a -= 8 {
		n := int(le32(img[a:]))
		if n < minSyms || n > maxSyms || le32(img[a+4:]) != 0 {
			continue
		}
		names, end, ok := walkNames(img, a+8, n, tt, &tok)
		if !ok {
			continue
		}
		markers := align8(base, end)
		if !checkMarkers(img, markers, names, tt) {
			continue
		}
		lay := Layout{
			NumSyms: base + uint64(a), Names: base + uint64(a+8), Markers: base + uint64(markers),
			TokenTable: base + uint64(tt), TokenIndex: base + uint64(ti), Count: n,
		}
		addrs, err := addresses(img, base, a, ti, n, &lay)
		if err != nil {
			return nil, fmt.Errorf("%d names at %#x: %w", n, lay.Names, err)
		}
		res := &Result{Layout: lay, Symbols: make([]symbols.Symbol, n)}
		for i, off := range names {
			typ, name := expand(img, off, &tok)
			res.Symbols[i] = symbols.Symbol{Name: name, Addr: addrs[i], Type: typ}
		}
		return res, nil
	}
	return nil, errors.New("no kallsyms_num_syms and kallsyms_names before it")
}

// walkNames checks that n names start at off and end before limit, each
// beginning with a type letter, and returns each name's offset and the end.
func walkNames(img []byte, off, n, limit int, tok *tokens) ([]int, int, bool) {
	names := make([]int, 0, n)
	for range n {
		if off+2 > limit {
			return nil, 0, false
		}
		l, hdr := int(img[off]), 1
		if l&0x80 != 0 {
			l, hdr = l&0x7f|int(img[off+1])<<7, 2
		}
		if l == 0 || l > maxNameLen || off+hdr+l > limit {
			return nil, 0, false
		}
		first := tok[img[off+hdr]]
		if first == "" || !isType(first[0]) {
			return nil, 0, false
		}
		names = append(names, off)
		off += hdr + l
	}
	return names, off, true
}

// checkMarkers checks kallsyms_markers at off: the offset of every 256th
// name from the first, as 32- or 64-bit words, and reports whether they
// are there in either size.
func checkMarkers(img []byte, off int, names []int, limit int) bool {
	want := func(k int) uint64 { return uint64(names[256*k] - names[0]) }
	count := (len(names) + 255) / 256
	for _, size := range []int{4, 8} {
		if off+size*count > limit {
			continue
		}
		ok := true
		for k := 0; k < count && ok; k++ {
			var v uint64
			if size == 4 {
				v = uint64(le32(img[off+4*k:]))
			} else {
				v = le64(img[off+8*k:])
			}
			ok = v == want(k)
		}
		if ok {
			return true
		}
	}
	return false
}

// addresses finds and decodes the symbol addresses: 32-bit offsets before
// kallsyms_num_syms (at numSyms) or after the token index (at ti), or
// 64-bit absolute addresses before kallsyms_num_syms. It fills the layout's
// address fields.
func addresses(img []byte, base uint64, numSyms, ti, n int, lay *Layout) ([]uint64, error) {
	type cand struct {
		offsets, relBase int
	}
	var cands []cand
	// Offsets, then kallsyms_relative_base, then kallsyms_num_syms.
	if rb := numSyms - 8; rb >= 0 {
		if o := rb - roundUp8(4*n); o >= 0 {
			cands = append(cands, cand{o, rb})
		}
	}
	// The token index, then offsets, then kallsyms_relative_base.
	o := align8(base, ti+512)
	cands = append(cands, cand{o, align8(base, o+4*n)})
	for _, c := range cands {
		if c.relBase+8 > len(img) {
			continue
		}
		rel := le64(img[c.relBase:])
		if !x86.CanonicalKernel(rel) {
			continue // not a kernel-half address
		}
		out, enc, ok := decodeOffsets(img[c.offsets:c.offsets+4*n], rel)
		if !ok {
			continue
		}
		lay.Addresses, lay.RelativeBase, lay.Encoding = base+uint64(c.offsets), rel, enc
		return out, nil
	}
	// Old kernels: kallsyms_addresses, 64-bit, just before kallsyms_num_syms.
	if a := numSyms - 8*n; a >= 0 {
		out := make([]uint64, n)
		for i := range out {
			out[i] = le64(img[a+8*i:])
		}
		if sorted(out) && x86.CanonicalKernel(out[n-1]) {
			lay.Addresses, lay.Encoding = base+uint64(a), EncodingAbsolute
			return out, nil
		}
	}
	return nil, errors.New("no kallsyms_offsets or kallsyms_addresses that decode to sorted kernel addresses")
}

// decodeOffsets decodes kallsyms_offsets against rel. A negative offset
// means absolute per-CPU mode: non-negative ones are then absolute values,
// negative ones rel-1-offset.
func decodeOffsets(b []byte, rel uint64) ([]uint64, string, bool) {
	n := len(b) / 4
	raw := make([]int32, n)
	neg := false
	for i := range raw {
		raw[i] = int32(le32(b[4*i:]))
		neg = neg || raw[i] < 0
	}
	out := make([]uint64, n)
	enc := EncodingRelative
	if neg {
		enc = EncodingAbsolutePercpu
	}
	for i, o := range raw {
		switch {
		case !neg:
			out[i] = rel + uint64(uint32(o))
		case o >= 0:
			out[i] = uint64(o)
		default:
			out[i] = rel - 1 - uint64(int64(o))
		}
	}
	return out, enc, sorted(out)
}

// sorted reports whether at least 99% of neighbouring addresses ascend:
// kallsyms is sorted by address, and a stray entry must not hide a table.
func sorted(a []uint64) bool {
	bad := 0
	for i := 1; i < len(a); i++ {
		if a[i] < a[i-1] {
			bad++
		}
	}
	return bad*100 <= len(a)
}

// expand decodes the name at off: its type letter and the name.
func expand(img []byte, off int, tok *tokens) (byte, string) {
	l, hdr := int(img[off]), 1
	if l&0x80 != 0 {
		l, hdr = l&0x7f|int(img[off+1])<<7, 2
	}
	var b strings.Builder
	for _, c := range img[off+hdr : off+hdr+l] {
		b.WriteString(tok[c])
	}
	s := b.String()
	return s[0], s[1:]
}

// isType reports whether c can be an nm type letter.
func isType(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '?'
}

// Memory reads guest virtual memory; *target.Target is one.
type Memory interface {
	ReadMemory(ctx context.Context, addr uint64, n int) ([]byte, error)
}

// ReadOptions bound a search of guest memory.
type ReadOptions struct {
	// Limit is the most bytes read from the start address (default 96 MiB).
	Limit int
	// Chunk is the size of each read (default 256 KiB).
	Chunk int
	// Progress, when set, is called after each chunk with the bytes read.
	Progress func(read int)
}

// pageSize is the granule unreadable memory is skipped by.
const pageSize = 4096

// maxHole is the largest run of unreadable memory the search crosses, for
// the pages Linux unmaps between the end of its text and its read-only
// data; anything larger is taken for the end of the kernel image.
const maxHole = 4 << 20

// Read searches guest memory from start upwards for the kallsyms tables and
// decodes them. start should lie in the kernel's text (an IDT handler, the
// SYSCALL entry point): the tables are in the read-only data after it. Pages
// that cannot be read are skipped, up to a hole of 4 MiB.
func Read(ctx context.Context, mem Memory, start uint64, o ReadOptions) (*Result, error) {
	limit, chunk := o.Limit, o.Chunk
	if limit <= 0 {
		limit = 96 << 20
	}
	if chunk <= 0 {
		chunk = 256 << 10
	}
	start &^= pageSize - 1
	var img []byte
	hole := 0
	found := -1 // where the digit run was seen; the tables end shortly after
	for len(img) < limit {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		addr := start + uint64(len(img))
		b, err := mem.ReadMemory(ctx, addr, chunk)
		if err != nil {
			// Read page by page to skip what is unmapped.
			b = make([]byte, 0, chunk)
			for off := 0; off < chunk; off += pageSize {
				p, err := mem.ReadMemory(ctx, addr+uint64(off), pageSize)
				if err != nil {
					if ctx.Err() != nil {
						return nil, ctx.Err()
					}
					hole += pageSize
					p = make([]byte, pageSize)
				} else {
					hole = 0
				}
				b = append(b, p...)
			}
			if hole >= maxHole {
				break
			}
		} else {
			hole = 0
		}
		prev := len(img)
		img = append(img, b...)
		if o.Progress != nil {
			o.Progress(len(img))
		}
		if found < 0 {
			if i := bytes.Index(img[max(0, prev-len(digits)):], digits); i >= 0 {
				found = max(0, prev-len(digits)) + i
			}
		}
		// Past the digit run the tables need the rest of the token table,
		// the index and possibly 4 bytes per symbol after it.
		if found >= 0 && len(img)-found >= 4<<20 {
			break
		}
	}
	if found < 0 {
		return nil, fmt.Errorf("%w in %d bytes from %#x", ErrNotFound, len(img), start)
	}
	return Find(img, start)
}

func align8(base uint64, off int) int {
	return off + int((8-(base+uint64(off))%8)%8)
}

func roundUp8(n int) int { return (n + 7) &^ 7 }

func le16(b []byte) uint16 { return binary.LittleEndian.Uint16(b) }
func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }
func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }

package gdbremote

import (
	"bytes"
	"encoding/binary"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// A Register describes one register of the target description, as it
// appears in the 'g' reply.
type Register struct {
	Name    string // "rax", "gs_base", "cr3", ...
	Regnum  int    // the number 'p' and 'P' use
	Bitsize int    // width in bits
	Offset  int    // byte offset of the register in the 'g' reply
	Feature string // the enclosing <feature name=...>, e.g. "org.gnu.gdb.i386.core"
	Type    string // the type attribute: "int64", "code_ptr", "i387_ext", ...
	Group   string // the group attribute, often ""
}

// Size returns the register's width in bytes.
func (r Register) Size() int { return (r.Bitsize + 7) / 8 }

// layout is the parsed target description with a name index.
type layout struct {
	regs  []Register
	index map[string]int
}

func newLayout(regs []Register) *layout {
	l := &layout{regs: regs, index: make(map[string]int, len(regs))}
	for i, r := range regs {
		if _, dup := l.index[r.Name]; !dup {
			l.index[r.Name] = i
		}
	}
	return l
}

func (l *layout) lookup(name string) (Register, bool) {
	if l == nil {
		return Register{}, false
	}
	i, ok := l.index[name]
	if !ok {
		return Register{}, false
	}
	return l.regs[i], true
}

// maxIncludeDepth bounds <xi:include> nesting in a target description.
const maxIncludeDepth = 8

// ParseTargetXML builds a register layout from a target description: the
// document named annex, whose bytes fetch returns, and any documents it pulls
// in with <xi:include href="..."/>, expanded in place. A register's number is
// its regnum attribute if it has one, otherwise one more than the previous
// register's; its offset is the sum of the sizes of the registers before it.
func ParseTargetXML(annex string, fetch func(annex string) ([]byte, error)) ([]Register, error) {
	p := &xmlParser{fetch: fetch, seen: make(map[string]bool)}
	if err := p.parse(annex, 0); err != nil {
		return nil, err
	}
	return p.regs, nil
}

type xmlParser struct {
	fetch  func(string) ([]byte, error)
	seen   map[string]bool
	regs   []Register
	regnum int
	offset int
}

func (p *xmlParser) parse(annex string, depth int) error {
	if depth > maxIncludeDepth {
		return fmt.Errorf("target description %s: includes nested more than %d deep", annex, maxIncludeDepth)
	}
	if p.seen[annex] {
		return fmt.Errorf("target description %s: included twice", annex)
	}
	p.seen[annex] = true
	data, err := p.fetch(annex)
	if err != nil {
		return fmt.Errorf("read target description %s: %w", annex, err)
	}
	d := xml.NewDecoder(bytes.NewReader(data))
	var features []string
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("parse target description %s: %w", annex, err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			switch t.Name.Local {
			case "feature":
				features = append(features, attr(t, "name"))
			case "include":
				href := attr(t, "href")
				if href == "" {
					return fmt.Errorf("parse target description %s: <include> without href", annex)
				}
				if err := p.parse(href, depth+1); err != nil {
					return err
				}
			case "reg":
				r, err := p.reg(t)
				if err != nil {
					return fmt.Errorf("parse target description %s: %w", annex, err)
				}
				if len(features) > 0 {
					r.Feature = features[len(features)-1]
				}
				p.regs = append(p.regs, r)
			}
		case xml.EndElement:
			if t.Name.Local == "feature" && len(features) > 0 {
				features = features[:len(features)-1]
			}
		}
	}
}

func (p *xmlParser) reg(t xml.StartElement) (Register, error) {
	r := Register{
		Name:  attr(t, "name"),
		Type:  attr(t, "type"),
		Group: attr(t, "group"),
	}
	if r.Name == "" {
		return r, errors.New("<reg> without a name")
	}
	bits, err := strconv.Atoi(attr(t, "bitsize"))
	if err != nil || bits <= 0 || bits > 1<<16 {
		return r, fmt.Errorf("register %s: bad bitsize %q", r.Name, attr(t, "bitsize"))
	}
	r.Bitsize = bits
	if s := attr(t, "regnum"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return r, fmt.Errorf("register %s: bad regnum %q", r.Name, s)
		}
		p.regnum = n
	}
	r.Regnum = p.regnum
	p.regnum++
	r.Offset = p.offset
	p.offset += r.Size()
	return r, nil
}

func attr(t xml.StartElement, name string) string {
	for _, a := range t.Attr {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// Values is a snapshot of the register file read with 'g'. The zero Values
// holds no registers.
type Values struct {
	layout  *layout
	data    []byte
	unknown []uint64 // bit i set: register i was sent as "xx"; nil if none
}

func (v Values) reg(name string) (Register, int, bool) {
	if v.layout == nil {
		return Register{}, 0, false
	}
	i, ok := v.layout.index[name]
	if !ok {
		return Register{}, 0, false
	}
	r := v.layout.regs[i]
	if r.Offset+r.Size() > len(v.data) {
		return r, i, false
	}
	if v.unknown != nil && v.unknown[i/64]&(1<<(i%64)) != 0 {
		return r, i, false
	}
	return r, i, true
}

// Uint64 returns the value of the named register, read as a little-endian
// integer. ok is false if the register is not in the layout, was not in the
// reply, is wider than 64 bits (use Bytes), or was sent as "xx" because the
// stub does not know it: an unknown register never reads as zero.
func (v Values) Uint64(name string) (val uint64, ok bool) {
	r, _, ok := v.reg(name)
	if !ok || r.Size() > 8 {
		return 0, false
	}
	b := v.data[r.Offset : r.Offset+r.Size()]
	if len(b) == 8 {
		return binary.LittleEndian.Uint64(b), true
	}
	for i := len(b) - 1; i >= 0; i-- {
		val = val<<8 | uint64(b[i])
	}
	return val, true
}

// Bytes returns a copy of the named register's bytes in target (little-endian)
// order. ok is false if the register is absent or its value unknown.
func (v Values) Bytes(name string) ([]byte, bool) {
	r, _, ok := v.reg(name)
	if !ok {
		return nil, false
	}
	return bytes.Clone(v.data[r.Offset : r.Offset+r.Size()]), true
}

// Names returns, in layout order, the names of the registers whose values
// are known.
func (v Values) Names() []string {
	if v.layout == nil {
		return nil
	}
	var names []string
	for _, r := range v.layout.regs {
		if _, _, ok := v.reg(r.Name); ok {
			names = append(names, r.Name)
		}
	}
	return names
}

// Raw returns a copy of the whole 'g' reply, decoded to bytes; unknown bytes
// read as zero.
func (v Values) Raw() []byte { return bytes.Clone(v.data) }

// decodeValues decodes a 'g' reply against l.
func decodeValues(l *layout, reply []byte) (Values, bool) {
	v := Values{layout: l, data: make([]byte, len(reply)/2)}
	unknown, ok := decodeHex(v.data, reply)
	if !ok {
		return Values{}, false
	}
	if unknown && l != nil {
		v.unknown = make([]uint64, (len(l.regs)+63)/64)
		for i, r := range l.regs {
			lo, hi := 2*r.Offset, 2*(r.Offset+r.Size())
			if hi > len(reply) {
				continue
			}
			if bytes.IndexByte(reply[lo:hi], 'x') >= 0 || bytes.IndexByte(reply[lo:hi], 'X') >= 0 {
				v.unknown[i/64] |= 1 << (i % 64)
			}
		}
	}
	return v, true
}

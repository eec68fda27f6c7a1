package x86

import (
	"fmt"
	"strconv"
	"strings"
)

// Segment is one segment register's hidden descriptor cache as `monitor info
// registers` prints it: selector, base, limit and the attribute word.
type Segment struct {
	Selector uint16
	Base     uint64
	Limit    uint32
	Attr     uint32 // descriptor bits 8..23 as QEMU keeps them (type, S, DPL, P, L, D/B, G)
}

// DPL returns the descriptor privilege level from the cached attributes.
func (s Segment) DPL() int { return int(s.Attr>>13) & 3 }

// SysRegs is the machine state QEMU's gdbstub does not expose as registers
// but `monitor info registers` prints: the CPL, the segment caches, TR, the
// descriptor-table registers and the debug registers.
type SysRegs struct {
	CPL      int
	Segments map[string]Segment // "ES", "CS", "SS", "DS", "FS", "GS", "LDT", "TR"
	GDTBase  uint64
	GDTLimit uint32
	IDTBase  uint64
	IDTLimit uint32
	EFER     uint64
	DR       [8]uint64 // DR0..DR3, DR6 and DR7 (DR4/DR5 stay zero)
}

// TR returns the task register's cache: the TSS selector, base and limit.
func (s *SysRegs) TR() Segment { return s.Segments["TR"] }

// CompatMode reports whether the CPU runs 32-bit code under a 64-bit
// kernel (IA-32e compatibility mode): the cached CS descriptor has its L
// bit (attribute bit 21) clear and is present (bit 15). False when CS was
// not read.
func (s *SysRegs) CompatMode() bool {
	if s == nil {
		return false
	}
	cs, ok := s.Segments["CS"]
	return ok && cs.Attr&(1<<21) == 0 && cs.Attr&(1<<15) != 0
}

// ParseInfoRegisters parses the text of QEMU's `info registers` for one CPU,
// in either its 32-bit or 64-bit layout. It returns an error naming the first
// line it cannot read; fields it does not use are ignored.
func ParseInfoRegisters(text string) (*SysRegs, error) {
	s := &SysRegs{CPL: -1, Segments: map[string]Segment{}}
	sawCPL := false
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimRight(line, "\r ")
		if len(line) < 4 {
			continue
		}
		// Segment cache lines: "CS =0010 0000000000000000 ffffffff 00a09b00 DPL=0 CS64 [-RA]".
		if name, rest, ok := strings.Cut(line, "="); ok && len(name) == 3 && isSegName(strings.TrimSpace(name)) {
			f := strings.Fields(rest)
			if len(f) < 4 {
				return nil, fmt.Errorf("info registers: segment line %q: want selector, base, limit, attributes", line)
			}
			var seg Segment
			var err error
			if seg.Selector, err = parseHex16(f[0]); err != nil {
				return nil, fmt.Errorf("info registers: %q: %w", line, err)
			}
			if seg.Base, err = strconv.ParseUint(f[1], 16, 64); err != nil {
				return nil, fmt.Errorf("info registers: %q: base: %w", line, err)
			}
			lim, err := strconv.ParseUint(f[2], 16, 32)
			if err != nil {
				return nil, fmt.Errorf("info registers: %q: limit: %w", line, err)
			}
			attr, err := strconv.ParseUint(f[3], 16, 32)
			if err != nil {
				return nil, fmt.Errorf("info registers: %q: attributes: %w", line, err)
			}
			seg.Limit, seg.Attr = uint32(lim), uint32(attr)
			s.Segments[strings.TrimSpace(name)] = seg
			continue
		}
		if strings.HasPrefix(line, "GDT=") || strings.HasPrefix(line, "IDT=") {
			f := strings.Fields(line[4:])
			if len(f) < 2 {
				return nil, fmt.Errorf("info registers: %q: want base and limit", line)
			}
			base, err := strconv.ParseUint(f[0], 16, 64)
			if err != nil {
				return nil, fmt.Errorf("info registers: %q: base: %w", line, err)
			}
			lim, err := strconv.ParseUint(f[1], 16, 32)
			if err != nil {
				return nil, fmt.Errorf("info registers: %q: limit: %w", line, err)
			}
			if line[0] == 'G' {
				s.GDTBase, s.GDTLimit = base, uint32(lim)
			} else {
				s.IDTBase, s.IDTLimit = base, uint32(lim)
			}
			continue
		}
		// KEY=VALUE words: CPL=3, EFER=..., DR0=...
		for _, w := range strings.Fields(line) {
			k, v, ok := strings.Cut(w, "=")
			if !ok || v == "" {
				continue
			}
			switch k {
			case "CPL":
				n, err := strconv.Atoi(v)
				if err != nil || n < 0 || n > 3 {
					return nil, fmt.Errorf("info registers: bad CPL %q", v)
				}
				s.CPL, sawCPL = n, true
			case "EFER":
				n, err := strconv.ParseUint(v, 16, 64)
				if err != nil {
					return nil, fmt.Errorf("info registers: bad EFER %q", v)
				}
				s.EFER = n
			case "DR0", "DR1", "DR2", "DR3", "DR6", "DR7":
				n, err := strconv.ParseUint(v, 16, 64)
				if err != nil {
					return nil, fmt.Errorf("info registers: bad %s %q", k, v)
				}
				s.DR[k[2]-'0'] = n
			}
		}
	}
	if !sawCPL {
		return nil, fmt.Errorf("info registers: no CPL= field in %d bytes of text", len(text))
	}
	if _, ok := s.Segments["TR"]; !ok {
		return nil, fmt.Errorf("info registers: no TR line")
	}
	return s, nil
}

func isSegName(n string) bool {
	switch n {
	case "ES", "CS", "SS", "DS", "FS", "GS", "LDT", "TR":
		return true
	}
	return false
}

func parseHex16(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 16, 16)
	if err != nil {
		return 0, fmt.Errorf("selector %q: %w", s, err)
	}
	return uint16(n), nil
}

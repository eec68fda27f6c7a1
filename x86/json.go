package x86

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
)

// MarshalJSON writes the known registers as an object of hex strings keyed
// by register name, {"rax":"0x27","cs":"0x33",...}. Hex strings keep 64-bit
// values exact for readers whose numbers are doubles. Sys is not included:
// a trace stores it once, in its header.
func (s State) MarshalJSON() ([]byte, error) {
	b := []byte{'{'}
	first := true
	for r := Reg(0); r < NumRegs; r++ {
		v, ok := s.Get(r)
		if !ok {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '"')
		b = append(b, regNames[r]...)
		b = append(b, `":"0x`...)
		b = strconv.AppendUint(b, v, 16)
		b = append(b, '"')
	}
	return append(b, '}'), nil
}

// UnmarshalJSON reads what MarshalJSON writes. An unknown register name or a
// value that is not a hex string is an error naming it.
func (s *State) UnmarshalJSON(data []byte) error {
	if st, ok := parseStateFast(data); ok {
		*s = st
		return nil
	}
	var m map[string]string
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("registers: %w", err)
	}
	*s = State{}
	for name, hex := range m {
		r, ok := ParseReg(name)
		if !ok {
			return fmt.Errorf("registers: unknown register %q", name)
		}
		v, err := ParseHex(hex)
		if err != nil {
			return fmt.Errorf("registers: %s: %w", name, err)
		}
		s.Set(r, v)
	}
	return nil
}

// regByName maps the names MarshalJSON writes to registers.
var regByName = func() map[string]Reg {
	m := make(map[string]Reg, NumRegs)
	for r := Reg(0); r < NumRegs; r++ {
		m[regNames[r]] = r
	}
	return m
}()

// parseStateFast reads a State in the exact shape MarshalJSON writes,
// whitespace aside, without allocating. ok is false for anything else
// (escapes, other spellings, errors): UnmarshalJSON then takes the general
// path, which also words the errors.
func parseStateFast(b []byte) (st State, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return st, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return st, skipSpace(b, i+1) == len(b)
	}
	for {
		name, j, ok := plainString(b, i)
		if !ok {
			return st, false
		}
		r, known := regByName[string(name)]
		if !known {
			return st, false
		}
		i = skipSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return st, false
		}
		val, j, ok := plainString(b, skipSpace(b, i+1))
		if !ok {
			return st, false
		}
		v, ok := parseHexBytes(val)
		if !ok {
			return st, false
		}
		st.Set(r, v)
		i = skipSpace(b, j)
		if i >= len(b) {
			return st, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return st, skipSpace(b, i+1) == len(b)
		default:
			return st, false
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\t' || b[i] == '\r') {
		i++
	}
	return i
}

// plainString returns the contents of the JSON string at b[i] when it has
// no escapes, and the index after its closing quote.
func plainString(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// parseHexBytes parses "0x" and 1 to 16 hex digits.
func parseHexBytes(b []byte) (uint64, bool) {
	if len(b) < 3 || len(b) > 18 || b[0] != '0' || b[1] != 'x' {
		return 0, false
	}
	var v uint64
	for _, c := range b[2:] {
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | uint64(c-'0')
		case c >= 'a' && c <= 'f':
			v = v<<4 | uint64(c-'a'+10)
		case c >= 'A' && c <= 'F':
			v = v<<4 | uint64(c-'A'+10)
		default:
			return 0, false
		}
	}
	return v, true
}

// ParseHex parses a "0x"-prefixed hexadecimal number.
func ParseHex(s string) (uint64, error) {
	if len(s) < 3 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X') {
		return 0, fmt.Errorf("%q is not a 0x-prefixed hex number", s)
	}
	v, err := strconv.ParseUint(s[2:], 16, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a 64-bit hex number", s)
	}
	return v, nil
}

// Hex is a uint64 written in JSON as a "0x..." string, exact in every
// reader (JSON numbers are doubles in many of them).
type Hex uint64

// MarshalJSON writes h as a hex string.
func (h Hex) MarshalJSON() ([]byte, error) {
	return []byte(`"0x` + strconv.FormatUint(uint64(h), 16) + `"`), nil
}

// UnmarshalJSON reads a hex string.
func (h *Hex) UnmarshalJSON(b []byte) error {
	if val, end, ok := plainString(b, 0); ok && end == len(b) {
		if v, ok := parseHexBytes(val); ok {
			*h = Hex(v)
			return nil
		}
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a hex string: %w", err)
	}
	v, err := ParseHex(s)
	if err != nil {
		return err
	}
	*h = Hex(v)
	return nil
}

// segmentJSON is Segment as trace files store it: every number in hex.
type segmentJSON struct {
	Selector Hex `json:"selector"`
	Base     Hex `json:"base"`
	Limit    Hex `json:"limit"`
	Attr     Hex `json:"attr"`
}

// MarshalJSON writes a segment cache with hex numbers.
func (s Segment) MarshalJSON() ([]byte, error) {
	return json.Marshal(segmentJSON{Hex(s.Selector), Hex(s.Base), Hex(s.Limit), Hex(s.Attr)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (s *Segment) UnmarshalJSON(b []byte) error {
	var j segmentJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("segment: %w", err)
	}
	if j.Selector > 0xffff || j.Limit > 0xffffffff || j.Attr > 0xffffffff {
		return fmt.Errorf("segment: selector, limit or attributes out of range")
	}
	*s = Segment{uint16(j.Selector), uint64(j.Base), uint32(j.Limit), uint32(j.Attr)}
	return nil
}

// sysRegsJSON is SysRegs as trace files store it.
type sysRegsJSON struct {
	CPL      int                `json:"cpl"`
	Segments map[string]Segment `json:"segments"`
	GDTBase  Hex                `json:"gdt_base"`
	GDTLimit Hex                `json:"gdt_limit"`
	IDTBase  Hex                `json:"idt_base"`
	IDTLimit Hex                `json:"idt_limit"`
	EFER     Hex                `json:"efer"`
	DR       [8]Hex             `json:"dr"`
}

// MarshalJSON writes the system registers with hex numbers.
func (s SysRegs) MarshalJSON() ([]byte, error) {
	j := sysRegsJSON{CPL: s.CPL, Segments: s.Segments, GDTBase: Hex(s.GDTBase), GDTLimit: Hex(s.GDTLimit),
		IDTBase: Hex(s.IDTBase), IDTLimit: Hex(s.IDTLimit), EFER: Hex(s.EFER)}
	for i, v := range s.DR {
		j.DR[i] = Hex(v)
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (s *SysRegs) UnmarshalJSON(b []byte) error {
	var j sysRegsJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("system registers: %w", err)
	}
	if j.GDTLimit > 0xffffffff || j.IDTLimit > 0xffffffff {
		return fmt.Errorf("system registers: descriptor-table limit out of range")
	}
	*s = SysRegs{CPL: j.CPL, Segments: j.Segments, GDTBase: uint64(j.GDTBase), GDTLimit: uint32(j.GDTLimit),
		IDTBase: uint64(j.IDTBase), IDTLimit: uint32(j.IDTLimit), EFER: uint64(j.EFER)}
	for i, v := range j.DR {
		s.DR[i] = uint64(v)
	}
	return nil
}

// HexBytes are bytes written in JSON as a hex string ("0f05").
type HexBytes []byte

// MarshalJSON writes b as a hex string.
func (b HexBytes) MarshalJSON() ([]byte, error) { return json.Marshal(hex.EncodeToString(b)) }

// UnmarshalJSON reads a hex string.
func (b *HexBytes) UnmarshalJSON(data []byte) error {
	if val, end, ok := plainString(data, 0); ok && end == len(data) {
		v := make([]byte, hex.DecodedLen(len(val)))
		if _, err := hex.Decode(v, val); err == nil {
			*b = v
			return nil
		}
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("want a hex string of bytes: %w", err)
	}
	v, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("bytes %q: %w", s, err)
	}
	*b = v
	return nil
}

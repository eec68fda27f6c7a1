package target

import (
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

package annotate

import (
	"encoding/json"

	"github.com/sctrace/sctrace/x86"
)

// Addresses, MSR values and masks are written in JSON as "0x..." strings
// (x86.Hex), like every 64-bit value in a trace file, so that readers
// whose numbers are doubles get them exactly. Each type below keeps its Go
// fields as plain integers and converts at the JSON boundary: the outer
// fields of the anonymous structs shadow the embedded ones of the same name.

// MarshalJSON writes the region with hex addresses.
func (r Region) MarshalJSON() ([]byte, error) {
	type plain Region
	return json.Marshal(struct {
		plain
		Start    x86.Hex  `json:"start"`
		End      x86.Hex  `json:"end"`
		FrameTop *x86.Hex `json:"frame_top,omitempty"`
	}{plain(r), x86.Hex(r.Start), x86.Hex(r.End), optHex(r.FrameTop)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *Region) UnmarshalJSON(b []byte) error {
	type plain Region
	var j struct {
		plain
		Start    x86.Hex `json:"start"`
		End      x86.Hex `json:"end"`
		FrameTop x86.Hex `json:"frame_top"`
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*r = Region(j.plain)
	r.Start, r.End, r.FrameTop = uint64(j.Start), uint64(j.End), uint64(j.FrameTop)
	return nil
}

// MarshalJSON writes the MSR with its index, value and mask in hex.
func (m MSR) MarshalJSON() ([]byte, error) {
	type plain MSR
	return json.Marshal(struct {
		plain
		Index x86.Hex `json:"index"`
		Value x86.Hex `json:"value"`
		Known x86.Hex `json:"known"`
	}{plain(m), x86.Hex(m.Index), x86.Hex(m.Value), x86.Hex(m.Known)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (m *MSR) UnmarshalJSON(b []byte) error {
	type plain MSR
	var j struct {
		plain
		Index x86.Hex `json:"index"`
		Value x86.Hex `json:"value"`
		Known x86.Hex `json:"known"`
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*m = MSR(j.plain)
	m.Index, m.Value, m.Known = uint32(j.Index), uint64(j.Value), uint64(j.Known)
	return nil
}

// MarshalJSON writes the observation's mask in hex.
func (o Observation) MarshalJSON() ([]byte, error) {
	type plain Observation
	return json.Marshal(struct {
		plain
		Known x86.Hex `json:"known"`
	}{plain(o), x86.Hex(o.Known)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (o *Observation) UnmarshalJSON(b []byte) error {
	type plain Observation
	var j struct {
		plain
		Known x86.Hex `json:"known"`
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*o = Observation(j.plain)
	o.Known = uint64(j.Known)
	return nil
}

// MarshalJSON writes the fact's value and mask in hex.
func (f Fact) MarshalJSON() ([]byte, error) {
	type plain Fact
	return json.Marshal(struct {
		plain
		Value x86.Hex `json:"value"`
		Known x86.Hex `json:"known"`
	}{plain(f), x86.Hex(f.Value), x86.Hex(f.Known)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (f *Fact) UnmarshalJSON(b []byte) error {
	type plain Fact
	var j struct {
		plain
		Value x86.Hex `json:"value"`
		Known x86.Hex `json:"known"`
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*f = Fact(j.plain)
	f.Value, f.Known = uint64(j.Value), uint64(j.Known)
	return nil
}

// MarshalJSON writes the address in hex and the bytes as a hex string.
func (m Memory) MarshalJSON() ([]byte, error) {
	type plain Memory
	return json.Marshal(struct {
		plain
		Addr x86.Hex      `json:"addr"`
		Data x86.HexBytes `json:"data"`
	}{plain(m), x86.Hex(m.Addr), m.Data})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (m *Memory) UnmarshalJSON(b []byte) error {
	type plain Memory
	var j struct {
		plain
		Addr x86.Hex      `json:"addr"`
		Data x86.HexBytes `json:"data"`
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*m = Memory(j.plain)
	m.Addr, m.Data = uint64(j.Addr), j.Data
	return nil
}

func optHex(v uint64) *x86.Hex {
	if v == 0 {
		return nil
	}
	h := x86.Hex(v)
	return &h
}

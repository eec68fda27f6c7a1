package annotate

import (
	"encoding/json"

	"github.com/sctrace/sctrace/target"
)

// Addresses, MSR values and masks are written in JSON as "0x..." strings
// (target.Hex), like every 64-bit value in a trace file, so that readers
// whose numbers are doubles get them exactly. Each type below keeps its Go
// fields as plain integers and converts at the JSON boundary: the outer
// fields of the anonymous structs shadow the embedded ones of the same name.

// MarshalJSON writes the region with hex addresses.
func (r Region) MarshalJSON() ([]byte, error) {
	type plain Region
	return json.Marshal(struct {
		plain
		Start    target.Hex  `json:"start"`
		End      target.Hex  `json:"end"`
		FrameTop *target.Hex `json:"frame_top,omitempty"`
	}{plain(r), target.Hex(r.Start), target.Hex(r.End), optHex(r.FrameTop)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *Region) UnmarshalJSON(b []byte) error {
	type plain Region
	var j struct {
		plain
		Start    target.Hex `json:"start"`
		End      target.Hex `json:"end"`
		FrameTop target.Hex `json:"frame_top"`
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
		Index target.Hex `json:"index"`
		Value target.Hex `json:"value"`
		Known target.Hex `json:"known"`
	}{plain(m), target.Hex(m.Index), target.Hex(m.Value), target.Hex(m.Known)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (m *MSR) UnmarshalJSON(b []byte) error {
	type plain MSR
	var j struct {
		plain
		Index target.Hex `json:"index"`
		Value target.Hex `json:"value"`
		Known target.Hex `json:"known"`
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
		Known target.Hex `json:"known"`
	}{plain(o), target.Hex(o.Known)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (o *Observation) UnmarshalJSON(b []byte) error {
	type plain Observation
	var j struct {
		plain
		Known target.Hex `json:"known"`
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
		Value target.Hex `json:"value"`
		Known target.Hex `json:"known"`
	}{plain(f), target.Hex(f.Value), target.Hex(f.Known)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (f *Fact) UnmarshalJSON(b []byte) error {
	type plain Fact
	var j struct {
		plain
		Value target.Hex `json:"value"`
		Known target.Hex `json:"known"`
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
		Addr target.Hex      `json:"addr"`
		Data target.HexBytes `json:"data"`
	}{plain(m), target.Hex(m.Addr), m.Data})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (m *Memory) UnmarshalJSON(b []byte) error {
	type plain Memory
	var j struct {
		plain
		Addr target.Hex      `json:"addr"`
		Data target.HexBytes `json:"data"`
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*m = Memory(j.plain)
	m.Addr, m.Data = uint64(j.Addr), j.Data
	return nil
}

func optHex(v uint64) *target.Hex {
	if v == 0 {
		return nil
	}
	h := target.Hex(v)
	return &h
}

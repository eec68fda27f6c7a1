package trace

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
)

// JSONVersion is the version of the JSON trace format that WriteJSON
// writes: one indented JSON document holding every step in full, for
// other tools (jq, scripts) and for small traces kept in version control.
const JSONVersion = 1

// WriteJSON saves t as one indented JSON document, file format version 1
// (JSONVersion). Steps are encoded one at a time as they are written, so
// memory holds one step's text, not the whole document's; a trace of a
// million steps takes about 1.5 GB this way, which Read refuses
// (MaxFileSize): save long traces with Write.
func (t *Trace) WriteJSON(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	put := func(b []byte) { bw.Write(b) } // bufio keeps the first error; Flush returns it
	field := func(name string, v any, last bool) error {
		put([]byte(" \"" + name + "\": "))
		b, err := json.MarshalIndent(v, " ", " ")
		if err != nil {
			return err
		}
		put(b)
		if !last {
			put([]byte(","))
		}
		put([]byte("\n"))
		return nil
	}
	put([]byte("{\n"))
	if err := field("format", Format, false); err != nil {
		return err
	}
	if err := field("version", JSONVersion, false); err != nil {
		return err
	}
	if err := field("header", t.Header, false); err != nil {
		return err
	}
	n := t.Len()
	rest := len(t.Probes) > 0 || len(t.UserWrites) > 0 || t.Final != nil
	if n == 0 {
		put([]byte(" \"steps\": []"))
	} else {
		put([]byte(" \"steps\": [\n"))
		for i, s := range t.All() {
			b, err := json.MarshalIndent(s, "  ", " ")
			if err != nil {
				return err
			}
			put([]byte("  "))
			put(b)
			if i+1 < n {
				put([]byte(",\n"))
			} else {
				put([]byte("\n ]"))
			}
		}
	}
	if rest {
		put([]byte(",\n"))
	} else {
		put([]byte("\n"))
	}
	if len(t.Probes) > 0 {
		if err := field("probes", t.Probes, len(t.UserWrites) == 0 && t.Final == nil); err != nil {
			return err
		}
	}
	if len(t.UserWrites) > 0 {
		if err := field("user_writes", t.UserWrites, t.Final == nil); err != nil {
			return err
		}
	}
	if t.Final != nil {
		if err := field("final", t.Final, true); err != nil {
			return err
		}
	}
	put([]byte("}\n"))
	return bw.Flush()
}

// MarshalJSON returns what WriteJSON writes, so that a Trace inside other
// JSON keeps its steps; it holds the whole text in memory.
func (t *Trace) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	if err := t.WriteJSON(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// UnmarshalJSON reads what MarshalJSON returns, as Read does.
func (t *Trace) UnmarshalJSON(data []byte) error {
	r, err := Read(bytes.NewReader(data))
	if err != nil {
		return err
	}
	*t = *r
	return nil
}

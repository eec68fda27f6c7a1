package gdbremote

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
)

// FuzzDecodePacket checks that decodePacket never panics, and that what
// appendPacket and the fake stub's run-length encoding produce decodes back
// to the payload.
func FuzzDecodePacket(f *testing.F) {
	for _, seed := range []string{
		"", "OK", "E14", "T05thread:p01.01;", "}\x03}\x04}]}\x0a", "0* ", "a*~", "*!", "}",
		"0000000000000000000000000000000000000000f0ff0000", "#$}*{", "\x00\xff\x03",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		decodePacket(nil, data)

		// Escaped only.
		frame := appendPacket(nil, data)
		if frame[0] != '$' || frame[len(frame)-3] != '#' {
			t.Fatalf("appendPacket(%q) = %q: bad framing", data, frame)
		}
		body := frame[1 : len(frame)-3]
		if bytes.ContainsAny(body, "$#") {
			t.Fatalf("appendPacket(%q) left '$' or '#' in the body: %q", data, body)
		}
		got, err := decodePacket(nil, body)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("round trip of %q: %q, %v", data, got, err)
		}

		// Escaped and run-length encoded, by an independent encoder.
		frame = gdbstubtest.Frame(data, true)
		body = frame[1 : len(frame)-3]
		if bytes.ContainsAny(body, "$#") {
			t.Fatalf("Frame(%q) left '$' or '#' in the body: %q", data, body)
		}
		got, err = decodePacket(nil, body)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("run-length round trip of %q via %q: %q, %v", data, body, got, err)
		}
	})
}

// FuzzParseStopReply checks that ParseStopReply never panics and that a
// reply it accepts prints back to a reply that parses the same way.
func FuzzParseStopReply(f *testing.F) {
	for _, seed := range []string{
		"S05", "T05thread:p01.01;", "T02thread:p01.02;", "T05thread:p01.01;watch:ffff888000001000;",
		"T05swbreak:;", "T0506:0000000000000000;core:1;", "W00", "W01;process:1", "X09",
		"", "T", "T0", "Tzz", "OK", "E14", "T05:;", "T05;;;",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseStopReply(s)
		if err != nil {
			return
		}
		if !strings.ContainsRune("STWX", rune(r.Kind)) {
			t.Fatalf("ParseStopReply(%q) accepted kind %q", s, r.Kind)
		}
		if r.Values != nil || r.Kind == 'X' {
			return // String does not print Values or X's signal name
		}
		again, err := ParseStopReply(r.String())
		if err != nil {
			t.Fatalf("ParseStopReply(%q) = %+v, whose String %q does not parse: %v", s, r, r.String(), err)
		}
		if again.Kind != r.Kind || again.Signal != r.Signal || again.ExitCode != r.ExitCode ||
			again.Thread != r.Thread || again.Reason != r.Reason || again.Addr != r.Addr {
			t.Fatalf("%q: %+v, printed %q, parsed back as %+v", s, r, r.String(), again)
		}
	})
}

// FuzzDecodeHex checks that hex decoding of register and memory replies
// never panics and agrees with appendHex.
func FuzzDecodeHex(f *testing.F) {
	for _, seed := range []string{"", "00", "f0ff", "xx", "0g", "abc"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dst := make([]byte, len(data)/2)
		decodeHex(dst, data)
		enc := appendHex(nil, data)
		back := make([]byte, len(data))
		unknown, ok := decodeHex(back, enc)
		if !ok || unknown || !bytes.Equal(back, data) {
			t.Fatalf("hex round trip of %x: %x, %v, %v", data, back, unknown, ok)
		}
	})
}

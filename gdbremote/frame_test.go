package gdbremote

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
)

func TestFrameReader(t *testing.T) {
	type want struct {
		kind    FrameKind
		raw     string
		payload string
		bad     bool
	}
	tests := []struct {
		name string
		in   string
		want []want
		end  error
	}{
		{"packets and acks", "+$g#67-\x03", []want{{FrameAck, "+", "", false}, {FramePacket, "$g#67", "g", false}, {FrameNack, "-", "", false}, {FrameInterrupt, "\x03", "", false}}, io.EOF},
		{"escapes and run length", "$a}\x03b#" + sum("a}\x03b") + "$0* #" + sum("0* "), []want{{FramePacket, "$a}\x03b#" + sum("a}\x03b"), "a#b", false}, {FramePacket, "$0* #" + sum("0* "), "0000", false}}, io.EOF},
		{"notification", "%Stop:T05#" + sum("Stop:T05"), []want{{FrameNotification, "%Stop:T05#" + sum("Stop:T05"), "Stop:T05", false}}, io.EOF},
		{"bad checksum kept raw", "$g#00", []want{{FramePacket, "$g#00", "g", true}}, io.EOF},
		{"checksum not hex", "$g#zz", []want{{FramePacket, "$g#zz", "g", true}}, io.EOF},
		{"a packet cut short by another", "$ab$g#" + sum("ab$g"), []want{{FramePacket, "$ab$g#" + sum("ab$g"), "ab$g", true}}, io.EOF},
		{"stray bytes", "\r\nx", []want{{FrameOther, "\r", "", false}, {FrameOther, "\n", "", false}, {FrameOther, "x", "", false}}, io.EOF},
		{"cut in the body", "$abc", nil, io.ErrUnexpectedEOF},
		{"cut in the checksum", "$abc#6", nil, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fr := NewFrameReader(strings.NewReader(tt.in))
			for i, w := range tt.want {
				f, err := fr.Next()
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if f.Kind != w.kind || string(f.Raw) != w.raw || string(f.Payload) != w.payload || (f.Bad != nil) != w.bad {
					t.Errorf("frame %d = kind %d raw %q payload %q bad %v; want kind %d raw %q payload %q bad %v", i, f.Kind, f.Raw, f.Payload, f.Bad, w.kind, w.raw, w.payload, w.bad)
				}
			}
			if _, err := fr.Next(); !errors.Is(err, tt.end) {
				t.Errorf("at the end: %v, want %v", err, tt.end)
			}
		})
	}
}

// TestJoin joins a session another client opened on the fake stub: with
// the features known it asks for nothing but the target description, and
// never sends '?' (QEMU drops breakpoints on it); with none known it asks
// for them. Either way it reads the registers by name.
func TestJoin(t *testing.T) {
	for _, known := range []bool{true, false} {
		stub := gdbstubtest.New(t)
		nc, err := net.Dial("tcp", stub.Addr())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		j := Joined{}
		if known {
			j.Features = gdbstubtest.QEMUFeatures
		}
		c, err := Join(ctx, nc, stub.Addr(), j)
		if err != nil {
			t.Fatal(err)
		}
		v, err := c.ReadRegisters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rip, ok := v.Uint64("rip"); !ok || rip != 0xfff0 {
			t.Errorf("rip %#x, %v; want the stub's 0xfff0", rip, ok)
		}
		for _, req := range stub.Requests() {
			switch {
			case req == "?", strings.HasPrefix(req, "QStartNoAckMode"):
				t.Errorf("Join sent %q", req)
			case strings.HasPrefix(req, "qSupported") && known:
				t.Errorf("Join asked for the features it was given")
			}
		}
		if got := strings.Join(stub.Requests(), " "); !known && !strings.HasPrefix(got, "qSupported") {
			t.Errorf("Join without features sent %q, want qSupported first", got)
		}
		if !bytes.Equal([]byte(c.Features()["PacketSize"]), []byte("1000")) {
			t.Errorf("features %v", c.Features())
		}
		c.Close()
		cancel()
	}
}

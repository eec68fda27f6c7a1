package gdbremote_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
)

// TestQEMUReleases runs the client against the fake stub playing each
// QEMU release sctrace is tested on, where their stubs differ (see
// gdbstubtest.Release; observed on QEMU 7.2.22 and 10.0.2 here):
//   - connecting to a running guest: 7.2 sends "T02thread:01;" before it
//     is asked anything, 10.0.2 nothing; Dial must work either way;
//   - the instruction-per-block monitor command: "singlestep" on 7.2,
//     "one-insn-per-tb" on 10.0.2, which answers "unknown command:
//     'singlestep'" and OK; Monitor must fail on the unknown one;
//   - 'k': 7.2 answers "W00" and closes, 10.0.2 closes at once; Kill must
//     succeed promptly either way.
func TestQEMUReleases(t *testing.T) {
	tests := []struct {
		release        gdbstubtest.Release
		known, unknown string // monitor commands
	}{
		{gdbstubtest.QEMU72, "singlestep on", "one-insn-per-tb on"},
		{gdbstubtest.QEMU10, "one-insn-per-tb on", "singlestep on"},
	}
	for _, tt := range tests {
		t.Run(tt.release.String(), func(t *testing.T) {
			s := gdbstubtest.New(t)
			s.SetRelease(tt.release)
			s.SetGuestRunning(true)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := gdbremote.Dial(ctx, s.Addr(), gdbremote.WithTimeout(time.Second))
			if err != nil {
				t.Fatalf("Dial to a running guest: %v", err)
			}
			defer c.Close()
			if sr := c.InitialStop(); sr.Signal != 5 || sr.Thread != gdbstubtest.Thread {
				t.Errorf("initial stop %+v, want T05 on %s", sr, gdbstubtest.Thread)
			}
			if _, err := c.ReadRegisters(ctx); err != nil {
				t.Fatalf("registers after the handshake: %v", err)
			}

			if out, err := c.Monitor(ctx, tt.known); err != nil || out != "" {
				t.Errorf("Monitor(%q) = %q, %v; want no output and no error", tt.known, out, err)
			}
			name, _, _ := strings.Cut(tt.unknown, " ")
			out, err := c.Monitor(ctx, tt.unknown)
			if !errors.Is(err, gdbremote.ErrUnknownCommand) || !strings.Contains(err.Error(), "\""+name+"\"") {
				t.Errorf("Monitor(%q) = %v, want ErrUnknownCommand naming %q", tt.unknown, err, name)
			}
			if want := "unknown command: '" + name + "'\r\n"; out != want {
				t.Errorf("Monitor(%q) output %q, want QEMU's %q", tt.unknown, out, want)
			}

			start := time.Now()
			if err := c.Kill(ctx); err != nil {
				t.Errorf("Kill: %v", err)
			}
			if d := time.Since(start); d > 500*time.Millisecond {
				t.Errorf("Kill took %v", d)
			}
		})
	}
}

// TestFakeReleaseRawReplies checks, below the client, that the fake answers
// as each release does on the wire: 'p' before target.xml (7.2 empty,
// 10.0.2 the value) and 'k' (7.2 "W00", 10.0.2 nothing).
func TestFakeReleaseRawReplies(t *testing.T) {
	tests := []struct {
		release    gdbstubtest.Release
		p, k, conn string
	}{
		{gdbstubtest.QEMU72, "$#00", "$W00#b7", "$T02thread:01;#04"},
		{gdbstubtest.QEMU10, "$f0ff000000000000#", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.release.String(), func(t *testing.T) {
			s := gdbstubtest.New(t)
			s.SetRelease(tt.release)
			s.SetGuestRunning(true)
			nc, err := net.Dial("tcp", s.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			rd := bufio.NewReader(nc)
			read := func() string {
				nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				var b []byte
				for {
					c, err := rd.ReadByte()
					if err != nil {
						return string(b)
					}
					if c != '+' {
						b = append(b, c)
					}
				}
			}
			if got := read(); got != tt.conn {
				t.Errorf("on connect: %q, want %q", got, tt.conn)
			}
			nc.Write(gdbstubtest.Frame([]byte("p10"), false))
			if got := read(); !strings.HasPrefix(got, tt.p) {
				t.Errorf("p10 before target.xml: %q, want %q...", got, tt.p)
			}
			nc.Write(gdbstubtest.Frame([]byte("k"), false))
			if got := read(); got != tt.k {
				t.Errorf("k: %q, want %q", got, tt.k)
			}
		})
	}
}

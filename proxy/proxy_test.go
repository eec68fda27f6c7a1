package proxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// The fake stub plays QEMU 7.2's gdbstub (its qSupported reply, target
// description, acks, and its answers to s, c, m, g and qRcmd); these tests
// check what the proxy does with what passes, and how it copes when either
// side misbehaves. The real QEMU and gdb are in qemu_test.go.

const codeAt = 0x400000

// newStub is a fake stub stopped in 64-bit user mode at a run of nops, so
// that each of its single steps (rip + 1) is an instruction the proxy can
// decode.
func newStub(t *testing.T) *gdbstubtest.Stub {
	t.Helper()
	stub := gdbstubtest.New(t)
	stub.Map(codeAt, bytes.Repeat([]byte{0x90}, 0x100))
	stub.Map(0x7ff000, make([]byte, 0x1000))
	for name, v := range map[string]uint64{
		"rip": codeAt, "cs": 0x33, "ss": 0x2b, "rsp": 0x7fff00, "eflags": 0x246,
		"cr0": 0x80050033, "cr3": 0x1000, "cr4": 0x3506f0, "efer": 0xd01,
	} {
		stub.SetRegister(name, v)
	}
	return stub
}

type served struct {
	t   *trace.Trace
	err error
}

// startProxy serves one client through a proxy to stub; the result comes
// on the channel when the session ends.
func startProxy(t *testing.T, ctx context.Context, stub *gdbstubtest.Stub, listing io.Writer) (string, <-chan served) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	done := make(chan served, 1)
	go func() {
		tr, err := Serve(ctx, ln, Config{To: stub.Addr(), Timeout: 2 * time.Second, Listing: listing})
		done <- served{tr, err}
	}()
	return ln.Addr().String(), done
}

// dialProxy starts a proxy to stub and connects a client to it, closed
// when the test ends.
func dialProxy(t *testing.T, ctx context.Context, stub *gdbstubtest.Stub) (*gdbremote.Conn, <-chan served) {
	t.Helper()
	addr, done := startProxy(t, ctx, stub, nil)
	c, err := gdbremote.Dial(ctx, addr, gdbremote.WithTimeout(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, done
}

func wait(t *testing.T, done <-chan served) served {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(15 * time.Second):
		t.Fatal("the proxy did not end")
	}
	return served{}
}

// debug is what a debugger does in the tests: handshake, registers,
// memory, three single steps, a monitor command, a breakpoint and a
// continue to it, one more step, and a detach.
func debug(t *testing.T, ctx context.Context, addr string, log io.Writer) {
	t.Helper()
	c, err := gdbremote.Dial(ctx, addr, gdbremote.WithWireLog(log), gdbremote.WithTimeout(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ReadRegisters(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadMemory(ctx, 0x7fff00, 32); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := c.Step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Monitor(ctx, "info registers"); err != nil {
		t.Fatal(err)
	}
	if err := c.SetBreakpoint(ctx, gdbremote.Hardware, codeAt+0x40, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Continue(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.ClearBreakpoint(ctx, gdbremote.Hardware, codeAt+0x40, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := c.StepVCont(ctx, gdbstubtest.Thread); err != nil {
		t.Fatal(err)
	}
	if err := c.Detach(ctx); err != nil {
		t.Fatal(err)
	}
}

// wire returns a wire log's lines without their timestamps.
func wire(log string) []string {
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		_, rest, _ := strings.Cut(line, " ")
		out = append(out, rest)
	}
	return out
}

// TestSameAsDirect runs the same session against two identical fake
// stubs, directly and through the proxy, with acks on (QEMU 7.2) and off
// (a stub that accepts QStartNoAckMode): the client sends and receives the
// same packets, and the trace holds its four single steps, at the RIPs the
// stub stepped through, with a gap for the continue.
func TestSameAsDirect(t *testing.T) {
	for _, noAck := range []bool{false, true} {
		name := "acks"
		if noAck {
			name = "no-ack"
		}
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			stubs := [2]*gdbstubtest.Stub{newStub(t), newStub(t)}
			if noAck {
				for _, s := range stubs {
					s.SetFeatures(gdbstubtest.QEMUFeatures + ";QStartNoAckMode+")
				}
			}
			var direct, proxied, listing bytes.Buffer
			debug(t, ctx, stubs[0].Addr(), &direct)
			addr, done := startProxy(t, ctx, stubs[1], &listing)
			debug(t, ctx, addr, &proxied)
			r := wait(t, done)
			if r.err != nil {
				t.Fatalf("proxy: %v", r.err)
			}
			d, p := wire(direct.String()), wire(proxied.String())
			if strings.Join(d, "\n") != strings.Join(p, "\n") {
				t.Errorf("the client's wire differs through the proxy:\ndirect:\n%s\nproxied:\n%s", strings.Join(d, "\n"), strings.Join(p, "\n"))
			}
			// The proxy's own requests only read: registers, memory,
			// the target description, the single-step flags, `info
			// registers`. Nothing that changes the client's session.
			for _, req := range extra(stubs[1].Requests(), stubs[0].Requests()) {
				if !readOnly(req) {
					t.Errorf("the proxy sent %q", req)
				}
			}
			tr := r.t
			if tr == nil {
				t.Fatal("no trace")
			}
			want := []uint64{codeAt, codeAt + 1, codeAt + 2, codeAt + 0x40}
			if tr.Len() != len(want) {
				t.Fatalf("%d steps recorded, the client made %d:\n%s", tr.Len(), len(want), listing.String())
			}
			for i, w := range want {
				if s := tr.Step(i); uint64(s.RIP) != w || s.Mnemonic != "nop" {
					t.Errorf("step %d: %s at %#x, want nop at %#x", i, s.Mnemonic, uint64(s.RIP), w)
				}
			}
			if g, ok := tr.GapAt(3); !ok || !strings.Contains(g.What, "let the guest run") || !strings.Contains(g.What, "0x400040") {
				t.Errorf("gap before step 3: %+v, %v; want the continue to 0x400040", g, ok)
			}
			// The state after step 2 is where the continue started, not
			// where it stopped.
			if a := tr.After(2); a == nil || a.Val(x86.RIP) != codeAt+3 {
				t.Errorf("state after step 2 (before the gap): %v, want rip %#x", a, codeAt+3)
			}
			if !strings.Contains(listing.String(), "nop") || !strings.Contains(listing.String(), "not recorded: gdb let the guest run") {
				t.Errorf("listing:\n%s", listing.String())
			}
		})
	}
}

// extra returns the requests in got beyond those in want, counted as a
// multiset.
func extra(got, want []string) []string {
	n := map[string]int{}
	for _, r := range want {
		n[r]++
	}
	var out []string
	for _, r := range got {
		if n[r] > 0 {
			n[r]--
			continue
		}
		out = append(out, r)
	}
	return out
}

// readOnly reports whether a request only reads the stub's state.
func readOnly(req string) bool {
	for _, p := range []string{"g", "m", "qXfer:features:read:", "qqemu.sstep", "qRcmd,696e666f2072656769737465727"} {
		if strings.HasPrefix(req, p) && (p != "qqemu.sstep" || req == p) {
			return true
		}
	}
	return false
}

// TestListen: the default socket is in a new directory only the user can
// enter, and is removed with it; a socket given by path is the user's
// only; a TCP port without a host is on loopback, and any other host is
// said to be open to others.
func TestListen(t *testing.T) {
	l, err := Listen("")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(l.Target)
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("socket directory %s: %v, %v; want mode 0700", dir, fi.Mode(), err)
	}
	if fi, err := os.Stat(l.Target); err != nil || fi.Mode().Perm() != 0o600 || l.Open != "" {
		t.Errorf("socket %s: %v, %v (open %q); want a private socket", l.Target, fi.Mode(), err, l.Open)
	}
	l.Close()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("after Close, %s: %v; want it removed", dir, err)
	}

	path := filepath.Join(t.TempDir(), "g.sock")
	l, err = Listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 || l.Target != path {
		t.Errorf("socket %s: %v, %v; want mode 0600", path, fi.Mode(), err)
	}
	l.Close()

	for _, tt := range []struct {
		addr, host string
		open       bool
	}{
		{":0", "127.0.0.1", false},
		{"localhost:0", "127.0.0.1", false},
		{"[::1]:0", "::1", false},
		{"0.0.0.0:0", "0.0.0.0", true},
	} {
		l, err := Listen(tt.addr)
		if err != nil {
			if tt.host == "::1" {
				continue // no IPv6 loopback here
			}
			t.Fatal(err)
		}
		host, _, _ := net.SplitHostPort(l.Target)
		if host != tt.host && !(tt.host == "0.0.0.0" && host == "::") || (l.Open != "") != tt.open {
			t.Errorf("Listen(%q): on %s, open %q; want host %s, open %v", tt.addr, l.Target, l.Open, tt.host, tt.open)
		}
		l.Close()
	}
	for _, bad := range []string{"unix:", "nonsense", "1234"} {
		if l, err := Listen(bad); err == nil {
			l.Close()
			t.Errorf("Listen(%q) succeeded", bad)
		}
	}
}

package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
)

// rawClient is a client that writes and reads bytes, to play what
// gdbremote's client never does.
type rawClient struct {
	t  *testing.T
	c  net.Conn
	fr *gdbremote.FrameReader
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, c: c, fr: gdbremote.NewFrameReader(bufio.NewReader(c))}
}

func (r *rawClient) write(b string) {
	r.t.Helper()
	if _, err := r.c.Write([]byte(b)); err != nil {
		r.t.Fatal(err)
	}
}

// next reads the next frame, with a deadline.
func (r *rawClient) next() gdbremote.Frame {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := r.fr.Next()
	if err != nil {
		r.t.Fatalf("read from the proxy: %v", err)
	}
	return f
}

func packet(payload string) string {
	return string(gdbstubtest.Frame([]byte(payload), false))
}

// TestNackedStopReply: with acks on, the proxy acknowledges a stop reply
// it holds back while it reads the state after a step. When the client
// then asks for that reply again ('-'), the proxy sends it again itself:
// the stub, asked, would resend its own last reply, one of the proxy's.
func TestNackedStopReply(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	stub := newStub(t)
	addr, done := startProxy(t, ctx, stub, nil)
	c := dialRaw(t, addr)
	c.write("+" + packet("qSupported:multiprocess+"))
	if f := c.next(); f.Kind != gdbremote.FrameAck {
		t.Fatalf("got %q, want the stub's ack", f.Raw)
	}
	if f := c.next(); !f.IsPacket("PacketSize=") {
		t.Fatalf("got %q, want the stub's features", f.Raw)
	}
	c.write("+" + packet("s"))
	if f := c.next(); f.Kind != gdbremote.FrameAck {
		t.Fatalf("got %q, want the ack of the step", f.Raw)
	}
	stop := c.next()
	if !stop.IsPacket("T05") {
		t.Fatalf("got %q, want the stop reply", stop.Raw)
	}
	c.write("-")
	if again := c.next(); !bytes.Equal(again.Raw, stop.Raw) {
		t.Fatalf("after '-' got %q, want the stop reply %q again", again.Raw, stop.Raw)
	}
	c.write("+" + packet("g"))
	if f := c.next(); f.Kind != gdbremote.FrameAck {
		t.Fatalf("got %q, want the ack of g", f.Raw)
	}
	if f := c.next(); f.Kind != gdbremote.FramePacket || len(f.Payload) != 1216 {
		t.Fatalf("got %q, want the registers", f.Raw)
	}
	c.c.Close()
	r := wait(t, done)
	if r.err != nil || r.t == nil || r.t.Len() != 1 {
		t.Fatalf("proxy ended with %v and %v, want one step recorded", r.err, r.t)
	}
}

// TestMalformed sends the stub, through the proxy, bytes outside packets,
// a packet with a bad checksum and a truncated escape, and has the stub
// answer one request with a bad checksum: all pass unchanged, the stub's
// nack reaches the client, the client's nack makes the stub resend, and
// the session goes on.
func TestMalformed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	stub := newStub(t)
	stub.Inject(gdbstubtest.Fault{Kind: gdbstubtest.BadChecksum, Match: "m"})
	addr, done := startProxy(t, ctx, stub, nil)
	c := dialRaw(t, addr)
	c.write("\r\nnoise\xff")
	c.write("$g#00")
	if f := c.next(); f.Kind != gdbremote.FrameNack {
		t.Fatalf("got %q, want the stub's nack of a bad checksum", f.Raw)
	}
	c.write("$m}#ea") // a good checksum, an escape cut short
	if f := c.next(); f.Kind != gdbremote.FrameNack {
		t.Fatalf("got %q, want the stub's nack of a broken escape", f.Raw)
	}
	c.write("+" + packet("m400000,4"))
	if f := c.next(); f.Kind != gdbremote.FrameAck {
		t.Fatalf("got %q, want the ack of m", f.Raw)
	}
	if f := c.next(); f.Kind != gdbremote.FramePacket || f.Bad == nil {
		t.Fatalf("got %q, want the stub's reply with a bad checksum", f.Raw)
	}
	c.write("-")
	if f := c.next(); !f.IsPacket("90909090") {
		t.Fatalf("after '-' got %q, want the memory resent", f.Raw)
	}
	c.write("+")
	c.c.Close()
	if r := wait(t, done); r.err != nil {
		t.Fatalf("proxy: %v", r.err)
	}
	if got := stub.Requests(); len(got) != 1 || got[0] != "m400000,4" {
		t.Errorf("the stub took %q, want the one good request", got)
	}
}

// TestStubDies: the stub closes the connection in the middle of a step
// the client asked for, or while the proxy reads on its own: the proxy
// ends with an error that says so, closes the client's connection, and
// keeps the steps recorded before.
func TestStubDies(t *testing.T) {
	for _, match := range []string{"s", "qqemu.sstep"} {
		t.Run(match, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			stub := newStub(t)
			c, done := dialProxy(t, ctx, stub)
			steps := 0
			if match == "s" {
				if _, err := c.Step(ctx); err != nil {
					t.Fatal(err)
				}
				steps = 1
			}
			stub.Inject(gdbstubtest.Fault{Kind: gdbstubtest.Drop, Match: match})
			_, err := c.Step(ctx)
			if !errors.Is(err, gdbremote.ErrClosed) {
				t.Errorf("the client's step: %v, want its connection closed", err)
			}
			r := wait(t, done)
			if r.err == nil || !strings.Contains(r.err.Error(), "stub") {
				t.Errorf("proxy ended with %v, want the stub's end", r.err)
			}
			if got := 0; r.t != nil {
				got = r.t.Len()
				if got != steps {
					t.Errorf("%d steps kept, want %d", got, steps)
				}
			} else if steps != 0 {
				t.Errorf("no trace, want %d steps", steps)
			}
		})
	}
}

// TestClientLeaves: the client hangs up without detaching, or the proxy
// is stopped (ctrl-c) while the client is idle: the session ends at once
// with the steps made.
func TestClientLeaves(t *testing.T) {
	for _, how := range []string{"hang up", "cancel"} {
		t.Run(how, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			pctx, stop := context.WithCancel(ctx)
			defer stop()
			stub := newStub(t)
			addr, done := startProxy(t, pctx, stub, nil)
			c, err := gdbremote.Dial(ctx, addr, gdbremote.WithTimeout(3*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for range 2 {
				if _, err := c.Step(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if how == "hang up" {
				c.Close()
			} else {
				stop()
			}
			r := wait(t, done)
			switch {
			case how == "hang up" && r.err != nil:
				t.Errorf("proxy ended with %v after the client hung up", r.err)
			case how == "cancel" && !errors.Is(r.err, context.Canceled):
				t.Errorf("proxy ended with %v, want context.Canceled", r.err)
			}
			if r.t == nil || r.t.Len() != 2 {
				t.Fatalf("trace %v, want the 2 steps made", r.t)
			}
			if how == "cancel" {
				if _, err := c.ReadRegisters(ctx); !errors.Is(err, gdbremote.ErrClosed) {
					t.Errorf("the client after the proxy stopped: %v, want its connection closed", err)
				}
			}
		})
	}
}

// TestInterrupt: a continue that the client ends with ctrl-c (0x03): the
// interrupt reaches the stub, its stop reply reaches the client, and the
// trace notes the gap with the stop.
func TestInterrupt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	stub := newStub(t)
	c, done := dialProxy(t, ctx, stub)
	if _, err := c.Step(ctx); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	sr, err := c.Continue(rctx) // no breakpoint: the guest runs until interrupted
	rcancel()
	if !errors.Is(err, context.DeadlineExceeded) || sr.Signal != 2 {
		t.Fatalf("continue: %v, %v; want the interrupt's stop (signal 2)", sr, err)
	}
	if _, err := c.Step(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()
	r := wait(t, done)
	if r.err != nil || r.t == nil || r.t.Len() != 2 {
		t.Fatalf("proxy: %v, %v; want two steps", r.err, r.t)
	}
	if g, ok := r.t.GapAt(1); !ok || !strings.Contains(g.What, "interrupted") {
		t.Errorf("gap before step 1: %+v, want the interrupted continue", g)
	}
}

// TestKill: gdb's kill ends QEMU, which closes the stub's connection: an
// ordinary end of the session, not an error.
func TestKill(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	stub := newStub(t)
	c, done := dialProxy(t, ctx, stub)
	if _, err := c.Step(ctx); err != nil {
		t.Fatal(err)
	}
	c.Kill(ctx)
	if r := wait(t, done); r.err != nil || r.t == nil || r.t.Len() != 1 {
		t.Fatalf("proxy after a kill: %v, %v; want a clean end with the step", r.err, r.t)
	}
}

// TestPhysicalModeKept: a client that switched memory accesses to physical
// addresses (Qqemu.PhyMemMode:1) keeps them so; the proxy reads the
// instructions at their virtual addresses, switching the mode off around
// its reads and back on.
func TestPhysicalModeKept(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	stub := newStub(t)
	c, done := dialProxy(t, ctx, stub)
	if err := c.SetPhysicalMemoryMode(ctx, true); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := c.Step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if !stub.PhysicalMemoryMode() {
		t.Error("the stub is back in virtual mode after the proxy's reads")
	}
	phys := false
	for _, req := range stub.Requests() {
		switch {
		case req == "Qqemu.PhyMemMode:1":
			phys = true
		case req == "Qqemu.PhyMemMode:0":
			phys = false
		case strings.HasPrefix(req, "m") && phys:
			t.Errorf("the proxy read %q with physical addresses on", req)
		}
	}
	c.Close()
	if r := wait(t, done); r.err != nil || r.t == nil || r.t.Len() != 2 {
		t.Fatalf("proxy: %v, %v; want two steps", r.err, r.t)
	}
}

// TestNoStub: nothing listens where --to points: when gdb connects, the
// proxy says so and closes gdb's connection.
func TestNoStub(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan served, 1)
	go func() {
		tr, err := Serve(ctx, ln, Config{To: "unix:" + t.TempDir() + "/none.sock", Timeout: time.Second})
		done <- served{tr, err}
	}()
	c := dialRaw(t, ln.Addr().String())
	r := wait(t, done)
	if r.err == nil || !strings.Contains(r.err.Error(), "connect to the stub") || r.t != nil {
		t.Fatalf("proxy without a stub: %v, %v", r.err, r.t)
	}
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.c.Read(make([]byte, 1)); err == nil {
		t.Error("gdb's connection is still open")
	}
}

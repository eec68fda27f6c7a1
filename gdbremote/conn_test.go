package gdbremote_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
)

// dialStub starts a fake stub and connects to it.
func dialStub(t *testing.T, opts ...gdbremote.Option) (*gdbstubtest.Stub, *gdbremote.Conn) {
	t.Helper()
	s := gdbstubtest.New(t)
	c, err := gdbremote.Dial(context.Background(), s.Addr(), opts...)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return s, c
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestDialHandshake(t *testing.T) {
	s, c := dialStub(t)
	reqs := s.Requests()
	if len(reqs) < 3 || !strings.HasPrefix(reqs[0], "qSupported:multiprocess+;swbreak+;hwbreak+;") || reqs[1] != "?" {
		t.Errorf("handshake requests = %q, want qSupported, then ?", reqs)
	}
	if slices.Contains(reqs, "QStartNoAckMode") {
		t.Error("QStartNoAckMode sent though the stub did not offer it")
	}
	// i386-64bit.xml is 8175 bytes: several qXfer chunks.
	var xfers int
	for _, r := range reqs {
		if strings.HasPrefix(r, "qXfer:features:read:i386-64bit.xml:") {
			xfers++
		}
	}
	if xfers < 4 {
		t.Errorf("read i386-64bit.xml in %d requests, want at least 4", xfers)
	}
	if got := c.Features(); got["PacketSize"] != "1000" || got["qXfer:features:read"] != "+" || got["multiprocess"] != "+" {
		t.Errorf("Features() = %v", got)
	}
	if c.PacketSize() != 4096 {
		t.Errorf("PacketSize() = %d, want 4096", c.PacketSize())
	}
	if sr := c.InitialStop(); sr.Kind != 'T' || sr.Signal != 5 || sr.Thread != gdbstubtest.Thread {
		t.Errorf("InitialStop() = %+v", sr)
	}
	if n := len(c.Layout()); n != 66 {
		t.Errorf("layout has %d registers, want 66", n)
	}
}

func TestDialNoAckMode(t *testing.T) {
	s := gdbstubtest.New(t)
	s.SetFeatures(gdbstubtest.QEMUFeatures + ";QStartNoAckMode+")
	c, err := gdbremote.Dial(context.Background(), s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !slices.Contains(s.Requests(), "QStartNoAckMode") {
		t.Fatal("QStartNoAckMode not sent though offered")
	}
	v, err := c.ReadRegisters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rip, ok := v.Uint64("rip"); !ok || rip != 0xfff0 {
		t.Errorf("rip = %#x, %v", rip, ok)
	}
}

func TestDialAddressForms(t *testing.T) {
	s := gdbstubtest.New(t)
	_, port, _ := net.SplitHostPort(s.Addr())
	c, err := gdbremote.Dial(context.Background(), ":"+port)
	if err != nil {
		t.Fatalf("Dial(%q): %v", ":"+port, err)
	}
	c.Close()
	if s.Accepted() != 1 {
		t.Errorf("stub accepted %d connections, want 1", s.Accepted())
	}
}

func TestDialErrors(t *testing.T) {
	// A port nobody listens on: listen, note the port, close.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	tests := []struct {
		name, addr string
		want       string
	}{
		{"refused", dead, "nothing is listening"},
		{"unix socket missing", "unix:" + filepath.Join(t.TempDir(), "none.sock"), "nothing is listening"},
		{"bad address", "no-port-here", "dial"},
		{"port alone", "1234", "is a port alone: write :1234"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			c, err := gdbremote.Dial(context.Background(), tt.addr, gdbremote.WithTimeout(2*time.Second))
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), tt.addr) {
				t.Errorf("error %q should name %q and say %q", err, tt.addr, tt.want)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("Dial took %v", d)
			}
		})
	}
}

func TestDialHandshakeFailure(t *testing.T) {
	s := gdbstubtest.New(t)
	s.Inject(gdbstubtest.Fault{Kind: gdbstubtest.Drop, Match: "qSupported"})
	_, err := gdbremote.Dial(context.Background(), s.Addr())
	if !errors.Is(err, gdbremote.ErrClosed) || !strings.Contains(err.Error(), "handshake") {
		t.Errorf("Dial to a stub that hangs up: %v, want ErrClosed during the handshake", err)
	}
}

func TestDialUnixSocket(t *testing.T) {
	s := gdbstubtest.New(t)
	path := filepath.Join(t.TempDir(), "gdb.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Skipf("unix sockets: %v", err)
	}
	defer ln.Close()
	// Relay the unix socket to the stub's TCP port.
	go func() {
		uc, err := ln.Accept()
		if err != nil {
			return
		}
		tc, err := net.Dial("tcp", s.Addr())
		if err != nil {
			uc.Close()
			return
		}
		go func() { copyClose(tc, uc) }()
		copyClose(uc, tc)
	}()
	c, err := gdbremote.Dial(context.Background(), "unix:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if len(c.Layout()) == 0 {
		t.Error("no layout over a unix socket")
	}
}

func copyClose(dst, src net.Conn) {
	buf := make([]byte, 4096)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			dst.Write(buf[:n])
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

func TestReadRegisters(t *testing.T) {
	for _, rle := range []bool{false, true} {
		name := "plain"
		if rle {
			name = "run-length encoded"
		}
		t.Run(name, func(t *testing.T) {
			s, c := dialStub(t)
			s.SetRLE(rle)
			s.SetRegister("gs_base", 0xffff888007a00000)
			s.SetUnknown("k_gs_base")
			v, err := c.ReadRegisters(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for _, tt := range []struct {
				name string
				want uint64
				ok   bool
			}{
				{"rip", 0xfff0, true},
				{"cs", 0xf000, true},
				{"eflags", 0x2, true},
				{"gs_base", 0xffff888007a00000, true},
				{"cr0", 0x60000010, true},
				{"mxcsr", 0x1f80, true},
				{"k_gs_base", 0, false}, // sent as xx: unknown, not zero
				{"xmm0", 0, false},      // wider than 64 bits
				{"no_such_reg", 0, false},
			} {
				got, ok := v.Uint64(tt.name)
				if got != tt.want || ok != tt.ok {
					t.Errorf("Uint64(%q) = %#x, %v; want %#x, %v", tt.name, got, ok, tt.want, tt.ok)
				}
			}
			if b, ok := v.Bytes("xmm0"); !ok || len(b) != 16 {
				t.Errorf("Bytes(xmm0) = %x, %v; want 16 bytes", b, ok)
			}
			if _, ok := v.Bytes("k_gs_base"); ok {
				t.Error("Bytes(k_gs_base) ok for an unknown register")
			}
			names := v.Names()
			if len(names) != 65 || slices.Contains(names, "k_gs_base") || names[0] != "rax" {
				t.Errorf("Names() = %d names starting %q, want the 65 known ones", len(names), names[:1])
			}
			if n := len(v.Raw()); n != 608 {
				t.Errorf("Raw() has %d bytes, want 608", n)
			}
		})
	}
}

func TestZeroValues(t *testing.T) {
	var v gdbremote.Values
	if _, ok := v.Uint64("rip"); ok {
		t.Error("zero Values has rip")
	}
	if v.Names() != nil {
		t.Error("zero Values has names")
	}
}

func TestReadWriteRegister(t *testing.T) {
	s, c := dialStub(t)
	ctx := context.Background()
	b, err := c.ReadRegister(ctx, "cs")
	if err != nil || !bytes.Equal(b, []byte{0, 0xf0, 0, 0}) {
		t.Errorf("ReadRegister(cs) = % x, %v", b, err)
	}
	if !slices.Contains(s.Requests(), "p12") {
		t.Errorf("cs (regnum 18) not read with p12: %q", s.Requests())
	}
	val := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	if err := c.WriteRegister(ctx, "cr3", val); err != nil {
		t.Fatal(err)
	}
	if got := s.Register("cr3"); !bytes.Equal(got, val) {
		t.Errorf("stub's cr3 = % x after P, want % x", got, val)
	}

	s.SetUnknown("efer")
	if _, err := c.ReadRegister(ctx, "efer"); !errors.Is(err, gdbremote.ErrUnknownValue) {
		t.Errorf("ReadRegister of an xx register: %v, want ErrUnknownValue", err)
	}
	if _, err := c.ReadRegister(ctx, "lstar"); err == nil || !strings.Contains(err.Error(), `"lstar"`) {
		t.Errorf("ReadRegister(lstar): %v, want an error naming it", err)
	}
	if err := c.WriteRegister(ctx, "rax", []byte{1}); err == nil || !strings.Contains(err.Error(), "1 bytes given") {
		t.Errorf("WriteRegister with a short value: %v", err)
	}
}

func TestReadMemory(t *testing.T) {
	s, c := dialStub(t)
	ctx := context.Background()
	data := make([]byte, 5000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	s.Map(0x200000, data)
	got, err := c.ReadMemory(ctx, 0x200000, len(data))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadMemory: %d bytes, %v", len(got), err)
	}
	var ms []string
	for _, r := range s.Requests() {
		if strings.HasPrefix(r, "m") {
			ms = append(ms, r)
		}
	}
	want := []string{"m200000,7fe", "m2007fe,7fe", "m200ffc,38c"}
	if !slices.Equal(ms, want) {
		t.Errorf("memory requests = %q, want %q (chunks of 2046 bytes)", ms, want)
	}

	// The reset vector.
	b, err := c.ReadMemory(ctx, 0xffff0, 1)
	if err != nil || b[0] != 0xea {
		t.Errorf("byte at 0xffff0 = % x, %v", b, err)
	}
	if b, err := c.ReadMemory(ctx, 0x1000, 0); err != nil || len(b) != 0 {
		t.Errorf("zero-length read = %v, %v", b, err)
	}
}

func TestReadMemoryNotMapped(t *testing.T) {
	s, c := dialStub(t)
	s.Map(0x300000, make([]byte, 4096))
	// The third chunk runs off the end of the mapping.
	got, err := c.ReadMemory(context.Background(), 0x300000, 4096+16)
	var se *gdbremote.StubError
	if !errors.As(err, &se) {
		t.Fatalf("ReadMemory across the end of a mapping: %v, want a *StubError", err)
	}
	if se.Code != 0x14 || !se.NotMapped() || se.Request != "m300ffc,14" {
		t.Errorf("StubError = %+v", se)
	}
	for _, want := range []string{"0x300ffc", "E14", "address not mapped"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if len(got) != 4092 {
		t.Errorf("returned %d bytes before the failure, want the 4092 of the first two chunks", len(got))
	}
}

func TestWriteMemory(t *testing.T) {
	s, c := dialStub(t)
	data := bytes.Repeat([]byte("#$}*"), 1000)
	if err := c.WriteMemory(context.Background(), 0x1000, data); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Memory(0x1000, len(data)); !bytes.Equal(got, data) {
		t.Error("stub memory differs from what was written")
	}
	for _, r := range s.Requests() {
		if strings.HasPrefix(r, "M") && len(r)+4 > 4096 {
			t.Errorf("M request of %d bytes exceeds PacketSize", len(r))
		}
	}
	err := c.WriteMemory(context.Background(), 0xdead0000, []byte{1})
	var se *gdbremote.StubError
	if !errors.As(err, &se) || !se.NotMapped() {
		t.Errorf("write to unmapped memory: %v", err)
	}
}

func TestStep(t *testing.T) {
	s, c := dialStub(t)
	ctx := context.Background()
	for i := range 3 {
		sr, err := c.Step(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if sr.Kind != 'T' || sr.Signal != 5 || sr.Thread != gdbstubtest.Thread {
			t.Errorf("step %d: %+v", i, sr)
		}
	}
	sr, err := c.StepVCont(ctx, gdbstubtest.Thread)
	if err != nil || sr.Signal != 5 {
		t.Fatalf("StepVCont: %v, %v", sr, err)
	}
	if rip := s.Register("rip"); rip[0] != 0xf4 || rip[1] != 0xff {
		t.Errorf("rip after 4 steps = % x, want f4 ff ...", rip)
	}
	reqs := s.Requests()
	if !slices.Contains(reqs, "vCont?") || !slices.Contains(reqs, "vCont;s:"+gdbstubtest.Thread) {
		t.Errorf("requests %q lack vCont? and vCont;s:thread", reqs)
	}
}

func TestStepVContUnsupported(t *testing.T) {
	s, c := dialStub(t)
	s.Inject(gdbstubtest.Fault{Kind: gdbstubtest.Reply, Match: "vCont?", Reply: ""})
	_, err := c.StepVCont(context.Background(), "")
	var ue *gdbremote.UnsupportedError
	if !errors.As(err, &ue) {
		t.Errorf("StepVCont without vCont: %v, want *UnsupportedError", err)
	}
}

func TestBreakpoints(t *testing.T) {
	tests := []struct {
		kind       gdbremote.BreakKind
		addr       uint64
		size       int
		wantReq    string
		wantReason string
	}{
		{gdbremote.Software, 0x7c00, 1, "Z0,7c00,1", ""},
		{gdbremote.Hardware, 0xffffffff81c00080, 1, "Z1,ffffffff81c00080,1", ""},
		{gdbremote.WriteWatch, 0x5000, 8, "Z2,5000,8", "watch"},
		{gdbremote.ReadWatch, 0x5008, 4, "Z3,5008,4", "rwatch"},
		{gdbremote.AccessWatch, 0x5010, 2, "Z4,5010,2", "awatch"},
	}
	for _, tt := range tests {
		t.Run(tt.kind.String(), func(t *testing.T) {
			s, c := dialStub(t)
			ctx := context.Background()
			if err := c.SetBreakpoint(ctx, tt.kind, tt.addr, tt.size); err != nil {
				t.Fatal(err)
			}
			if got := s.Breakpoints(); !slices.Equal(got, []string{tt.wantReq}) {
				t.Errorf("stub breakpoints = %q, want %q", got, tt.wantReq)
			}
			sr, err := c.Continue(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if sr.Signal != 5 || sr.Reason != tt.wantReason {
				t.Errorf("stop reply = %+v, want T05 with reason %q", sr, tt.wantReason)
			}
			if tt.wantReason != "" && sr.Addr != tt.addr {
				t.Errorf("watch address = %#x, want %#x", sr.Addr, tt.addr)
			}
			if tt.wantReason == "" {
				v, _ := c.ReadRegisters(ctx)
				if rip, _ := v.Uint64("rip"); rip != tt.addr {
					t.Errorf("rip = %#x, want the breakpoint %#x", rip, tt.addr)
				}
			}
			if err := c.ClearBreakpoint(ctx, tt.kind, tt.addr, tt.size); err != nil {
				t.Fatal(err)
			}
			if got := s.Breakpoints(); len(got) != 0 {
				t.Errorf("breakpoints left: %q", got)
			}
		})
	}
}

func TestBreakpointErrors(t *testing.T) {
	_, c := dialStub(t)
	ctx := context.Background()
	var se *gdbremote.StubError
	if err := c.ClearBreakpoint(ctx, gdbremote.Hardware, 0x1234, 1); !errors.As(err, &se) || se.Code != 0x22 {
		t.Errorf("clearing a breakpoint never set: %v, want stub error E22", err)
	}
	if err := c.SetBreakpoint(ctx, gdbremote.BreakKind(7), 0x1234, 1); err == nil {
		t.Error("SetBreakpoint accepted kind 7")
	}
	if err := c.SetBreakpoint(ctx, gdbremote.Hardware, 0x1234, 0); err == nil {
		t.Error("SetBreakpoint accepted size 0")
	}
}

func TestContinueInterrupt(t *testing.T) {
	_, c := dialStub(t, gdbremote.WithTimeout(10*time.Second))
	done := make(chan struct{})
	var sr gdbremote.StopReply
	var err error
	go func() {
		defer close(done)
		sr, err = c.Continue(context.Background())
	}()
	time.Sleep(50 * time.Millisecond)
	if err := c.Interrupt(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Continue did not return after Interrupt")
	}
	if err != nil || sr.Signal != 2 {
		t.Errorf("Continue after Interrupt = %+v, %v; want T02 and no error", sr, err)
	}
}

func TestContinueContext(t *testing.T) {
	tests := []struct {
		name  string
		ctx   func() (context.Context, context.CancelFunc)
		check func(error) bool
	}{
		{"cancelled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(100*time.Millisecond, cancel)
			return ctx, cancel
		}, func(err error) bool { return errors.Is(err, context.Canceled) }},
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 100*time.Millisecond)
		}, func(err error) bool {
			return errors.Is(err, context.DeadlineExceeded) && errors.Is(err, gdbremote.ErrTimeout)
		}},
		{"conn timeout", func() (context.Context, context.CancelFunc) {
			return context.Background(), func() {}
		}, func(err error) bool {
			return errors.Is(err, os.ErrDeadlineExceeded) && errors.Is(err, gdbremote.ErrTimeout)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, c := dialStub(t, gdbremote.WithTimeout(200*time.Millisecond))
			ctx, cancel := tt.ctx()
			defer cancel()
			start := time.Now()
			sr, err := c.Continue(ctx)
			if !tt.check(err) {
				t.Errorf("Continue: %v", err)
			}
			if sr.Kind != 'T' || sr.Signal != 2 {
				t.Errorf("stop reply after the interrupt = %+v, want T02", sr)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("Continue took %v", d)
			}
			// The connection is still in step.
			if _, err := c.ReadRegisters(context.Background()); err != nil {
				t.Errorf("ReadRegisters after the interrupt: %v", err)
			}
		})
	}
}

func TestStepStalls(t *testing.T) {
	// A step that never finishes (a hlt with interrupts masked) is
	// interrupted.
	s, c := dialStub(t, gdbremote.WithTimeout(150*time.Millisecond))
	s.Inject(gdbstubtest.Fault{Kind: gdbstubtest.Stall, Match: "s"})
	sr, err := c.Step(context.Background())
	if !errors.Is(err, gdbremote.ErrTimeout) || !strings.Contains(err.Error(), `"s"`) {
		t.Errorf("stalled step: %v, want ErrTimeout naming \"s\"", err)
	}
	if sr.Signal != 2 {
		t.Errorf("stop reply = %+v, want T02 after the interrupt", sr)
	}
	if _, err := c.Step(context.Background()); err != nil {
		t.Errorf("next step: %v", err)
	}

	// The same with a context that can be cancelled but has no deadline
	// (a command's ctrl-c context): a step still has the Conn's timeout,
	// so a frozen QEMU cannot hang the caller until someone presses
	// ctrl-c. A continue, by contrast, waits as long as the context allows.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.Inject(gdbstubtest.Fault{Kind: gdbstubtest.Stall, Match: "s"})
	start := time.Now()
	if _, err := c.Step(ctx); !errors.Is(err, gdbremote.ErrTimeout) || time.Since(start) > 5*time.Second {
		t.Errorf("stalled step under a cancellable context: %v after %v, want ErrTimeout after about 150ms", err, time.Since(start))
	}
	s.Inject(gdbstubtest.Fault{Kind: gdbstubtest.Stall, Match: "c"})
	cctx, ccancel := context.WithCancel(context.Background())
	time.AfterFunc(600*time.Millisecond, ccancel)
	start = time.Now()
	if _, err := c.Continue(cctx); !errors.Is(err, context.Canceled) || time.Since(start) < 500*time.Millisecond {
		t.Errorf("stalled continue: %v after %v, want it to wait until the context was cancelled (600ms)", err, time.Since(start))
	}

	// A stub that ignores the interrupt too.
	s.Inject(gdbstubtest.Fault{Kind: gdbstubtest.Hang, Match: "s"})
	_, err = c.Step(context.Background())
	if !errors.Is(err, gdbremote.ErrTimeout) || !strings.Contains(err.Error(), "no stop reply after the interrupt") {
		t.Errorf("hung step: %v", err)
	}
}

func TestMonitor(t *testing.T) {
	s, c := dialStub(t)
	ctx := context.Background()
	s.SetRegister("efer", 0xd01)
	out, err := c.Monitor(ctx, "info registers")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"EFER=0000000000000d01", "CR0=60000010", "RIP=000000000000fff0"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if con := c.Console(); len(con) != 0 {
		t.Errorf("monitor output leaked to Console: %q", con)
	}
	s.SetMonitor("info mem", "")
	if out, err := c.Monitor(ctx, "info mem"); err != nil || out != "" {
		t.Errorf("Monitor with no output = %q, %v", out, err)
	}
	s.Inject(gdbstubtest.Fault{Kind: gdbstubtest.Reply, Match: "qRcmd", Reply: "E01"})
	var se *gdbremote.StubError
	if _, err := c.Monitor(ctx, "info registers"); !errors.As(err, &se) {
		t.Errorf("Monitor with an E01 reply: %v", err)
	}
	s.Inject(gdbstubtest.Fault{Kind: gdbstubtest.Reply, Match: "qRcmd", Reply: "68690a"})
	if out, err := c.Monitor(ctx, "x"); err != nil || out != "hi\n" {
		t.Errorf("Monitor with a hex reply = %q, %v", out, err)
	}
}

func TestQEMUExtensions(t *testing.T) {
	s, c := dialStub(t)
	ctx := context.Background()
	bits, err := c.StepBits(ctx)
	if err != nil || bits["ENABLE"] != gdbremote.SStepEnable || bits["NOIRQ"] != gdbremote.SStepNoIRQ || bits["NOTIMER"] != gdbremote.SStepNoTimer {
		t.Errorf("StepBits = %v, %v", bits, err)
	}
	flags, err := c.StepFlags(ctx)
	if err != nil || flags != 7 {
		t.Errorf("StepFlags = %d, %v; want 7", flags, err)
	}
	if err := c.SetStepFlags(ctx, gdbremote.SStepEnable); err != nil {
		t.Fatal(err)
	}
	if s.StepFlags() != 1 {
		t.Errorf("stub step flags = %d, want 1", s.StepFlags())
	}
	if err := c.SetPhysicalMemoryMode(ctx, true); err != nil || !s.PhysicalMemoryMode() {
		t.Errorf("SetPhysicalMemoryMode(true): %v, stub mode %v", err, s.PhysicalMemoryMode())
	}
	if err := c.SetPhysicalMemoryMode(ctx, false); err != nil || s.PhysicalMemoryMode() {
		t.Errorf("SetPhysicalMemoryMode(false): %v, stub mode %v", err, s.PhysicalMemoryMode())
	}
	s.Inject(gdbstubtest.Fault{Kind: gdbstubtest.Reply, Match: "qqemu.sstep", Reply: "junk"})
	var me *gdbremote.MalformedError
	if _, err := c.StepFlags(ctx); !errors.As(err, &me) {
		t.Errorf("StepFlags with a junk reply: %v, want *MalformedError", err)
	}
}

// TestNegotiateStepFlags plays the single-step flag sets QEMU's gdbstub
// offers: all three under TCG; ENABLE and NOIRQ under KVM on a host kernel
// with KVM_GUESTDBG_BLOCKIRQ, where Qqemu.sstep=7 answers E22 (QEMU 7.2
// with -accel kvm, measured on a host with /dev/kvm); ENABLE alone under KVM
// without it. No flag the stub does not list may be asked for.
func TestNegotiateStepFlags(t *testing.T) {
	const (
		en    = gdbremote.SStepEnable
		irq   = gdbremote.SStepNoIRQ
		timer = gdbremote.SStepNoTimer
	)
	tests := []struct {
		name   string
		bits   int
		want   int
		fault  *gdbstubtest.Fault
		got    int
		asked  []string
		errAs  any
		noStep bool
	}{
		{name: "tcg", bits: gdbstubtest.StepBitsTCG, want: irq | timer, got: en | irq | timer, asked: []string{"Qqemu.sstep=7"}},
		{name: "kvm", bits: gdbstubtest.StepBitsKVM, want: irq | timer, got: en | irq, asked: []string{"Qqemu.sstep=3"}},
		{name: "kvm without BLOCKIRQ", bits: gdbstubtest.StepBitsKVMNoBlock, want: irq | timer, got: en, asked: []string{"Qqemu.sstep=1"}},
		{name: "interrupts allowed", bits: gdbstubtest.StepBitsTCG, want: en, got: en, asked: []string{"Qqemu.sstep=1"}},
		{name: "listed but refused", bits: gdbstubtest.StepBitsTCG, want: irq | timer,
			fault: &gdbstubtest.Fault{Kind: gdbstubtest.Reply, Match: "Qqemu.sstep=7", Reply: "E22"},
			got:   en | irq, asked: []string{"Qqemu.sstep=7", "Qqemu.sstep=3"}},
		{name: "no qemu.sstep", bits: gdbstubtest.StepBitsTCG, want: irq | timer,
			fault: &gdbstubtest.Fault{Kind: gdbstubtest.Reply, Match: "qqemu.sstepbits", Reply: ""},
			errAs: new(*gdbremote.UnsupportedError), noStep: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c := dialStub(t)
			s.SetStepBits(tt.bits)
			if tt.fault != nil {
				s.Inject(*tt.fault)
			}
			got, err := c.NegotiateStepFlags(context.Background(), tt.want)
			if tt.errAs != nil {
				if !errors.As(err, tt.errAs) {
					t.Fatalf("NegotiateStepFlags = %d, %v; want an error of type %T", got, err, tt.errAs)
				}
			} else if err != nil || got != tt.got {
				t.Fatalf("NegotiateStepFlags = %s, %v; want %s", gdbremote.StepFlagsString(got), err, gdbremote.StepFlagsString(tt.got))
			}
			var asked []string
			for _, r := range s.Requests() {
				if strings.HasPrefix(r, "Qqemu.sstep=") {
					asked = append(asked, r)
				}
			}
			if !slices.Equal(asked, tt.asked) {
				t.Errorf("requests %q, want %q", asked, tt.asked)
			}
			if !tt.noStep && s.StepFlags() != tt.got {
				t.Errorf("stub's flags %#x, want %#x", s.StepFlags(), tt.got)
			}
		})
	}
}

func TestStepFlagsString(t *testing.T) {
	for f, want := range map[int]string{0: "none", 1: "ENABLE", 3: "ENABLE|NOIRQ", 7: "ENABLE|NOIRQ|NOTIMER", 5: "ENABLE|NOTIMER"} {
		if got := gdbremote.StepFlagsString(f); got != want {
			t.Errorf("StepFlagsString(%d) = %q, want %q", f, got, want)
		}
	}
}

func TestThreads(t *testing.T) {
	s, c := dialStub(t)
	ctx := context.Background()
	ids, err := c.Threads(ctx)
	if err != nil || !slices.Equal(ids, []string{gdbstubtest.Thread}) {
		t.Errorf("Threads = %q, %v", ids, err)
	}
	if err := c.SelectThread(ctx, 'g', 1); err != nil {
		t.Fatal(err)
	}
	if err := c.SelectThread(ctx, 'c', -1); err != nil {
		t.Fatal(err)
	}
	if err := c.SelectThread(ctx, 'x', 1); err == nil {
		t.Error("SelectThread accepted op 'x'")
	}
	reqs := s.Requests()
	if !slices.Contains(reqs, "Hg1") || !slices.Contains(reqs, "Hc-1") {
		t.Errorf("requests %q lack Hg1 and Hc-1", reqs)
	}
}

func TestStopReason(t *testing.T) {
	_, c := dialStub(t)
	sr, err := c.StopReason(context.Background())
	if err != nil || sr.Kind != 'T' || sr.Signal != 5 {
		t.Errorf("StopReason = %+v, %v", sr, err)
	}
}

func TestDetachAndKill(t *testing.T) {
	t.Run("detach", func(t *testing.T) {
		s, c := dialStub(t)
		if err := c.Detach(context.Background()); err != nil {
			t.Fatal(err)
		}
		if reqs := s.Requests(); reqs[len(reqs)-1] != "D;01" {
			t.Errorf("last request %q, want D;01 (multiprocess)", reqs[len(reqs)-1])
		}
		if _, err := c.ReadRegisters(context.Background()); !errors.Is(err, gdbremote.ErrClosed) {
			t.Errorf("request after Detach: %v, want ErrClosed", err)
		}
	})
	t.Run("kill", func(t *testing.T) {
		_, c := dialStub(t)
		start := time.Now()
		if err := c.Kill(context.Background()); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("Kill took %v", d)
		}
	})
}

func TestExchange(t *testing.T) {
	s, c := dialStub(t)
	ctx := context.Background()
	tests := []struct{ req, want string }{
		{"qC", "QC" + gdbstubtest.Thread},
		{"qAttached", "1"},
		{"m ffffffffffff0000,8", "E14"}, // not an error for Exchange
		{"qUnknownThing", ""},
		{"X#$}*{", ""}, // escaped on the wire, arrives intact
	}
	for _, tt := range tests {
		got, err := c.Exchange(ctx, tt.req)
		if err != nil || got != tt.want {
			t.Errorf("Exchange(%q) = %q, %v; want %q", tt.req, got, err, tt.want)
		}
	}
	if !slices.Contains(s.Requests(), "X#$}*{") {
		t.Errorf("stub did not receive the escaped request intact: %q", s.Requests())
	}
}

func TestWireLog(t *testing.T) {
	var log syncBuffer
	_, c := dialStub(t, gdbremote.WithWireLog(&log))
	if _, err := c.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.Interrupt()
	lines := strings.Split(strings.TrimSpace(log.String()), "\n")
	for _, want := range []string{" -> qSupported:", " <- PacketSize=1000", " -> s", " <- T05thread:p01.01;", " -> ^C"} {
		found := false
		for _, l := range lines {
			if strings.Contains(l, want) {
				found = true
			}
		}
		if !found {
			t.Errorf("wire log lacks %q:\n%s", want, log.String())
		}
	}
	if _, err := time.Parse("15:04:05.000000", lines[0][:15]); err != nil {
		t.Errorf("log line %q does not start with a timestamp: %v", lines[0], err)
	}
}

// TestFaults injects each fault the fake stub knows into a 'g' request and
// checks the outcome.
func TestFaults(t *testing.T) {
	type outcome func(t *testing.T, err error, c *gdbremote.Conn, s *gdbstubtest.Stub)
	ok := func(t *testing.T, err error, _ *gdbremote.Conn, _ *gdbstubtest.Stub) {
		if err != nil {
			t.Errorf("want success, got %v", err)
		}
	}
	isTimeout := func(t *testing.T, err error, _ *gdbremote.Conn, _ *gdbstubtest.Stub) {
		if !errors.Is(err, gdbremote.ErrTimeout) || !errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(err.Error(), `"g"`) {
			t.Errorf("want ErrTimeout naming \"g\", got %v", err)
		}
	}
	malformed := func(reason string) outcome {
		return func(t *testing.T, err error, _ *gdbremote.Conn, _ *gdbstubtest.Stub) {
			var me *gdbremote.MalformedError
			if !errors.As(err, &me) || me.Request != "g" || !strings.Contains(me.Reason, reason) {
				t.Errorf("want *MalformedError for \"g\" saying %q, got %v", reason, err)
			}
		}
	}
	tests := []struct {
		name      string
		fault     gdbstubtest.Fault
		want      outcome
		recovered bool // the next request succeeds
	}{
		{"bad checksum once", gdbstubtest.Fault{Kind: gdbstubtest.BadChecksum}, ok, true},
		{"bad checksum always", gdbstubtest.Fault{Kind: gdbstubtest.BadChecksumAlways}, malformed("bad checksum"), true},
		{"split writes", gdbstubtest.Fault{Kind: gdbstubtest.SplitWrites}, ok, true},
		{"merged writes", gdbstubtest.Fault{Kind: gdbstubtest.MergedWrites}, func(t *testing.T, err error, c *gdbremote.Conn, _ *gdbstubtest.Stub) {
			if err != nil {
				t.Fatal(err)
			}
			if con := c.Console(); !slices.Equal(con, []string{gdbstubtest.MergedText}) {
				t.Errorf("Console() = %q, want the merged console line", con)
			}
		}, true},
		{"garbage", gdbstubtest.Fault{Kind: gdbstubtest.Garbage}, ok, true},
		{"nack once", gdbstubtest.Fault{Kind: gdbstubtest.Nack}, func(t *testing.T, err error, _ *gdbremote.Conn, s *gdbstubtest.Stub) {
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, r := range s.Requests() {
				if r == "g" {
					n++
				}
			}
			if n != 2 {
				t.Errorf("stub got 'g' %d times, want 2 (sent, nacked, resent)", n)
			}
		}, true},
		{"nack always", gdbstubtest.Fault{Kind: gdbstubtest.Nack, Count: 4}, malformed("rejected the request 4 times"), true},
		{"stall", gdbstubtest.Fault{Kind: gdbstubtest.Stall}, isTimeout, false},
		{"hang", gdbstubtest.Fault{Kind: gdbstubtest.Hang}, isTimeout, false},
		{"error reply", gdbstubtest.Fault{Kind: gdbstubtest.Reply, Reply: "E0e"}, func(t *testing.T, err error, _ *gdbremote.Conn, _ *gdbstubtest.Stub) {
			var se *gdbremote.StubError
			if !errors.As(err, &se) || se.Code != 0x0e || se.Request != "g" {
				t.Errorf("want *StubError E0e for \"g\", got %v", err)
			}
			if want := `stub error E0e for "g"`; !strings.Contains(err.Error(), want) {
				t.Errorf("message %q lacks %q", err, want)
			}
		}, true},
		{"empty reply", gdbstubtest.Fault{Kind: gdbstubtest.Reply, Reply: ""}, func(t *testing.T, err error, _ *gdbremote.Conn, _ *gdbstubtest.Stub) {
			var ue *gdbremote.UnsupportedError
			if !errors.As(err, &ue) || ue.Request != "g" {
				t.Errorf("want *UnsupportedError for \"g\", got %v", err)
			}
		}, true},
		{"not hex", gdbstubtest.Fault{Kind: gdbstubtest.Reply, Reply: "zz"}, malformed("not hex"), true},
		{"dropped", gdbstubtest.Fault{Kind: gdbstubtest.Drop}, func(t *testing.T, err error, c *gdbremote.Conn, _ *gdbstubtest.Stub) {
			if !errors.Is(err, gdbremote.ErrClosed) || !strings.Contains(err.Error(), "by the stub") {
				t.Errorf("want ErrClosed by the stub, got %v", err)
			}
			if _, err := c.Step(context.Background()); !errors.Is(err, gdbremote.ErrClosed) {
				t.Errorf("request after the drop: %v, want ErrClosed", err)
			}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c := dialStub(t, gdbremote.WithTimeout(150*time.Millisecond))
			tt.fault.Match = "g"
			s.Inject(tt.fault)
			v, err := c.ReadRegisters(context.Background())
			tt.want(t, err, c, s)
			if err == nil {
				if rip, _ := v.Uint64("rip"); rip != 0xfff0 {
					t.Errorf("rip = %#x after the fault, want 0xfff0", rip)
				}
			}
			if tt.recovered {
				if _, err := c.ReadRegisters(context.Background()); err != nil {
					t.Errorf("next request: %v", err)
				}
			}
		})
	}
}

func TestTimeoutThenRecover(t *testing.T) {
	// A reply that comes too late is not taken for the next one.
	s, c := dialStub(t, gdbremote.WithTimeout(100*time.Millisecond))
	s.Inject(gdbstubtest.Fault{Kind: gdbstubtest.Stall, Match: "qC"})
	if _, err := c.Exchange(context.Background(), "qC"); !errors.Is(err, gdbremote.ErrTimeout) {
		t.Fatalf("stalled request: %v", err)
	}
	// The stalled stub answers an interrupt with a stop reply that nobody
	// asked for; the client must discard it.
	c.Interrupt()
	time.Sleep(20 * time.Millisecond)
	got, err := c.Exchange(context.Background(), "qAttached")
	if err != nil || got != "1" {
		t.Errorf("Exchange(qAttached) = %q, %v; want \"1\"", got, err)
	}
}

func TestCloseUnblocks(t *testing.T) {
	s, c := dialStub(t, gdbremote.WithTimeout(time.Minute))
	s.Inject(gdbstubtest.Fault{Kind: gdbstubtest.Hang, Match: "g"})
	errc := make(chan error, 1)
	go func() {
		_, err := c.ReadRegisters(context.Background())
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	c.Close()
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("Close took %v", d)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, gdbremote.ErrClosed) || !strings.Contains(err.Error(), "by Close") {
			t.Errorf("blocked request: %v, want ErrClosed by Close", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Close did not unblock the stalled read")
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := c.Step(context.Background()); !errors.Is(err, gdbremote.ErrClosed) {
		t.Errorf("Step after Close: %v", err)
	}
	if err := c.Interrupt(); !errors.Is(err, gdbremote.ErrClosed) {
		t.Errorf("Interrupt after Close: %v", err)
	}
}

func TestCancelledContext(t *testing.T) {
	s, c := dialStub(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n := len(s.Requests())
	if _, err := c.ReadRegisters(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("ReadRegisters with a cancelled context: %v", err)
	}
	if len(s.Requests()) != n {
		t.Error("a request was sent with a cancelled context")
	}
	// A request cancelled while waiting.
	s.Inject(gdbstubtest.Fault{Kind: gdbstubtest.Hang, Match: "g"})
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := c.ReadRegisters(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("ReadRegisters cancelled while waiting: %v", err)
	}
}

func TestErrorMessages(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{&gdbremote.StubError{Code: 0x14, Request: "mffffffffffff0000,8"}, `stub error E14 for "mffffffffffff0000,8": address not mapped`},
		{&gdbremote.StubError{Code: 0x16, Request: "Z1,0,1"}, `stub error E16 for "Z1,0,1"`},
		{&gdbremote.UnsupportedError{Request: "vCont?"}, `stub does not support "vCont?" (empty reply)`},
		{&gdbremote.MalformedError{Request: "g", Reply: "zz", Reason: "not hex"}, `malformed reply to "g": not hex (reply "zz")`},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestDialSkipsEarlyStopReply(t *testing.T) {
	// QEMU stops a running guest when a debugger connects and may say so
	// before it answers qSupported.
	s := gdbstubtest.New(t)
	s.Inject(gdbstubtest.Fault{Kind: gdbstubtest.Unsolicited, Match: "qSupported", Reply: "T02thread:p01.01;"})
	c, err := gdbremote.Dial(context.Background(), s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if c.PacketSize() != 4096 || c.InitialStop().Signal != 5 {
		t.Errorf("after an early stop reply: PacketSize %d, initial stop %v", c.PacketSize(), c.InitialStop())
	}
	c.Close() // a stub serves one client at a time: Dial refuses a busy one

	// A stop reply and then nothing.
	s.Inject(gdbstubtest.Fault{Kind: gdbstubtest.Reply, Match: "qSupported", Reply: "T02thread:p01.01;"})
	_, err = gdbremote.Dial(context.Background(), s.Addr(), gdbremote.WithTimeout(100*time.Millisecond))
	if !errors.Is(err, gdbremote.ErrTimeout) {
		t.Errorf("Dial when qSupported gets only a stop reply: %v, want ErrTimeout", err)
	}
}

// BenchmarkStepReadRegistersFake measures the client's own cost per step
// and register read, against the in-process fake stub.
func BenchmarkStepReadRegistersFake(b *testing.B) {
	s := gdbstubtest.New(b)
	c, err := gdbremote.Dial(context.Background(), s.Addr())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Step(ctx); err != nil {
			b.Fatal(err)
		}
		if _, err := c.ReadRegisters(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func TestContinueVContRunsOneThread(t *testing.T) {
	s, c := dialStub(t)
	ctx := context.Background()
	if err := c.SetBreakpoint(ctx, gdbremote.Hardware, 0x401000, 1); err != nil {
		t.Fatal(err)
	}
	sr, err := c.ContinueVCont(ctx, gdbstubtest.Thread)
	if err != nil || sr.Signal != 5 || sr.Thread != gdbstubtest.Thread {
		t.Fatalf("ContinueVCont: %v, %v", sr, err)
	}
	if got := c.StoppedThread(); got != gdbstubtest.Thread {
		t.Errorf("StoppedThread after the stop = %q, want %q", got, gdbstubtest.Thread)
	}
	if reqs := s.Requests(); !slices.Contains(reqs, "vCont;c:"+gdbstubtest.Thread) {
		t.Errorf("requests %q lack vCont;c:thread", reqs)
	}
}

func TestContinueVContUnsupported(t *testing.T) {
	s, c := dialStub(t)
	// A stub that steps with vCont but does not continue with it.
	s.Inject(gdbstubtest.Fault{Kind: gdbstubtest.Reply, Match: "vCont?", Reply: "vCont;s;S"})
	_, err := c.ContinueVCont(context.Background(), gdbstubtest.Thread)
	var ue *gdbremote.UnsupportedError
	if !errors.As(err, &ue) || ue.Request != "vCont;c" {
		t.Errorf("ContinueVCont without vCont;c: %v, want *UnsupportedError for vCont;c", err)
	}
}

func TestThreadCPU(t *testing.T) {
	tests := []struct {
		id   string
		cpu  int
		fail bool
	}{
		{"p01.01", 0, false},
		{"p01.02", 1, false},
		{"p1.10", 15, false},
		{"3", 2, false},
		{"p01", 0, true},
		{"p01.00", 0, true},
		{"0", 0, true},
		{"-1", 0, true},
		{"p01.zz", 0, true},
		{"", 0, true},
	}
	for _, tt := range tests {
		cpu, err := gdbremote.ThreadCPU(tt.id)
		if (err != nil) != tt.fail || (!tt.fail && cpu != tt.cpu) {
			t.Errorf("ThreadCPU(%q) = %d, %v; want %d, fail %v", tt.id, cpu, err, tt.cpu, tt.fail)
		}
	}
}

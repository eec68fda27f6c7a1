package gdbremote_test

import (
	"context"
	"errors"
	"github.com/sctrace/sctrace/internal/testenv"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/qemu"
)

// startQEMU starts QEMU stopped at the reset vector, with no kernel and TCG,
// and connects to its gdbstub. Without QEMU the test fails, except in -short
// mode, where it is skipped.
func startQEMU(tb testing.TB, opts ...gdbremote.Option) (*qemu.Instance, *gdbremote.Conn) {
	tb.Helper()
	testenv.NeedQEMU(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	inst, err := qemu.Start(ctx, qemu.Config{Stopped: true, GDB: true, Accel: "tcg"})
	if err != nil {
		tb.Fatalf("start QEMU: %v", err)
	}
	tb.Cleanup(func() { inst.Stop() })
	c, err := gdbremote.Dial(ctx, inst.GDBAddr, opts...)
	if err != nil {
		tb.Fatalf("dial QEMU: %v (stderr: %s)", err, inst.StderrTail())
	}
	tb.Cleanup(func() { c.Close() })
	return inst, c
}

func TestQEMU(t *testing.T) {
	_, c := startQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	t.Run("Handshake", func(t *testing.T) {
		f := c.Features()
		if f["PacketSize"] != "1000" || f["qXfer:features:read"] != "+" {
			t.Errorf("features = %v, want PacketSize=1000 and qXfer:features:read+", f)
		}
		if c.PacketSize() != 0x1000 {
			t.Errorf("PacketSize() = %d, want 4096", c.PacketSize())
		}
		if sr := c.InitialStop(); sr.Kind != 'T' || sr.Signal != 5 || sr.Thread == "" {
			t.Errorf("initial stop = %+v, want T05 with a thread", sr)
		}
	})

	t.Run("Layout", func(t *testing.T) {
		want := map[string]int{"rip": 64, "eflags": 32, "cs": 32, "fs_base": 64, "gs_base": 64, "k_gs_base": 64,
			"cr0": 64, "cr3": 64, "cr4": 64, "efer": 64, "st0": 80, "xmm15": 128, "mxcsr": 32}
		got := map[string]gdbremote.Register{}
		size := 0
		for _, r := range c.Layout() {
			got[r.Name] = r
			size = max(size, r.Offset+r.Bitsize/8)
		}
		for name, bits := range want {
			if r, ok := got[name]; !ok || r.Bitsize != bits {
				t.Errorf("register %s = %+v, want bitsize %d", name, r, bits)
			}
		}
		if size != 608 {
			t.Errorf("layout covers %d bytes, want 608 (1216 hex digits)", size)
		}
	})

	t.Run("ReadRegisters", func(t *testing.T) {
		v, err := c.ReadRegisters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for name, want := range map[string]uint64{"rip": 0xfff0, "cs": 0xf000, "eflags": 0x2, "cr0": 0x60000010} {
			if got, ok := v.Uint64(name); !ok || got != want {
				t.Errorf("%s = %#x, %v; want %#x", name, got, ok, want)
			}
		}
		if n := len(v.Raw()); n != 608 {
			t.Errorf("'g' reply decoded to %d bytes, want 608", n)
		}
	})

	t.Run("ReadRegister", func(t *testing.T) {
		b, err := c.ReadRegister(ctx, "rip")
		if err != nil {
			t.Fatal(err)
		}
		if want := []byte{0xf0, 0xff, 0, 0, 0, 0, 0, 0}; string(b) != string(want) {
			t.Errorf("p rip = % x, want % x", b, want)
		}
	})

	t.Run("WriteRegister", func(t *testing.T) {
		val := []byte{0x78, 0x56, 0x34, 0x12, 0, 0, 0, 0}
		if err := c.WriteRegister(ctx, "rax", val); err != nil {
			t.Fatal(err)
		}
		v, err := c.ReadRegisters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := v.Uint64("rax"); got != 0x12345678 {
			t.Errorf("rax after P = %#x, want 0x12345678", got)
		}
	})

	t.Run("ReadMemory", func(t *testing.T) {
		b, err := c.ReadMemory(ctx, 0xffff0, 16)
		if err != nil {
			t.Fatal(err)
		}
		if b[0] != 0xea {
			t.Errorf("byte at 0xffff0 = %#x, want 0xea (far jmp)", b[0])
		}
		big, err := c.ReadMemory(ctx, 0xf0000, 0x10000)
		if err != nil {
			t.Fatal(err)
		}
		if len(big) != 0x10000 || big[0xfff0] != 0xea {
			t.Errorf("64 KiB read: len %d, byte at 0xfff0 %#x", len(big), big[0xfff0])
		}
		_, err = c.ReadMemory(ctx, 0xffffffffffff0000, 8)
		var se *gdbremote.StubError
		if !errors.As(err, &se) || !se.NotMapped() {
			t.Errorf("read of an unmapped address: %v, want a StubError E14", err)
		}
	})

	t.Run("WriteMemory", func(t *testing.T) {
		data := []byte("#$}*written by gdbremote")
		if err := c.WriteMemory(ctx, 0x7000, data); err != nil {
			t.Fatal(err)
		}
		b, err := c.ReadMemory(ctx, 0x7000, len(data))
		if err != nil || string(b) != string(data) {
			t.Errorf("read back %q, %v; want %q", b, err, data)
		}
	})

	t.Run("StepFlags", func(t *testing.T) {
		bits, err := c.StepBits(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if bits["ENABLE"] != gdbremote.SStepEnable || bits["NOIRQ"] != gdbremote.SStepNoIRQ || bits["NOTIMER"] != gdbremote.SStepNoTimer {
			t.Errorf("sstepbits = %v", bits)
		}
		flags, err := c.StepFlags(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if flags != gdbremote.SStepEnable|gdbremote.SStepNoIRQ|gdbremote.SStepNoTimer {
			t.Errorf("sstep = %#x, want 0x7", flags)
		}
		if err := c.SetStepFlags(ctx, flags); err != nil {
			t.Error(err)
		}
	})

	t.Run("Step", func(t *testing.T) {
		sr, err := c.Step(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if sr.Kind != 'T' || sr.Signal != 5 {
			t.Errorf("stop reply %v, want T05", sr)
		}
		v, err := c.ReadRegisters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// The far jump at the reset vector goes to f000:e05b.
		if rip, _ := v.Uint64("rip"); rip != 0xe05b {
			t.Errorf("rip after one step = %#x, want 0xe05b", rip)
		}
		sr, err = c.StepVCont(ctx, sr.Thread)
		if err != nil || sr.Signal != 5 {
			t.Fatalf("vCont step: %v, %v", sr, err)
		}
		v, err = c.ReadRegisters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rip, _ := v.Uint64("rip"); rip == 0xe05b {
			t.Error("rip did not move with vCont;s")
		}
	})

	t.Run("HardwareBreakpoint", func(t *testing.T) {
		v, err := c.ReadRegisters(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rip, _ := v.Uint64("rip")
		// Learn the address of the next instruction by stepping over it,
		// go back, set a breakpoint there and continue.
		if _, err := c.Step(ctx); err != nil {
			t.Fatal(err)
		}
		v2, _ := c.ReadRegisters(ctx)
		next, _ := v2.Uint64("rip")
		if err := c.WriteRegister(ctx, "rip", le64(rip)); err != nil {
			t.Fatal(err)
		}
		if err := c.SetBreakpoint(ctx, gdbremote.Hardware, 0xf0000+next, 1); err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		sr, err := c.Continue(cctx)
		cancel()
		if err != nil {
			t.Fatalf("continue: %v (stop %v)", err, sr)
		}
		v3, _ := c.ReadRegisters(ctx)
		if got, _ := v3.Uint64("rip"); got != next || sr.Signal != 5 {
			t.Errorf("stopped at rip %#x with %v, want %#x and T05", got, sr, next)
		}
		if err := c.ClearBreakpoint(ctx, gdbremote.Hardware, 0xf0000+next, 1); err != nil {
			t.Error(err)
		}
	})

	t.Run("ContinueCancelled", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		sr, err := c.Continue(cctx)
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, gdbremote.ErrTimeout) {
			t.Errorf("continue with a short deadline: %v, want a timeout", err)
		}
		if sr.Kind != 'T' || sr.Signal != 2 {
			t.Errorf("stop reply after the interrupt: %v, want T02", sr)
		}
		if _, err := c.ReadRegisters(ctx); err != nil {
			t.Errorf("read registers after the interrupt: %v", err)
		}
	})

	t.Run("Monitor", func(t *testing.T) {
		out, err := c.Monitor(ctx, "info registers")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"EFER=", "CR0=", "CS =f000"} {
			if !strings.Contains(out, want) {
				t.Errorf("info registers output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("Threads", func(t *testing.T) {
		ids, err := c.Threads(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) != 1 {
			t.Fatalf("threads = %v, want one vCPU", ids)
		}
		if err := c.SelectThreadID(ctx, 'g', ids[0]); err != nil {
			t.Error(err)
		}
	})

	t.Run("PhysicalMemoryMode", func(t *testing.T) {
		if err := c.SetPhysicalMemoryMode(ctx, true); err != nil {
			t.Fatal(err)
		}
		b, err := c.ReadMemory(ctx, 0xffff0, 1)
		if err != nil || b[0] != 0xea {
			t.Errorf("physical read at 0xffff0: % x, %v", b, err)
		}
		if err := c.SetPhysicalMemoryMode(ctx, false); err != nil {
			t.Error(err)
		}
	})
}

func TestQEMUKill(t *testing.T) {
	inst, c := startQEMU(t)
	if err := c.Kill(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-inst.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("QEMU still running 5s after 'k'")
	}
	if _, err := c.ReadRegisters(context.Background()); !errors.Is(err, gdbremote.ErrClosed) {
		t.Errorf("request after Kill: %v, want ErrClosed", err)
	}
}

func TestQEMUDetach(t *testing.T) {
	inst, c := startQEMU(t)
	if err := c.Detach(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-inst.Done():
		t.Fatal("QEMU exited after 'D'; it should keep running")
	case <-time.After(200 * time.Millisecond):
	}
	// The stub takes a new debugger after a detach.
	c2, err := gdbremote.Dial(context.Background(), inst.GDBAddr)
	if err != nil {
		t.Fatalf("dial again after detach: %v", err)
	}
	c2.Close()
}

func le64(v uint64) []byte {
	b := make([]byte, 8)
	for i := range b {
		b[i] = byte(v >> (8 * i))
	}
	return b
}

// BenchmarkStepReadRegisters measures the tracer's inner loop against QEMU:
// one 's' and one 'g' per iteration.
func BenchmarkStepReadRegisters(b *testing.B) {
	_, c := startQEMU(b)
	ctx := context.Background()
	steps := 0
	for b.Loop() {
		if _, err := c.Step(ctx); err != nil {
			b.Fatal(err)
		}
		if _, err := c.ReadRegisters(ctx); err != nil {
			b.Fatal(err)
		}
		steps++
	}
	b.ReportMetric(float64(steps)/b.Elapsed().Seconds(), "steps/s")
}

// BenchmarkStep measures 's' alone against QEMU.
func BenchmarkStep(b *testing.B) {
	_, c := startQEMU(b)
	ctx := context.Background()
	steps := 0
	for b.Loop() {
		if _, err := c.Step(ctx); err != nil {
			b.Fatal(err)
		}
		steps++
	}
	b.ReportMetric(float64(steps)/b.Elapsed().Seconds(), "steps/s")
}

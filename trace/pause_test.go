package trace

import (
	"context"
	"testing"
	"time"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/internal/kerneltest"
	"github.com/sctrace/sctrace/target"
	"github.com/sctrace/sctrace/x86"
)

// TestPauseIsOneStep runs `pause; nop; nop` on the real QEMU (the teaching
// kernel, stopped wherever its system-call loop was, the code written at
// RIP and put back afterwards) and checks that the recorder makes one step
// of each instruction: the pause, which only moves RIP, then the nop after
// it. A plain single step over a pause under TCG runs the nop too; the
// test shows that first, so that it says when a QEMU release no longer
// does.
func TestPauseIsOneStep(t *testing.T) {
	inst := kerneltest.StartLoop(t, t.TempDir(), 60*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := gdbremote.Dial(ctx, inst.GDBAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tgt := target.New(conn)
	st, err := tgt.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rip := st.Val(x86.RIP)
	saved, err := tgt.ReadMemory(ctx, rip, 3)
	if err != nil {
		t.Fatal(err)
	}
	code := []byte{0xf3, 0x90, 0x90} // pause; nop
	if err := conn.WriteMemory(ctx, rip, code); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := conn.WriteMemory(ctx, rip, saved); err != nil {
			t.Errorf("put the code at %#x back: %v", rip, err)
		}
		if err := tgt.WriteRegister(ctx, x86.RIP, rip); err != nil {
			t.Errorf("put rip back: %v", err)
		}
	}()

	after, err := tgt.Step(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a plain single step over pause at %#x stops at %#x (the next instruction is at %#x)", rip, after.Val(x86.RIP), rip+2)
	if err := tgt.WriteRegister(ctx, x86.RIP, rip); err != nil {
		t.Fatal(err)
	}

	r := NewRecorder(tgt, nil, nil, Header{})
	if err := r.Init(ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := r.Step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	tr := r.Trace()
	want := []struct {
		op  x86asm.Op
		rip uint64
	}{{x86asm.PAUSE, rip}, {x86asm.NOP, rip + 2}}
	for i, w := range want {
		s := tr.Step(i)
		if s.Op != w.op || uint64(s.RIP) != w.rip {
			t.Errorf("step %d: %v at %#x, want %v at %#x", i, s.Op, uint64(s.RIP), w.op, w.rip)
		}
		if len(s.Changed) != 0 {
			t.Errorf("step %d (%v) changed %v; only RIP may move", i, s.Op, s.Changed)
		}
		for _, e := range s.Effects {
			if e.Verdict == annotate.Finding || e.Event == annotate.EventException {
				t.Errorf("step %d (%v): %s", i, s.Op, e.Text)
			}
		}
	}
	if got := r.Current().Val(x86.RIP); got != rip+3 {
		t.Errorf("after the two steps rip = %#x, want %#x", got, rip+3)
	}
}

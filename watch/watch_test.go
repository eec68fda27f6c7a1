package watch

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/expr"
	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/target"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// replayTrace is a two-step recording: step 0 reads a per-CPU word
// (recorded in its Mem), step 1 has the stack words at RSP recorded and a
// register the stub did not give; a write by hand precedes step 1.
func replayTrace() *trace.Trace {
	const gs, top = 0xffff888007a00000, 0xffffc90000010000
	st0 := &x86.State{}
	st0.Set(x86.RSP, 0x7ffc0000)
	st0.Set(x86.GSBase, gs)
	st0.Set(x86.RAX, 0x27)
	st1 := &x86.State{}
	st1.Set(x86.RSP, top-21*8)
	st1.Set(x86.GSBase, gs)
	t := &trace.Trace{Header: trace.Header{Regions: []annotate.Region{
		{Name: "task stack", Kind: annotate.RegionKernelStack, Start: top - 0x4000, End: top, FrameTop: top},
	}}}
	t.Append(trace.Step{Regs: st0, Mem: []annotate.Memory{
		{Addr: gs + 0x6014, Data: []byte{0x14, 0x60, 0, 0, 0, 0, 0, 0}},
		{Addr: 0x5000, Data: []byte{1, 2, 3, 4, 5, 6, 7, 8}, After: true},
	}})
	// The stack words at RSP: the whole pt_regs frame, slot k holding k.
	var stack []trace.Hex
	for k := range 21 {
		stack = append(stack, trace.Hex(k))
	}
	t.Append(trace.Step{Regs: st1, Stack: stack})
	t.UserWrites = []trace.UserWrite{{Step: 1, What: "*(u64*)0x6000", Addr: 0x6000, Size: 8, New: 0x99, OldKnown: true}}
	return t
}

func TestWatchesInReplay(t *testing.T) {
	tr := replayTrace()
	var l List
	for _, text := range []string{"$rsp", "*(u64*)($gs_base+0x6014)", "pt_regs->ip", "$rax", "*(u64*)0x5000", "*(u64*)0x6000", "nosuch"} {
		if _, err := l.Add(text); err != nil {
			t.Fatalf("Add(%q): %v", text, err)
		}
	}
	tab := symbols.New("test", []symbols.Symbol{{Name: "nosuch_thing", Addr: 1}})
	// pt_regs->ip is slot 16 from the bottom of the frame (r15 is slot
	// 0): struct pt_regs, arch/x86/include/asm/ptrace.h.
	const ptRegsIPSlot = 16
	for _, tc := range []struct {
		step int
		want []string
	}{
		{0, []string{"$rsp = 0x7ffc0000", "*(u64*)($gs_base+0x6014) = 0x6014", "pt_regs->ip: unknown in replay", "$rax = 0x27",
			"*(u64*)0x5000: unknown in replay", "*(u64*)0x6000: unknown in replay", `nosuch: no symbol "nosuch"; did you mean nosuch_thing?`}},
		{1, []string{"$rsp = 0xffffc9000000ff58", "*(u64*)($gs_base+0x6014): unknown in replay", fmt.Sprintf("pt_regs->ip = %#x", ptRegsIPSlot), "$rax: unknown in replay",
			"*(u64*)0x5000 = 0x807060504030201", "*(u64*)0x6000 = 0x99", `nosuch: no symbol "nosuch"; did you mean nosuch_thing?`}},
	} {
		vals := l.Eval(&expr.Replay{Trace: tr, Index: tc.step, Symbols: tab})
		for i, v := range vals {
			want := tc.want[i]
			if got := v.String(); got != want {
				t.Errorf("step %d: watch %d = %q, want %q", tc.step, i, got, want)
			}
		}
	}
}

func TestListAddRemove(t *testing.T) {
	var l List
	a, _ := l.Add("$rax")
	b, _ := l.Add("$rbx")
	if _, err := l.Add("$nope"); err == nil || !strings.Contains(err.Error(), "unknown register") {
		t.Errorf("Add($nope) = %v", err)
	}
	if err := l.Remove(a.ID); err != nil {
		t.Fatal(err)
	}
	if err := l.Remove(a.ID); err == nil {
		t.Error("removing twice succeeded")
	}
	if l.Len() != 1 || l.Watches()[0].ID != b.ID {
		t.Errorf("after Remove: %+v", l.Watches())
	}
	c, _ := l.Add("$rcx")
	if c.ID == b.ID || c.ID == a.ID {
		t.Errorf("IDs reused: %d", c.ID)
	}
}

// TestWatchesLive evaluates watches against a fake stub that plays QEMU's
// (gdbstubtest): registers from 'g', memory from 'm', and E14 for memory
// nothing maps, which a watch reports as not mapped under the CR3 in
// force.
func TestWatchesLive(t *testing.T) {
	stub := gdbstubtest.New(t)
	stub.SetRegister("rsp", 0x8000)
	stub.SetRegister("cr3", 0x1000)
	stub.Map(0x8000, []byte{0xef, 0xbe, 0xad, 0xde, 0, 0, 0, 0})
	ctx, conn := testenv.DialStub(t, stub)
	tg := target.New(conn)
	st, err := tg.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var l List
	for _, text := range []string{"$rsp", "*(u32*)$rsp", "*(u64*)0x900000", "pt_regs->ip"} {
		if _, err := l.Add(text); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"$rsp = 0x8000", "*(u32*)$rsp = 0xdeadbeef", "*(u64*)0x900000: 0x900000: not mapped under CR3 0x1000",
		"pt_regs->ip: the task's kernel stack is not known, so neither is its pt_regs frame"}
	for i, v := range l.Eval(&expr.Live{Ctx: ctx, T: tg, State: st}) {
		if got := v.String(); got != want[i] {
			t.Errorf("watch %d = %q, want %q", i, got, want[i])
		}
		if v.Unknown() {
			t.Errorf("watch %d unknown live: %v", i, v.Err)
		}
	}
}

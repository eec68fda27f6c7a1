package target

import (
	"bytes"
	"errors"
	"testing"

	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
	"github.com/sctrace/sctrace/internal/testenv"
)

// TestProbeRestoresOnFault runs the probe against the fake stub, whose step
// only adds one to RIP: to the probe every rdmsr "faulted". What matters is
// that each reading says so and that the instruction bytes, the stack below
// RSP and the registers come back exactly as they were.
func TestProbeRestoresOnFault(t *testing.T) {
	stub := gdbstubtest.New(t)
	const rip, rsp = 0xffffffff81000000, 0xffffc90000004000
	code := []byte{0x0f, 0x01, 0xf8, 0x90} // swapgs; nop
	stack := bytes.Repeat([]byte{0xa5}, 128)
	stub.Map(rip, code)
	stub.Map(rsp-128, stack)
	for name, v := range map[string]uint64{"rip": rip, "rsp": rsp, "cs": 0x10, "ss": 0x18, "rax": 1, "rcx": 2, "rdx": 3, "eflags": 0x46} {
		stub.SetRegister(name, v)
	}
	ctx, conn := testenv.DialStub(t, stub)
	tg := New(conn)
	before, err := tg.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	readings, err := tg.ProbeMSRs(ctx, []uint32{0xc0000082, 0x174})
	if err != nil {
		t.Fatal(err)
	}
	if len(readings) != 2 || readings[0].Err == nil || readings[1].Err == nil {
		t.Errorf("readings %+v: want two faults", readings)
	}
	after, err := tg.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ch := before.Changed(after); len(ch) > 0 {
		t.Errorf("registers %v changed", ch)
	}
	if got, _ := stub.Memory(rip, len(code)); !bytes.Equal(got, code) {
		t.Errorf("code % x, want % x", got, code)
	}
	if got, _ := stub.Memory(rsp-128, 128); !bytes.Equal(got, stack) {
		t.Error("the stack below RSP was not put back")
	}
}

func TestProbeRefusesUserMode(t *testing.T) {
	stub := gdbstubtest.New(t)
	stub.SetRegister("cs", 0x33)
	ctx, conn := testenv.DialStub(t, stub)
	if _, err := New(conn).ProbeMSRs(ctx, []uint32{0xc0000082}); !errors.Is(err, ErrNotKernel) {
		t.Fatalf("probe at CPL 3 = %v, want ErrNotKernel", err)
	}
	for _, r := range stub.Requests() {
		if r[0] == 'M' || r[0] == 'P' {
			t.Errorf("the probe wrote to the guest (%q) before refusing", r)
		}
	}
}

package trace

import (
	"context"
	"strings"
	"testing"

	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/target"
	"github.com/sctrace/sctrace/x86"
)

// TestBreakpointRemoval runs the guest to a hardware breakpoint through
// runTo and continueTo on the fake stub: the breakpoint is removed on the
// way out, and when the stub refuses to remove it the error says that a
// breakpoint may be left there.
func TestBreakpointRemoval(t *testing.T) {
	const addr, rsp = 0xffffffff81000040, 0xffffc90000004000
	calls := []struct {
		name string
		run  func(context.Context, *Recorder) error
	}{
		{"runTo", func(ctx context.Context, r *Recorder) error { return r.runTo(ctx, addr) }},
		{"continueTo", func(ctx context.Context, r *Recorder) error {
			_, err := r.continueTo(ctx, addr, rsp, true, "step over")
			return err
		}},
	}
	for _, c := range calls {
		for _, refuse := range []bool{false, true} {
			name := c.name
			if refuse {
				name += "/removal refused"
			}
			t.Run(name, func(t *testing.T) {
				stub := gdbstubtest.New(t)
				stub.SetRegister("rip", 0xffffffff81000000)
				stub.SetRegister("rsp", rsp)
				if refuse {
					stub.Inject(gdbstubtest.Fault{Kind: gdbstubtest.Reply, Match: "z1", Reply: "E22"})
				}
				ctx, conn := testenv.DialStub(t, stub)
				r := NewRecorder(target.New(conn), nil, nil, Header{})
				err := c.run(ctx, r)
				left := stub.Breakpoints()
				if !refuse {
					if err != nil {
						t.Fatal(err)
					}
					if len(left) != 0 {
						t.Errorf("breakpoints left: %v", left)
					}
					return
				}
				if err == nil || !strings.Contains(err.Error(), "a hardware breakpoint may be left at 0xffffffff81000040") {
					t.Errorf("err = %v, want it to say a breakpoint may be left", err)
				}
				if len(left) != 1 {
					t.Errorf("breakpoints left: %v, want the one the stub refused to remove", left)
				}
			})
		}
	}
}

// TestContinueToStack runs continueTo against scripted stops at the
// awaited address with another RSP. Awaiting an interrupt's return (the
// exact RSP), they are run past. Stepping over a call, they are run past
// while the call's return address is still on the stack below the RSP it
// was made with (a recursive use of the code), and taken once it is gone
// (a callee that returns with the stack moved, as Linux's error_entry).
func TestContinueToStack(t *testing.T) {
	const addr, rsp = 0xffffffff81000040, 0xffffc90000004000
	at := func(sp uint64) gdbstubtest.Stop {
		return gdbstubtest.Stop{Regs: map[string]uint64{"rip": addr, "rsp": sp}}
	}
	deeper, other := at(rsp-0x78), at(0xfffffe0000002f58)
	tests := []struct {
		name    string
		moved   bool
		retSlot uint64 // the word below rsp
		script  []gdbstubtest.Stop
		want    uint64
	}{
		{"exact", false, 0, []gdbstubtest.Stop{deeper, other, at(rsp)}, rsp},
		{"recursion", true, addr, []gdbstubtest.Stop{deeper, at(rsp)}, rsp},
		{"stack moved", true, 0xffffc90000003ff0, []gdbstubtest.Stop{deeper, at(rsp)}, rsp - 0x78},
		{"another stack", true, 0, []gdbstubtest.Stop{other, at(rsp)}, 0xfffffe0000002f58},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stub := gdbstubtest.New(t)
			stub.SetRegister("rip", 0xffffffff81000000)
			stub.SetRegister("rsp", rsp)
			stub.Map(rsp-8, le(tt.retSlot))
			stub.Script(tt.script...)
			ctx, conn := testenv.DialStub(t, stub)
			r := NewRecorder(target.New(conn), nil, nil, Header{})
			st, err := r.continueTo(ctx, addr, rsp, tt.moved, "step over")
			if err != nil {
				t.Fatal(err)
			}
			if got := st.Val(x86.RSP); got != tt.want {
				t.Errorf("stopped with rsp %#x, want %#x", got, tt.want)
			}
			if left := stub.Breakpoints(); len(left) != 0 {
				t.Errorf("breakpoints left: %v", left)
			}
		})
	}
}

package trace

import (
	"context"
	"strings"
	"testing"

	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/target"
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
			_, err := r.continueTo(ctx, addr, rsp, "step over")
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

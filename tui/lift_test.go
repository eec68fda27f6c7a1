package tui

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/session"
	"github.com/sctrace/sctrace/target"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// TestCallsRunPastUserBreakpoints steps over a call (o, and r's run with
// calls stepped over) while the command line has a breakpoint inside the
// callee. The call runs to its return: the user's breakpoint is out of the
// stub meanwhile and back afterwards. The fake stub stops a continue at
// the first breakpoint it holds, as QEMU would at the callee's, so a
// breakpoint left in would end the step over at the wrong place.
func TestCallsRunPastUserBreakpoints(t *testing.T) {
	const rip, rsp = 0xffffffff81000000, 0xffffc90000004000
	const callee, ret = rip + 0x100, rip + 5
	tests := []struct {
		name string
		run  func(context.Context, *Live) error
	}{
		{"o", func(ctx context.Context, d *Live) error { return d.Step(ctx, true) }},
		{"run", func(ctx context.Context, d *Live) error {
			d.S.Recorder.Over = 1
			_, err := d.Run(ctx, func(*trace.Step, *x86.State) trace.StopReason { return "done" })
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stub := gdbstubtest.New(t)
			code := make([]byte, 0x200)
			copy(code, []byte{0xe8, 0xfb, 0x00, 0x00, 0x00}) // call callee
			for i := 5; i < len(code); i++ {
				code[i] = 0x90
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			d := stubLive(ctx, t, stub, rip, rsp, code)
			rec := d.S.Recorder
			defer d.Close()
			eng := d.engine()
			eng.Out = io.Discard
			if err := eng.Run(ctx, fmt.Sprintf("break %#x", uint64(callee))); err != nil {
				t.Fatal(err)
			}
			if err := tt.run(ctx, d); err != nil {
				t.Fatal(err)
			}
			if got := rec.Current().Val(x86.RIP); got != ret {
				t.Errorf("after stepping over the call: rip %#x, want the return address %#x", got, uint64(ret))
			}
			if s := rec.Trace().Step(0); s.Over == nil {
				t.Errorf("step 0 was not stepped over: %+v", s)
			}
			if bps := stub.Breakpoints(); len(bps) != 1 || !strings.Contains(bps[0], fmt.Sprintf("%x", uint64(callee))) {
				t.Errorf("breakpoints in the stub after the run: %v, want the user's at %#x back", bps, uint64(callee))
			}
		})
	}
}

// stubLive sets the fake stub up at a kernel-mode stop at rip with code
// there and a stack around rsp, and returns a live driver over it.
func stubLive(ctx context.Context, t *testing.T, stub *gdbstubtest.Stub, rip, rsp uint64, code []byte) *Live {
	t.Helper()
	stub.Map(rip, code)
	stub.Map(rsp-4096, make([]byte, 8192))
	for name, v := range map[string]uint64{"rip": rip, "rsp": rsp, "cs": 0x10, "ss": 0x18, "eflags": 0x2} {
		stub.SetRegister(name, v)
	}
	conn, err := gdbremote.Dial(ctx, stub.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	tg := target.New(conn)
	rec := trace.NewRecorder(tg, nil, nil, trace.Header{Target: "fake stub"})
	if err := rec.Init(ctx); err != nil {
		t.Fatal(err)
	}
	return NewLive(ctx, &session.Session{Conn: conn, Target: tg, Recorder: rec}, mechanism.Syscall)
}

package tui

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
	"github.com/sctrace/sctrace/mechanism"
)

// TestLiveStatusPerMechanism opens a live view over the fake stub for
// each mechanism and checks that the first status line names what the
// view stopped before as the registry says it (mechanism.Entry): the
// system call for the ways to make one, the fault, interrupt or
// breakpoint for the rest, never "the system call" for those.
func TestLiveStatusPerMechanism(t *testing.T) {
	for _, mech := range mechanism.All {
		t.Run(string(mech), func(t *testing.T) {
			stub := gdbstubtest.New(t)
			const rip, rsp = 0xffffffff81000000, 0xffffc90000004000
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			d := stubLive(ctx, t, stub, rip, rsp, bytes.Repeat([]byte{0x90}, 16))
			d.Mechanism = mech
			m := New(Config{Driver: d})
			defer m.drv.Close()
			want := "stopped before " + mech.Entry() + ":"
			if !strings.HasPrefix(m.status, want) {
				t.Errorf("status %q, want it to start %q", m.status, want)
			}
			if mech.Event() && strings.Contains(m.status, "system call") {
				t.Errorf("status %q speaks of a system call for %s", m.status, mech)
			}
		})
	}
}

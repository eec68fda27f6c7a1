package gdbremote

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
)

// plainConn hides the socket's file descriptor, so that the Conn reads
// through the runtime's network poller, as it does where ppoll is not used.
type plainConn struct{ net.Conn }

// TestNetpollReads runs requests, a timeout and Close through the reading
// path used where the socket cannot be polled directly.
func TestNetpollReads(t *testing.T) {
	s := gdbstubtest.New(t)
	nc, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c := newConn(plainConn{nc}, s.Addr(), config{timeout: 150 * time.Millisecond})
	defer c.Close()
	if c.pr != nil {
		t.Fatal("a Conn without a file descriptor uses ppoll")
	}
	ctx := context.Background()
	if err := c.handshake(ctx); err != nil {
		t.Fatal(err)
	}
	v, err := c.ReadRegisters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rip, _ := v.Uint64("rip"); rip != 0xfff0 {
		t.Errorf("rip = %#x", rip)
	}
	s.Inject(gdbstubtest.Fault{Kind: gdbstubtest.Stall, Match: "s"})
	if sr, err := c.Step(ctx); !errors.Is(err, ErrTimeout) || !errors.Is(err, os.ErrDeadlineExceeded) || sr.Signal != 2 {
		t.Errorf("stalled step = %v, %v; want T02 and ErrTimeout", sr, err)
	}
	s.Inject(gdbstubtest.Fault{Kind: gdbstubtest.Hang, Match: "g"})
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(20*time.Millisecond, cancel)
	if _, err := c.ReadRegisters(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled read: %v", err)
	}
	time.AfterFunc(20*time.Millisecond, func() { c.Close() })
	c.cfg.timeout = time.Minute
	if _, err := c.ReadRegisters(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("read cut short by Close: %v", err)
	}
}

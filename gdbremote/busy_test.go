package gdbremote_test

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/qemu"
)

// TestSecondClient connects a second client to a QEMU stub that already has
// one, over a Unix socket and over loopback TCP: Dial must refuse at once,
// saying another debugger is attached, and queue no connection.
func TestSecondClient(t *testing.T) {
	for _, tcp := range []bool{false, true} {
		t.Run(map[bool]string{false: "unix", true: "tcp"}[tcp], func(t *testing.T) {
			inst, _ := startQEMUWith(t, qemu.Config{Stopped: true, GDB: true, GDBTCP: tcp, Accel: "tcg"})
			start := time.Now()
			c2, err := gdbremote.Dial(context.Background(), inst.GDBAddr, gdbremote.WithTimeout(2*time.Second))
			if err == nil {
				c2.Close()
				t.Fatal("a second Dial succeeded")
			}
			if !errors.Is(err, gdbremote.ErrBusy) || !strings.Contains(err.Error(), "another debugger is attached") {
				t.Errorf("second Dial: %v, want ErrBusy", err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("second Dial took %v to fail", d)
			}
		})
	}
}

// TestRedialAfterDetach: a debugger that has just detached leaves QEMU's
// end of its connection open until QEMU's main loop next looks; a new Dial
// right after must wait for that, not call the stub busy.
func TestRedialAfterDetach(t *testing.T) {
	for _, tcp := range []bool{false, true} {
		t.Run(map[bool]string{false: "unix", true: "tcp"}[tcp], func(t *testing.T) {
			inst, c := startQEMUWith(t, qemu.Config{Stopped: true, GDB: true, GDBTCP: tcp, Accel: "tcg"})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for i := range 5 {
				if err := c.Detach(ctx); err != nil {
					t.Fatalf("detach %d: %v", i, err)
				}
				c.Close()
				var err error
				c, err = gdbremote.Dial(ctx, inst.GDBAddr)
				if err != nil {
					t.Fatalf("Dial %d right after the last client detached: %v", i, err)
				}
			}
			c.Close()
		})
	}
}

// startQEMUWith is startQEMU with a chosen configuration.
func startQEMUWith(tb testing.TB, cfg qemu.Config) (*qemu.Instance, *gdbremote.Conn) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	testenv.NeedQEMU(tb)
	inst, err := qemu.Start(ctx, cfg)
	if err != nil {
		tb.Fatalf("start QEMU: %v", err)
	}
	tb.Cleanup(func() { inst.Stop() })
	c, err := gdbremote.Dial(ctx, inst.GDBAddr)
	if err != nil {
		tb.Fatalf("dial QEMU: %v (%s)", err, inst.Report())
	}
	tb.Cleanup(func() { c.Close() })
	return inst, c
}

// TestSilentStubClosed dials a stub that accepts and never answers (as a
// stub busy with another client looks from a remote host): the error must
// say another debugger is probably attached, and the connection must be
// closed when Dial gives up, not left queued.
func TestSilentStubClosed(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "silent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	closed := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			closed <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(io.Discard, c) // returns at the client's close
		closed <- err
	}()
	_, err = gdbremote.Dial(context.Background(), "unix:"+sock, gdbremote.WithTimeout(300*time.Millisecond))
	if err == nil || !errors.Is(err, gdbremote.ErrTimeout) || !strings.Contains(err.Error(), "another debugger (gdb, another sctrace) is probably attached") {
		t.Fatalf("Dial of a silent stub: %v", err)
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("stub side: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the connection was left open after Dial failed")
	}
}

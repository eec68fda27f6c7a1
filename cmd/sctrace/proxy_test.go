package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
	"github.com/sctrace/sctrace/trace"
)

func TestProxyUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"proxy"}, "--to is required"},
		{[]string{"proxy", "--to", ":1", "--listen", "nonsense"}, "want unix:PATH, :PORT or HOST:PORT"},
		{[]string{"proxy", "--to", ":1", "--syntax", "nasm"}, `unknown syntax "nasm"`},
		{[]string{"proxy", "--to", ":1", "--out", filepath.Join(t.TempDir(), "none", "t.json")}, "--out"},
		{[]string{"proxy", "--to", ":1", "--symbols", filepath.Join(t.TempDir(), "vmlinux")}, "no such file"},
		{[]string{"proxy", "--to", ":1", "--listing", filepath.Join(t.TempDir(), "none", "l.txt")}, "--listing"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, err := run(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("sctrace %v: err = %v, want %q", tt.args, err, tt.want)
			}
		})
	}
}

// TestProxySaves runs `sctrace proxy` against the fake stub (playing
// QEMU 7.2's), has a client step three times through it, and stops the
// proxy as SIGTERM does (the command's context ends): the trace is saved
// with the three steps, first while the session runs and again at its
// end, and the listing file lists them.
func TestProxySaves(t *testing.T) {
	stub := gdbstubtest.New(t)
	stub.Map(0x400000, bytes.Repeat([]byte{0x90}, 0x100))
	for name, v := range map[string]uint64{"rip": 0x400000, "cs": 0x33, "ss": 0x2b, "rsp": 0x7fff00, "cr0": 0x80050033, "efer": 0xd01} {
		stub.SetRegister(name, v)
	}
	dir := t.TempDir()
	sock, out, listing := filepath.Join(dir, "g.sock"), filepath.Join(dir, "t.json"), filepath.Join(dir, "l.txt")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pctx, stop := context.WithCancel(ctx)
	root := newRootCmd()
	var stderr bytes.Buffer
	root.SetOut(&bytes.Buffer{})
	root.SetErr(&stderr)
	root.SetArgs([]string{"proxy", "--to", stub.Addr(), "--listen", "unix:" + sock, "--out", out, "--listing", listing})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(pctx) }()
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i == 100 {
			t.Fatal("the proxy does not listen")
		}
		time.Sleep(50 * time.Millisecond)
	}
	c, err := gdbremote.Dial(ctx, "unix:"+sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 3 {
		if _, err := c.Step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// While gdb is still connected, --out already holds the steps made, as
	// sctrace view --follow reads it.
	for i := 0; ; i++ {
		if tr, err := trace.ReadFile(out); err == nil && tr.Len() == 3 {
			break
		} else if i == 100 {
			t.Fatalf("while the session runs, %s has not the 3 steps made: %v", out, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("proxy: %v\n%s", err, stderr.String())
		}
	case <-ctx.Done():
		t.Fatal("the proxy did not end")
	}
	tr, err := trace.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Len() != 3 || uint64(tr.Step(2).RIP) != 0x400002 {
		t.Fatalf("saved trace has %d steps, want the 3 made", tr.Len())
	}
	b, err := os.ReadFile(listing)
	if err != nil || strings.Count(string(b), " nop") != 3 {
		t.Errorf("listing (%v):\n%s", err, b)
	}
	if !strings.Contains(stderr.String(), "3 steps saved to "+out) {
		t.Errorf("stderr:\n%s", stderr.String())
	}
	// The saved trace replays with no QEMU and no proxy.
	text, err := run(t, "view", out, "--format", "text")
	if err != nil || strings.Count(text, " nop\n") != 3 || !strings.Contains(text, "stepped by gdb through sctrace proxy") {
		t.Errorf("view of the saved trace (%v):\n%s", err, text)
	}
}

package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestStatusLine checks the status line's writes: nothing off a terminal;
// on one, each Show rewrites the line, Update at most every statusEvery,
// and Clear erases it once.
func TestStatusLine(t *testing.T) {
	var off bytes.Buffer
	l := newStatusLine(&off, false)
	l.Show("booting")
	l.Update("recording: 1 steps")
	l.Clear()
	if off.Len() != 0 {
		t.Errorf("off a terminal the status line wrote %q", off.String())
	}

	const erase = "\r\x1b[K"
	var on bytes.Buffer
	l = newStatusLine(&on, true)
	now := time.Unix(0, 0)
	l.now = func() time.Time { return now }
	steps := []struct {
		do   func()
		want string // what the step adds
	}{
		{func() { l.Clear() }, ""},
		{func() { l.Show("booting") }, erase + "sctrace: booting"},
		{func() { l.Update("recording: 1 steps") }, ""},
		{func() { now = now.Add(statusEvery); l.Update("recording: 2 steps") }, erase + "sctrace: recording: 2 steps"},
		{func() { l.Show("waiting") }, erase + "sctrace: waiting"},
		{func() { l.Clear() }, erase},
		{func() { l.Clear() }, ""},
		{func() { l.Update("recording: 3 steps") }, erase + "sctrace: recording: 3 steps"},
	}
	for i, s := range steps {
		before := on.Len()
		s.do()
		if got := on.String()[before:]; got != s.want {
			t.Errorf("step %d wrote %q, want %q", i, got, s.want)
		}
	}
}

// TestStatusLineTerminal runs `sctrace run --trace` twice on the teaching
// kernel: with standard error a pipe it must carry no status line, and
// with standard error a pseudo-terminal the status line must show the
// wait and the steps recorded and be erased before sctrace ends.
func TestStatusLineTerminal(t *testing.T) {
	e := newFaultEnv(t)
	args := []string{"run", "--trace", "--accel", "tcg", "--qemu", e.wrapper, "--format", "json", "--out", filepath.Join(e.work, "t.json")}
	cmd, _, stderr := e.command(nil, args...)
	if err := exitWithin(t, cmd, 60*time.Second); err != nil {
		t.Fatalf("run: %v\n%s", err, stderr)
	}
	if s := stderr.String(); strings.ContainsAny(s, "\r\x1b") || strings.Contains(s, "recording:") {
		t.Errorf("standard error, a pipe, has a status line: %q", s)
	}

	master, slave := openPTY(t)
	cmd, _, _ = e.command(nil, args...)
	cmd.Stderr = slave
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(master) // ends with EIO once sctrace has exited
		got <- b
	}()
	if err := exitWithin(t, cmd, 60*time.Second); err != nil {
		t.Fatalf("run on a terminal: %v", err)
	}
	tty := string(<-got)
	for _, want := range []string{"sctrace: waiting for the guest's next syscall…", "sctrace: recording: "} {
		if !strings.Contains(tty, want) {
			t.Errorf("terminal output lacks %q: %q", want, tty)
		}
	}
	if !strings.HasSuffix(tty, "\r\x1b[K") {
		t.Errorf("status line not erased at the end: %q", tty)
	}
}

// openPTY opens a pseudo-terminal pair (the Linux /dev/ptmx interface:
// unlock, then open the slave the master names).
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return master, slave
}

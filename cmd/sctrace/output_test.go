package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
	"github.com/sctrace/sctrace/internal/outfile"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/trace"
)

// TestOutputCheckedFirst checks that every command that writes a file
// refuses a path it cannot write before it starts QEMU, connects to a
// stub or measures anything: --qemu names a script that leaves a mark if
// it is ever run.
func TestOutputCheckedFirst(t *testing.T) {
	dir := t.TempDir()
	mark := filepath.Join(dir, "qemu-ran")
	fakeQEMU := filepath.Join(dir, "qemu")
	if err := os.WriteFile(fakeQEMU, []byte("#!/bin/sh\ntouch "+mark+"\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	bad := []struct{ path, want string }{
		{"/nonexistent/dir/f.json", "/nonexistent/dir/f.json: directory /nonexistent/dir does not exist"},
		{dir, dir + ": is a directory"},
		{filepath.Join(file, "f.json"), file + " is not a directory"},
	}
	for _, b := range bad {
		for _, args := range [][]string{
			{"run", "--trace", "--qemu", fakeQEMU, "--format", "json", "--out", b.path},
			{"run", "linux", "--kernel", "/nonexistent/bzImage", "--qemu", fakeQEMU, "--trace", "--out", b.path},
			{"trace", "--attach", "127.0.0.1:1", "--out", b.path},
			{"learn", "1", "--qemu", fakeQEMU, "--export", b.path},
			{"bench", "--qemu", fakeQEMU, "--svg", b.path},
			{"diff", "--qemu", fakeQEMU, "--b-append", "pti=off", "--out", b.path},
			{"diff", "--qemu", fakeQEMU, "--b-append", "pti=off", "--b-out", b.path},
		} {
			t.Run(strings.Join(args[:2], " ")+" "+b.path, func(t *testing.T) {
				start := time.Now()
				_, err := run(t, args...)
				if err == nil || !strings.Contains(err.Error(), b.want) {
					t.Fatalf("sctrace %v: %v, want %q", args, err, b.want)
				}
				if d := time.Since(start); d > 2*time.Second {
					t.Errorf("took %v to refuse", d)
				}
				if _, err := os.Stat(mark); err == nil {
					t.Fatal("QEMU was started before the output path was checked")
				}
			})
		}
	}
}

// TestRunTraceOutFull writes a real recording to /dev/full: the write
// fails, and the trace is kept in $TMPDIR, named in the error.
func TestRunTraceOutFull(t *testing.T) {
	testenv.NeedQEMU(t)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	_, err := run(t, "run", "--trace", "--accel", "tcg", "--format", "json", "--out", "/dev/full")
	var ke *outfile.KeptError
	if !errors.As(err, &ke) || !strings.Contains(err.Error(), "write /dev/full: no space left on device; written to ") {
		t.Fatalf("run --out /dev/full: %v", err)
	}
	if filepath.Dir(ke.Kept) != tmp {
		t.Errorf("kept in %s, want $TMPDIR %s", ke.Kept, tmp)
	}
	tr, err := trace.ReadFile(ke.Kept)
	if err != nil || tr.Len() < 10 {
		t.Fatalf("the kept trace: %v", err)
	}
}

// TestViewHostile prints a trace whose every string holds an escape
// sequence: no format lets it through.
func TestViewHostile(t *testing.T) {
	for _, format := range []string{"text", "markdown", "json"} {
		out, err := run(t, "view", filepath.Join("..", "..", "trace", "testdata", "hostile.json"), "--format", format)
		if err != nil {
			t.Fatal(err)
		}
		if i := strings.IndexAny(out, "\x1b\x07\x9b"); i >= 0 {
			t.Errorf("view --format %s printed a control byte at %d", format, i)
		}
		if !strings.Contains(out, "pwned") {
			t.Errorf("view --format %s lost the escaped text", format)
		}
	}
}

// TestProbeHostileStub probes a stub whose qSupported reply and monitor
// output carry escape sequences: probe prints them escaped.
func TestProbeHostileStub(t *testing.T) {
	stub := gdbstubtest.New(t)
	stub.SetFeatures(gdbstubtest.QEMUFeatures + ";\x1b[2Jevil+;x\x9b2J=1")
	stub.SetMonitor("info registers", "RAX=0000000000000000\r\n\x1b]0;pwned\x07\x1b[2J\r\nEFER=0000000000000000\r\n")
	out, err := run(t, "probe", stub.Addr(), "--timeout", "2s")
	if err != nil {
		t.Fatal(err)
	}
	if i := strings.IndexAny(out, "\x1b\x07\x9b"); i >= 0 {
		t.Errorf("probe printed a control byte at %d:\n%q", i, out)
	}
	for _, want := range []string{`\x1b[2Jevil=+`, `x\x9b2J=1`, `\x1b]0;pwned\x07\x1b[2J`, "RAX=0000000000000000\r\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("probe output lacks %q:\n%s", want, out)
		}
	}
}

// TestViewConverts converts a JSON trace (version 1) to a trace file
// (version 2) and back with view --format: the JSON that comes back is
// the JSON that went in, and the trace file prints as the JSON did.
func TestViewConverts(t *testing.T) {
	src := filepath.Join("..", "..", "trace", "testdata", "int80.json")
	want, err := run(t, "view", src, "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	packed, err := run(t, "view", src, "--format", "trace")
	if err != nil {
		t.Fatal(err)
	}
	if len(packed) >= len(want)/5 || !strings.HasPrefix(packed, "\x1f\x8b") {
		t.Errorf("the trace file is %d bytes (gzip magic %v) for %d bytes of JSON: not compact", len(packed), strings.HasPrefix(packed, "\x1f\x8b"), len(want))
	}
	file := filepath.Join(t.TempDir(), "int80.sctrace")
	if err := os.WriteFile(file, []byte(packed), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"json", "text", "markdown"} {
		fromJSON, err := run(t, "view", src, "--format", format)
		if err != nil {
			t.Fatal(err)
		}
		fromFile, err := run(t, "view", file, "--format", format)
		if err != nil {
			t.Fatal(err)
		}
		if fromFile != fromJSON {
			t.Errorf("--format %s of the trace file differs from that of the JSON it was made from", format)
		}
	}
	// A trace file cut short is refused, saying so.
	if err := os.WriteFile(file, []byte(packed[:len(packed)-5]), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "view", file, "--format", "text"); err == nil || !strings.Contains(err.Error(), "cut short") || !strings.Contains(err.Error(), file) {
		t.Errorf("view of a cut trace file: %v", err)
	}
}

// TestViewDamagedChunk checks that printing a trace file whose chunk is
// damaged is refused with an error naming the chunk (the interactive view
// opens it and shows the chunk's steps as damaged: see package tui).
func TestViewDamagedChunk(t *testing.T) {
	_, err := run(t, "view", filepath.Join("..", "..", "trace", "testdata", "damaged-chunk0.sctrace"), "--format", "text")
	if err == nil || !strings.Contains(err.Error(), "chunk 0: gzip: invalid checksum") {
		t.Errorf("view --format text of a damaged chunk = %v, want an error naming chunk 0", err)
	}
}

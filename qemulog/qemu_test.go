package qemulog_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/qemulog"
	"github.com/sctrace/sctrace/session"
	"github.com/sctrace/sctrace/x86"
)

var update = flag.Bool("update", false, "capture the testdata logs again from the real QEMUs")

// captureRoundTrip boots the teaching kernel on qemuBin, stops at the user
// syscall of mechanism m, switches QEMU's log on, runs the guest to the
// user instruction after it, and returns the log's bytes with the state the
// stub read at the start and at the stop.
func captureRoundTrip(t *testing.T, qemuBin string, m mechanism.Mechanism, oneInsn string) (log []byte, start, end *x86.State) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := session.StartFixture(ctx, session.Options{QEMU: qemuBin, Accel: "tcg", Mechanism: m})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.ToEntry(ctx, m); err != nil {
		t.Fatal(err)
	}
	start = s.Recorder.Current()
	inst, _, err := s.Recorder.Decode(ctx, start)
	if err != nil {
		t.Fatal(err)
	}
	ret := start.Val(x86.RIP) + uint64(inst.Len)
	l, err := qemulog.Enable(ctx, s.Conn)
	if err != nil {
		t.Fatal(err)
	}
	if l.OneInsn != oneInsn {
		t.Errorf("one instruction per block through %q, want %q", l.OneInsn, oneInsn)
	}
	defer func() {
		if err := l.Disable(ctx); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(l.Path); !os.IsNotExist(err) {
			t.Errorf("log file %s still there after Disable (%v)", l.Path, err)
		}
	}()
	if err := s.Conn.SetBreakpoint(ctx, gdbremote.Hardware, ret, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Conn.Continue(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Conn.ClearBreakpoint(ctx, gdbremote.Hardware, ret, 1); err != nil {
		t.Fatal(err)
	}
	end, err = s.Target.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Conn.Monitor(ctx, "log none"); err != nil {
		t.Fatal(err)
	}
	log, err = os.ReadFile(l.Path)
	if err != nil {
		t.Fatal(err)
	}
	return log, start, end
}

// writeCapture saves a captured log, gzipped, with the states the stub read
// at its start and at its end beside it.
func writeCapture(t *testing.T, name string, log []byte, start, end *x86.State) {
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	zw.Write(log)
	zw.Close()
	js, err := json.MarshalIndent(capture{Start: start, End: end}, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("testdata", name+".log.gz"), gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("testdata", name+".json"), append(js, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCapture records one round trip of the teaching kernel's syscall,
// int $0x80 and ud2 in QEMU's log, on QEMU 7.2 and 10.0, and checks that the
// log reads and agrees with the stub at both ends; with -update it saves
// them as testdata.
func TestCapture(t *testing.T) {
	testenv.NeedQEMU(t)
	for _, q := range []struct {
		name    string
		bin     func(testing.TB) string
		oneInsn string
	}{
		{"7.2", func(testing.TB) string { return "" }, "singlestep"},
		{"10.0", testenv.QEMU10, "one-insn-per-tb"},
	} {
		for _, m := range []mechanism.Mechanism{mechanism.Syscall, mechanism.Int80, mechanism.UD2} {
			t.Run(q.name+"/"+string(m), func(t *testing.T) {
				log, start, end := captureRoundTrip(t, q.bin(t), m, q.oneInsn)
				checkLog(t, log, string(m), capture{Start: start, End: end})
				if *update {
					writeCapture(t, string(m)+"-"+q.name, log, start, end)
				}
			})
		}
	}
}

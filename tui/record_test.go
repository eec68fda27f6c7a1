package tui

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/session"
	"github.com/sctrace/sctrace/trace"
)

var record = flag.Bool("record", false, "re-record testdata/syscall.json from the real QEMU")

// TestRecordTestdata re-records the replay trace the model tests use, with
// stack words, when run with -record. Without it, it checks the file loads.
func TestRecordTestdata(t *testing.T) {
	path := filepath.Join("testdata", "syscall.json")
	if *record {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		s, err := session.StartFixture(ctx, session.Options{Mechanism: mechanism.Syscall, StackWords: StackWords})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		tr, err := s.RoundTrip(ctx, mechanism.Syscall)
		if err != nil {
			t.Fatal(err)
		}
		tr.Header.Tool = "sctrace (test recording)"
		tr.Header.Recorded = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
		tr.Header.Target = "qemu gdbstub at 127.0.0.1:1234"
		tr.Header.Seconds, tr.Header.StepRate = 0, 0
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := tr.WriteJSON(f); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	tr := loadTrace(t)
	withStack := 0
	for _, s := range tr.All() {
		if len(s.Stack) > 0 {
			withStack++
		}
	}
	if tr.Len() < 10 || withStack < tr.Len()/2 {
		t.Fatalf("testdata trace: %d steps, %d with stack words", tr.Len(), withStack)
	}
}

func loadTrace(t *testing.T) *trace.Trace {
	t.Helper()
	tr, err := trace.ReadFile(filepath.Join("testdata", "syscall.json"))
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

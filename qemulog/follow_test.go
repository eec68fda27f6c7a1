package qemulog_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sctrace/sctrace/qemulog"
)

// TestFollow reads captured logs through a Follower while a writer appends
// them to a file in pieces cut anywhere (mid-line, mid-record), as QEMU's
// buffered writes land: the records are those of reading the whole log,
// and the end comes only after End. A log cut off mid-record is said to
// be so once End is called, not before.
func TestFollow(t *testing.T) {
	for _, tt := range []struct {
		name string
		cut  bool // the writer stops mid-record
	}{{"whole", false}, {"cut off", true}} {
		t.Run(tt.name, func(t *testing.T) {
			log, _ := loadCapture(t, "syscall-7.2")
			if tt.cut {
				log = log[:len(log)-300] // inside the last record's dump
			}
			want, _, wantErr := readAll(t, log)
			path := filepath.Join(t.TempDir(), "exec.log")
			w, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			r, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			f := qemulog.Follow(r, time.Millisecond)
			ended := make(chan struct{})
			go func() {
				for rest := log; len(rest) > 0; {
					n := min(len(rest), 977) // not a line's multiple
					w.Write(rest[:n])
					rest = rest[n:]
					time.Sleep(time.Millisecond)
				}
				close(ended)
				f.End()
			}()
			rd := qemulog.NewReader(f)
			var got []qemulog.Record
			for {
				rec, err := rd.Next()
				if err != nil {
					select {
					case <-ended:
					default:
						t.Fatalf("after %d records: %v before the writer was done", len(got), err)
					}
					if (wantErr == io.EOF) != (err == io.EOF) {
						t.Fatalf("ended with %v, want %v", err, wantErr)
					}
					var te *qemulog.TruncatedError
					if tt.cut && !errors.As(err, &te) {
						t.Fatalf("ended with %v, want a TruncatedError", err)
					}
					break
				}
				got = append(got, *rec)
			}
			if len(got) != len(want) {
				t.Fatalf("%d records, want %d", len(got), len(want))
			}
			for i := range got {
				if got[i].State != want[i].State || got[i].Line != want[i].Line {
					t.Errorf("record %d differs from the whole log's", i)
				}
			}
		})
	}
}

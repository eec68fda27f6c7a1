package qemulog_test

import (
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/qemulog"
)

// monitorCmds returns the monitor commands the stub received, in order.
func monitorCmds(stub *gdbstubtest.Stub) []string {
	var out []string
	for _, r := range stub.Requests() {
		if h, ok := strings.CutPrefix(r, "qRcmd,"); ok {
			b, _ := hex.DecodeString(h)
			out = append(out, string(b))
		}
	}
	return out
}

// TestEnableDisable switches the log on and off on a fake stub playing
// each QEMU release's monitor (gdbstubtest.Release): the commands sent,
// the private file, and what Disable leaves behind.
func TestEnableDisable(t *testing.T) {
	for _, tt := range []struct {
		release gdbstubtest.Release
		oneInsn string
	}{
		{gdbstubtest.QEMU72, "singlestep"},
		{gdbstubtest.QEMU10, "one-insn-per-tb"},
	} {
		t.Run(tt.release.String(), func(t *testing.T) {
			stub := gdbstubtest.New(t)
			stub.SetRelease(tt.release)
			ctx, conn := testenv.DialStub(t, stub)
			l, err := qemulog.Enable(ctx, conn)
			if err != nil {
				t.Fatal(err)
			}
			if l.OneInsn != tt.oneInsn {
				t.Errorf("OneInsn = %q, want %q", l.OneInsn, tt.oneInsn)
			}
			for path, mode := range map[string]os.FileMode{l.Path: 0o600, filepath.Dir(l.Path): 0o700 | os.ModeDir} {
				fi, err := os.Stat(path)
				if err != nil || fi.Mode() != mode {
					t.Errorf("%s: %v, mode %v; want %v", path, err, fi.Mode(), mode)
				}
			}
			if err := l.Disable(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Dir(l.Path)); !os.IsNotExist(err) {
				t.Errorf("the log's directory is still there after Disable (%v)", err)
			}
			want := []string{"info kvm", "logfile " + l.Path}
			if tt.release == gdbstubtest.QEMU72 {
				want = append(want, "one-insn-per-tb on", "singlestep on")
			} else {
				want = append(want, "one-insn-per-tb on")
			}
			want = append(want, "log "+qemulog.Items, "log none", tt.oneInsn+" off")
			if got := monitorCmds(stub); !slices.Equal(got, want) {
				t.Errorf("monitor commands\n%q\nwant\n%q", got, want)
			}
		})
	}
}

// TestEnableRefused covers a monitor that refuses: a guest under KVM (as
// QEMU says in `info kvm`, and QEMU 10 in its answer to one-insn-per-tb),
// and a `log` command QEMU answers with its list of items. Each gives a
// clear error, and whatever was switched on is off again, with no file
// left.
func TestEnableRefused(t *testing.T) {
	for _, tt := range []struct {
		name    string
		setup   func(*gdbstubtest.Stub)
		wantErr error
		want    string // in the error
		off     []string
	}{
		{
			name:    "kvm",
			setup:   func(s *gdbstubtest.Stub) { s.SetKVM(true) },
			wantErr: qemulog.ErrNotTCG,
		},
		{
			name: "log items refused",
			setup: func(s *gdbstubtest.Stub) {
				s.SetMonitor("log "+qemulog.Items, "Log items (comma separated):\r\nnone            remove all logs\r\n")
			},
			want: `monitor "log exec,cpu,nochain,int" refused: Log items`,
			off:  []string{"log none", "singlestep off"},
		},
		{
			name: "kvm on qemu 10 without info kvm",
			setup: func(s *gdbstubtest.Stub) {
				s.SetRelease(gdbstubtest.QEMU10)
				s.SetKVM(true)
				s.SetMonitor("info kvm", "unknown command: 'info kvm'\r\n")
			},
			wantErr: qemulog.ErrNotTCG,
			want:    "does not support setting one-insn-per-tb",
			off:     []string{"log none"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			stub := gdbstubtest.New(t)
			tt.setup(stub)
			ctx, conn := testenv.DialStub(t, stub)
			before, _ := filepath.Glob(filepath.Join(os.TempDir(), "sctrace-log-*"))
			l, err := qemulog.Enable(ctx, conn)
			if err == nil {
				l.Disable(ctx)
				t.Fatal("Enable succeeded")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			cmds := monitorCmds(stub)
			for _, c := range tt.off {
				if !slices.Contains(cmds, c) {
					t.Errorf("%q not sent after the refusal: %q", c, cmds)
				}
			}
			if tt.name == "kvm" && len(cmds) != 1 {
				t.Errorf("under KVM, commands after info kvm: %q", cmds)
			}
			after, _ := filepath.Glob(filepath.Join(os.TempDir(), "sctrace-log-*"))
			if len(after) > len(before) {
				t.Errorf("log directories left: %v (before: %v)", after, before)
			}
		})
	}
}

// TestDisableAfterStubGone removes the file even when the stub is gone,
// and says what it could not switch off.
func TestDisableAfterStubGone(t *testing.T) {
	stub := gdbstubtest.New(t)
	ctx, conn := testenv.DialStub(t, stub)
	l, err := qemulog.Enable(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	stub.Close()
	err = l.Disable(ctx)
	if err == nil || !strings.Contains(err.Error(), "log none") {
		t.Errorf("Disable with the stub gone: %v, want an error about log none", err)
	}
	if _, err := os.Stat(filepath.Dir(l.Path)); !os.IsNotExist(err) {
		t.Errorf("the log's directory is still there (%v)", err)
	}
}

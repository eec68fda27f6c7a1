package qemulog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/internal/scratch"
)

// Items are the -d log items the recorder asks for: the CPU state before
// each executed block (cpu), a line per executed block (exec), blocks not
// chained so that every block is logged (nochain), and interrupts and
// exceptions (int).
const Items = "exec,cpu,nochain,int"

// ErrNotTCG is returned by Enable when QEMU runs the guest under an
// accelerator other than TCG (KVM): only TCG translates, and so only TCG
// logs, instructions.
var ErrNotTCG = errors.New("QEMU's instruction log needs TCG; this guest runs under KVM")

// Logging is QEMU's instruction log, switched on through the gdbstub's
// monitor (qRcmd) while the guest is stopped. Disable switches it off,
// puts single-instruction blocks back off and removes the log file; it
// must be called on every path once Enable has succeeded.
type Logging struct {
	conn *gdbremote.Conn
	dir  string // private directory holding the log file
	// Path is the log file QEMU writes.
	Path string
	// OneInsn is the monitor command that made QEMU translate one
	// instruction per block: "one-insn-per-tb" (QEMU 8.1 and later) or
	// "singlestep" (earlier releases).
	OneInsn string
	oneOn   bool // OneInsn is on and must be put off
}

// Enable switches QEMU's instruction log on, into a new file in a private
// directory (mode 0700, the file 0600): it checks that QEMU runs TCG
// (`info kvm`), names the file (`logfile`), asks for one instruction per
// translation block (`one-insn-per-tb on`, or `singlestep on` where the
// monitor does not know that name) and turns on the log items (`log
// exec,cpu,nochain,int`). On any failure everything it switched on is
// switched off again.
func Enable(ctx context.Context, conn *gdbremote.Conn) (_ *Logging, err error) {
	if out, err := conn.Monitor(ctx, "info kvm"); err == nil && strings.Contains(out, "kvm support: enabled") {
		return nil, ErrNotTCG
	}
	dir, err := scratch.Dir("log-")
	if err != nil {
		return nil, err
	}
	l := &Logging{conn: conn, dir: dir, Path: filepath.Join(dir, "exec.log")}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.Disable(context.WithoutCancel(ctx)))
		}
	}()
	f, err := os.OpenFile(l.Path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return l, fmt.Errorf("instruction log: %w", err)
	}
	f.Close()
	if err := l.run(ctx, "logfile "+l.Path); err != nil {
		return l, err
	}
	l.OneInsn = "one-insn-per-tb"
	err = l.run(ctx, "one-insn-per-tb on")
	if errors.Is(err, gdbremote.ErrUnknownCommand) {
		l.OneInsn = "singlestep"
		err = l.run(ctx, "singlestep on")
	}
	if err != nil {
		return l, err
	}
	l.oneOn = true
	if err := l.run(ctx, "log "+Items); err != nil {
		return l, err
	}
	return l, nil
}

// run runs one monitor command that prints nothing when it succeeds; any
// text it prints is the monitor's complaint, returned as the error.
func (l *Logging) run(ctx context.Context, cmd string) error {
	out, err := l.conn.Monitor(ctx, cmd)
	if err != nil {
		return fmt.Errorf("instruction log: %w", err)
	}
	if out = strings.TrimSpace(out); out != "" {
		if strings.Contains(out, "does not support") {
			return fmt.Errorf("instruction log: monitor %q: %s: %w", cmd, out, ErrNotTCG)
		}
		return fmt.Errorf("instruction log: monitor %q refused: %s", cmd, out)
	}
	return nil
}

// Off switches the log off (`log none`), so that QEMU has written all of
// it, and single-instruction blocks off again; the file stays for reading
// until Disable. It does both whatever fails, and returns every failure.
func (l *Logging) Off(ctx context.Context) error {
	var errs []error
	if l.conn != nil {
		if err := l.run(ctx, "log none"); err != nil {
			errs = append(errs, err)
		}
		if l.oneOn {
			if err := l.run(ctx, l.OneInsn+" off"); err != nil {
				errs = append(errs, err)
			}
			l.oneOn = false
		}
		l.conn = nil
	}
	return errors.Join(errs...)
}

// Disable switches the log off as Off does, when that is not done yet, and
// removes the log file and its directory. It does all of it whatever
// fails, and returns every failure.
func (l *Logging) Disable(ctx context.Context) error {
	var errs []error
	if err := l.Off(ctx); err != nil {
		errs = append(errs, err)
	}
	if l.dir != "" {
		if err := os.RemoveAll(l.dir); err != nil {
			errs = append(errs, fmt.Errorf("instruction log: %w", err))
		}
		l.dir = ""
	}
	return errors.Join(errs...)
}

// Package kerneltest starts the bundled teaching kernel for tests that
// attach to a guest sctrace did not start, the way a user starts one by
// hand.
package kerneltest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sctrace/sctrace/fixtures/kernel"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/qemu"
)

// StartLoop boots the teaching kernel from a copy in dir under TCG, with
// its gdbstub, looping on getpid by syscall (`trace mech=syscall`), and
// waits at most limit for the loop to run: before that the CPU is in the
// firmware, where sctrace refuses to look for a system call. QEMU is
// stopped when the test ends.
func StartLoop(t testing.TB, dir string, limit time.Duration) *qemu.Instance {
	t.Helper()
	return Start(t, dir, "trace mech=syscall", limit)
}

// Start boots the teaching kernel as StartLoop does with the kernel
// command line cmdline, which must put it in its trace loop ("trace" runs
// every mechanism in turn).
func Start(t testing.TB, dir, cmdline string, limit time.Duration) *qemu.Instance {
	t.Helper()
	testenv.NeedQEMU(t)
	kpath := filepath.Join(dir, "kernel.elf")
	if err := os.WriteFile(kpath, kernel.ELF, 0o600); err != nil {
		t.Fatal(err)
	}
	var console qemu.Output
	inst, err := qemu.Start(context.Background(), qemu.Config{Accel: "tcg", Kernel: kpath, Append: cmdline,
		CPU: qemu.DefaultCPU, GDB: true, ExitDevice: true, Serial: &console})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Stop() })
	testenv.WaitOutput(t, console.String, "trace ready", limit)
	return inst
}

package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/fixtures/kernel"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/qemu"
)

// TestTraceBootWait runs `sctrace trace --attach` against teaching-kernel
// QEMUs started with -S: without --boot-wait it refuses at once, naming
// real mode and offering the flag; with it, the round trip is printed.
func TestTraceBootWait(t *testing.T) {
	testenv.NeedQEMU(t)
	if _, err := run(t, "trace", "--attach", ":1", "--boot-wait=-1s"); err == nil || !strings.Contains(err.Error(), "--boot-wait must be a positive duration") {
		t.Errorf("negative --boot-wait: %v", err)
	}
	path, err := kernel.WriteTemp(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want string // in the error, or in the output when ok
		ok   bool
	}{
		{nil, "real mode at 0xfff0", false},
		{[]string{"--boot-wait"}, "<entry_SYSCALL_64>", true},
		{[]string{"--boot-wait=1m"}, "<entry_SYSCALL_64>", true},
	} {
		t.Run(strings.Join(append([]string{"trace"}, tt.args...), " "), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			inst, err := qemu.Start(ctx, qemu.Config{Kernel: path, Append: "trace", Accel: "tcg", GDB: true, Stopped: true})
			if err != nil {
				t.Fatal(err)
			}
			defer inst.Stop()
			out, err := run(t, append([]string{"trace", "--attach", inst.GDBAddr}, tt.args...)...)
			switch {
			case tt.ok && (err != nil || !strings.Contains(out, tt.want)):
				t.Fatalf("err %v, output without %q:\n%s", err, tt.want, out)
			case !tt.ok && (err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "--boot-wait")):
				t.Fatalf("err %v, want one naming %q and offering --boot-wait", err, tt.want)
			}
		})
	}
}

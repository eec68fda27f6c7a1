package session

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/fixtures/kernel"
	"github.com/sctrace/sctrace/fixtures/linuxinit"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/qemu"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// startStopped starts QEMU the way a user does with -s -S: the CPU stopped
// at the reset vector, in the firmware, before any kernel has run.
func startStopped(ctx context.Context, t *testing.T, cfg qemu.Config) *qemu.Instance {
	t.Helper()
	cfg.Accel, cfg.GDB, cfg.Stopped = "tcg", true, true
	inst, err := qemu.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Stop() })
	return inst
}

// TestAttachNotBooted attaches to a teaching kernel QEMU started with -S:
// the session says at once that no kernel runs yet, the search for a
// system call refuses without stepping, and the CPU is left at the reset
// vector.
func TestAttachNotBooted(t *testing.T) {
	testenv.NeedQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	path, err := kernel.WriteTemp(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	inst := startStopped(ctx, t, qemu.Config{Kernel: path, Append: "trace"})
	s, err := Attach(ctx, inst.GDBAddr, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !strings.Contains(s.Kernel, "real mode") {
		t.Errorf("kernel description %q does not say the CPU is in real mode", s.Kernel)
	}
	err = s.ToEntry(ctx, mechanism.Syscall)
	if !errors.Is(err, trace.ErrNotBooted) || !strings.Contains(err.Error(), "--boot-wait") {
		t.Fatalf("ToEntry at the reset vector: %v, want ErrNotBooted offering --boot-wait", err)
	}
	st, err := s.Target.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The architecture's reset state: CS base 0xffff0000, IP 0xfff0.
	if rip, cr0 := st.Val(x86.RIP), x86.CR0Flags(st.Val(x86.CR0)); rip != 0xfff0 || cr0&x86.CR0PE != 0 {
		t.Errorf("after the refusal the CPU is at %#x with CR0 %v, want the reset vector 0xfff0 in real mode", rip, cr0)
	}
}

// TestAttachBootWait attaches with a boot wait to QEMUs started with -S,
// the teaching kernel and Debian's Linux 6.1 with sctrace's /init: the
// guest is let boot, its symbols are found (the bundled ELF recognised in
// memory; Linux's kallsyms), and a getpid round trip starts at the user
// syscall the symbols name and enters at entry_SYSCALL_64.
func TestAttachBootWait(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU guests")
	}
	testenv.NeedQEMU(t)
	tests := []struct {
		name  string
		setup func(t *testing.T) qemu.Config
		kern  string // what Session.Kernel starts with
	}{
		{"teaching kernel", func(t *testing.T) qemu.Config {
			path, err := kernel.WriteTemp(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return qemu.Config{Kernel: path, Append: "trace"}
		}, KernelDescription},
		{"linux 6.1", func(t *testing.T) qemu.Config {
			bz := testenv.LinuxKernel(t, "6.1")
			img, err := linuxinit.Initramfs()
			if err != nil {
				t.Fatal(err)
			}
			initrd := filepath.Join(t.TempDir(), "initramfs.cpio")
			if err := os.WriteFile(initrd, img, 0o600); err != nil {
				t.Fatal(err)
			}
			o := LinuxOptions{Mode: linuxinit.Syscall}
			return qemu.Config{Kernel: bz, Initrd: initrd, Append: o.CommandLine(), Memory: "256M"}
		}, "Linux version 6.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
			defer cancel()
			inst := startStopped(ctx, t, tt.setup(t))
			s, err := Attach(ctx, inst.GDBAddr, Options{BootWait: 150 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if !strings.HasPrefix(s.Kernel, tt.kern) {
				t.Fatalf("kernel %q after the boot wait, want %q… (notes %q)", s.Kernel, tt.kern, s.Notes)
			}
			tr, err := s.RoundTrip(ctx, mechanism.Syscall)
			if err != nil {
				t.Fatal(err)
			}
			entry, ok := s.Symbols.Addr("entry_SYSCALL_64")
			if !ok {
				t.Fatal("no entry_SYSCALL_64 in the symbols found after booting")
			}
			if tr.Len() < 2 || tr.Step(0).Mnemonic != "syscall" || tr.Step(0).CPL != 3 || uint64(tr.Step(1).RIP) != entry {
				t.Fatalf("round trip after the boot wait: %d steps, first %q at CPL %d", tr.Len(), tr.Step(0).Mnemonic, tr.Step(0).CPL)
			}
			if a, ok := s.Symbols.Addr(mechanism.Syscall.UserLabel()); ok && uint64(tr.Step(0).RIP) != a {
				t.Errorf("first step at %#x, the symbols put %s at %#x", uint64(tr.Step(0).RIP), mechanism.Syscall.UserLabel(), a)
			}
		})
	}
}

package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

func TestModuleRoot(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "scripts", "fetch-kernel.sh")); err != nil {
		t.Errorf("module root %s has no scripts/fetch-kernel.sh: %v", root, err)
	}
}

func TestLinuxKernelFromEnvironment(t *testing.T) {
	if testing.Short() {
		t.Skip("LinuxKernel needs QEMU first (-short)")
	}
	want := filepath.Join(t.TempDir(), "vmlinuz")
	t.Setenv("SCTRACE_KERNEL_6_12", want)
	if got := LinuxKernel(t, "6.12"); got != want {
		t.Errorf("LinuxKernel = %q, want $SCTRACE_KERNEL_6_12 = %q", got, want)
	}
}

func TestQEMU10FromEnvironment(t *testing.T) {
	if testing.Short() {
		t.Skip("QEMU10 needs QEMU first (-short)")
	}
	want := filepath.Join(t.TempDir(), "qemu-system-x86_64")
	t.Setenv("SCTRACE_QEMU10", want)
	if got := QEMU10(t); got != want {
		t.Errorf("QEMU10 = %q, want $SCTRACE_QEMU10 = %q", got, want)
	}
}

// Package testenv tells sctrace's tests what the machine gives them: QEMU,
// tmux and gdb, and Debian Linux kernels for the Linux tests.
//
// The integration tests are part of the suite, and `make test` installs
// what they need first (scripts/setup.sh), so a missing tool fails the test
// with the command that installs it. Under -short, tests that need any of
// this are skipped instead.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// qemuBinary is the emulator the integration tests run (qemu.BinaryName;
// this package does not import qemu so that qemu's own tests can use it).
const qemuBinary = "qemu-system-x86_64"

// packages names the Debian package of each tool the tests use.
var packages = map[string]string{
	qemuBinary: "qemu-system-x86",
	"tmux":     "tmux",
	"gdb":      "gdb",
	"gcc":      "gcc",
	"as":       "binutils",
	"ld":       "binutils",
}

// NeedTools fails t when one of the programs is not on $PATH, and skips it
// under -short.
func NeedTools(t testing.TB, tools ...string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("needs %s (-short)", strings.Join(tools, ", "))
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			pkg := packages[tool]
			if pkg == "" {
				pkg = tool
			}
			t.Fatalf("%s not found: install it with `apt-get install -y %s`, or run `make test`, which does (scripts/setup.sh)", tool, pkg)
		}
	}
}

// NeedQEMU fails t when qemu-system-x86_64 is missing, and skips it under
// -short.
func NeedQEMU(t testing.TB) {
	t.Helper()
	NeedTools(t, qemuBinary)
}

// LinuxKernel returns the path of a Debian cloud kernel (bzImage) of a
// series such as "6.1" or "6.12": the file named by $SCTRACE_KERNEL_<series>
// (dots as underscores: SCTRACE_KERNEL_6_1), or the one
// scripts/fetch-kernel.sh downloads and caches. It fails t when none can be
// had, and skips it under -short.
func LinuxKernel(t testing.TB, series string) string {
	t.Helper()
	NeedQEMU(t)
	if p := os.Getenv("SCTRACE_KERNEL_" + strings.ReplaceAll(series, ".", "_")); p != "" {
		return p
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", filepath.Join(root, "scripts", "fetch-kernel.sh"), series)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("fetch a Linux %s kernel: %v\n%s(scripts/fetch-kernel.sh needs apt-get, dpkg and Debian's archive)", series, err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

// moduleRoot finds the directory of go.mod above the working directory,
// which for a test is its package's directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("testenv: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Rebuild runs make in srcDir with OUT and OBJ pointing into a temporary
// directory and the make variables vars (name the toolchain there, e.g.
// "CC=gcc", so that the environment cannot pick another one), and returns
// the bytes of the file it built. tools are the programs the build needs;
// a missing one fails t. Under -short the test is skipped.
func Rebuild(t testing.TB, srcDir string, tools []string, vars ...string) []byte {
	t.Helper()
	if testing.Short() {
		t.Skipf("rebuilds %s (-short)", srcDir)
	}
	for _, tool := range append([]string{"make"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install build-essential (apt-get install -y build-essential)", tool)
		}
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	args := append([]string{"-s", "-j2", "-C", srcDir, "OUT=" + out, "OBJ=" + filepath.Join(dir, "obj")}, vars...)
	if b, err := exec.Command("make", args...).CombinedOutput(); err != nil {
		t.Fatalf("make in %s: %v\n%s", srcDir, err, b)
	}
	built, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return built
}

// FirstDiff says where two byte strings first differ, for a test that
// compares a rebuilt file with its committed copy.
func FirstDiff(a, b []byte) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("first difference at byte %#x (rebuilt %#02x, committed %#02x), sizes %d and %d", i, a[i], b[i], len(a), len(b))
		}
	}
	return fmt.Sprintf("sizes %d (rebuilt) and %d (committed)", len(a), len(b))
}

// WaitOutput waits until output() contains want, failing t with what it
// holds when that takes longer than limit. A guest's console is how a test
// knows it got somewhere: a fixed sleep is too short on a loaded machine,
// where QEMU may still be in its firmware.
func WaitOutput(t testing.TB, output func() string, want string, limit time.Duration) {
	t.Helper()
	for start := time.Now(); !strings.Contains(output(), want); time.Sleep(20 * time.Millisecond) {
		if time.Since(start) > limit {
			t.Fatalf("no %q on the console after %v; it holds:\n%s", want, limit, output())
		}
	}
}

package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// QEMU10 returns the path of a QEMU 10.0 qemu-system-x86_64 for the tests
// that run on every supported release: the file named by $SCTRACE_QEMU10,
// or the wrapper scripts/fetch-qemu.sh writes after fetching Debian 12's
// bookworm-backports QEMU into the cache (it fetches at most once; later
// calls find it there). When it can be had neither way, t is skipped with
// the reason, and under -short it is skipped at once.
func QEMU10(t testing.TB) string {
	t.Helper()
	NeedQEMU(t)
	if p := os.Getenv("SCTRACE_QEMU10"); p != "" {
		return p
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", filepath.Join(root, "scripts", "fetch-qemu.sh"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Skipf("no QEMU 10.0 to test on: scripts/fetch-qemu.sh failed (%v): %s(it needs Debian 12, apt-get and dpkg, and root the first time; or set $SCTRACE_QEMU10 to a qemu-system-x86_64 10.0)",
			err, lastLines(stderr.String(), 3))
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}

// lastLines returns the last n lines of s, joined with "; ".
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ") + " "
}

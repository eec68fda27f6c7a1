package qemu

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sctrace/sctrace/internal/testenv"
)

func TestParseRelease(t *testing.T) {
	tests := []struct {
		out     string
		want    Release
		wantErr error
	}{
		// The first lines of --version of the two tested releases, as
		// printed here.
		{"QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard\n", Release{Major: 7, Minor: 2, Micro: 22}, nil},
		{"QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\n", Release{Major: 10, Minor: 0, Micro: 2}, nil},
		{"QEMU emulator version 8.2.2 (Debian 1:8.2.2+ds-0ubuntu1.4)", Release{Major: 8, Minor: 2, Micro: 2}, nil},
		{"QEMU emulator version 9.1.50\n", Release{Major: 9, Minor: 1, Micro: 50}, nil},
		{"QEMU emulator version 6.2\n", Release{Major: 6, Minor: 2}, nil},
		{"qemu-img version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\n", Release{}, ErrNotQEMU},
		{"", Release{}, ErrNotQEMU},
		{"QEMU emulator version ten\n", Release{}, ErrNotQEMU},
	}
	for _, tt := range tests {
		got, err := ParseRelease(tt.out)
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("ParseRelease(%q) error = %v, want %v", tt.out, err, tt.wantErr)
			continue
		}
		got.Banner = ""
		if got != tt.want {
			t.Errorf("ParseRelease(%q) = %v, want %v", tt.out, got, tt.want)
		}
	}
}

func TestReleaseLess(t *testing.T) {
	tests := []struct {
		a, b Release
		want bool
	}{
		{Release{Major: 6, Minor: 2}, MinRelease, true},
		{Release{Major: 7, Minor: 1, Micro: 99}, MinRelease, true},
		{Release{Major: 7, Minor: 2}, MinRelease, false},
		{Release{Major: 7, Minor: 2, Micro: 22}, MinRelease, false},
		{Release{Major: 10}, Release{Major: 8, Minor: 1}, false},
		{Release{Major: 8, Minor: 0, Micro: 5}, Release{Major: 8, Minor: 1}, true},
	}
	for _, tt := range tests {
		if got := tt.a.Less(tt.b); got != tt.want {
			t.Errorf("%v.Less(%v) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

// TestOneInsnPerTBCommand follows QEMU's rename of the monitor command in
// 8.1; QEMU 10.0.2 answers "unknown command: 'singlestep'" (observed here).
func TestOneInsnPerTBCommand(t *testing.T) {
	tests := []struct {
		r    Release
		on   bool
		want string
	}{
		{Release{Major: 7, Minor: 2, Micro: 22}, true, "singlestep on"},
		{Release{Major: 8, Minor: 0}, false, "singlestep off"},
		{Release{Major: 8, Minor: 1}, true, "one-insn-per-tb on"},
		{Release{Major: 10, Minor: 0, Micro: 2}, false, "one-insn-per-tb off"},
	}
	for _, tt := range tests {
		if got := tt.r.OneInsnPerTBCommand(tt.on); got != tt.want {
			t.Errorf("%v.OneInsnPerTBCommand(%v) = %q, want %q", tt.r, tt.on, got, tt.want)
		}
	}
}

// TestCheckBadBinaries gives Check what a user might pass as --qemu by
// mistake. Each error must wrap its sentinel, name what was found, and
// name the fix (--qemu with a QEMU 7.2 or newer); no process it started may
// be left running.
func TestCheckBadBinaries(t *testing.T) {
	fake := func(name string) string {
		p, err := filepath.Abs(filepath.Join("testdata", "fakeqemu", name))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		bin     string
		wantErr error
		says    string // what the message must name besides the fix
	}{
		{"/bin/false", "/bin/false", ErrNotQEMU, "exit status 1, no output"},
		{"qemu-img", fake("qemu-img.sh"), ErrNotQEMU, `"qemu-img version 7.2.22`},
		{"QEMU 6.2", fake("old.sh"), ErrTooOld, "is QEMU 6.2.0, older than 7.2"},
		{"no gdbstub", fake("nogdb.sh"), ErrNoGDBStub, "was built without the gdbstub"},
		{"aarch64", fake("aarch64.sh"), ErrNotX86_64, "emulates aarch64, not x86-64"},
		{"i386", "/usr/bin/qemu-system-i386", ErrNotX86_64, "emulates i386, not x86-64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := os.Stat(tt.bin); err != nil {
				t.Skipf("%s is not on this machine (Debian's qemu-system-x86 installs it)", tt.bin)
			}
			_, err := Check(context.Background(), tt.bin)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Check(%s) = %v, want %v", tt.bin, err, tt.wantErr)
			}
			msg := err.Error()
			t.Log(msg)
			for _, want := range []string{tt.bin, tt.says, "--qemu", "7.2 or newer"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not say %q", msg, want)
				}
			}
			if strings.Count(msg, "\n") > 0 {
				t.Errorf("error %q is more than one line", msg)
			}
		})
	}
}

// TestCheckHangs gives Check a binary that never answers: it must give up
// within its bound and leave neither the binary nor its child running.
func TestCheckHangs(t *testing.T) {
	defer func(d time.Duration) { checkTimeout = d }(checkTimeout)
	checkTimeout = 300 * time.Millisecond
	pidFile := filepath.Join(t.TempDir(), "pids")
	t.Setenv("SCTRACE_FAKE_PID", pidFile)
	bin, _ := filepath.Abs("testdata/fakeqemu/hang.sh")
	start := time.Now()
	_, err := Check(context.Background(), bin)
	if !errors.Is(err, ErrNotQEMU) || !strings.Contains(err.Error(), "no answer within 300ms") {
		t.Errorf("Check(hang.sh) = %v, want ErrNotQEMU saying it did not answer", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Check took %v with a 300ms bound", d)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range strings.Fields(string(b)) {
		pid, _ := strconv.Atoi(f)
		deadline := time.Now().Add(2 * time.Second)
		for processRunning(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if processRunning(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Errorf("process %d of the fake QEMU outlived Check", pid)
		}
	}
}

// TestStartRefusesBadBinary checks that Start runs Check before QEMU: an
// old release is refused with Check's error and nothing is started.
func TestStartRefusesBadBinary(t *testing.T) {
	bin, _ := filepath.Abs("testdata/fakeqemu/old.sh")
	_, err := Start(context.Background(), Config{Binary: bin, Accel: "tcg", GDB: true})
	if !errors.Is(err, ErrTooOld) {
		t.Fatalf("Start with QEMU 6.2 = %v, want ErrTooOld", err)
	}
}

// TestCheckTestedReleases checks the QEMU releases the suite runs on: the
// system's (Debian 12's 7.2) and QEMU 10.0 from scripts/fetch-qemu.sh.
func TestCheckTestedReleases(t *testing.T) {
	testenv.NeedQEMU(t)
	sys, err := exec.LookPath(BinaryName)
	if err != nil {
		t.Fatal(err)
	}
	for _, bin := range []string{sys, testenv.QEMU10(t)} {
		r, err := Check(context.Background(), bin)
		if err != nil {
			t.Errorf("Check(%s): %v", bin, err)
			continue
		}
		want, err := Version(context.Background(), bin)
		if err != nil {
			t.Fatal(err)
		}
		if r.Banner != want || r.Less(MinRelease) {
			t.Errorf("Check(%s) = %v %q, want the release of %q", bin, r, r.Banner, want)
		}
		t.Logf("%s: %s", bin, r.Banner)
	}
}

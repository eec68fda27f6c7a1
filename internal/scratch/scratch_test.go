package scratch

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

// goneProcess returns the pid and start time of a process that has exited.
func goneProcess(t *testing.T) (int, uint64) {
	t.Helper()
	cmd := exec.Command("sleep", "5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	start, err := StartTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	return pid, start
}

func TestClean(t *testing.T) {
	self := os.Getpid()
	selfStart, err := StartTime(self)
	if err != nil {
		t.Fatal(err)
	}
	gonePid, goneStart := goneProcess(t)
	marker := func(lines ...string) string {
		s := markerMagic + "\n"
		for _, l := range lines {
			s += l + "\n"
		}
		return s
	}
	tests := []struct {
		name    string
		dir     string // name under the root
		marker  string // "" for none
		symlink bool   // the entry is a symbolic link to a stale directory
		chown   bool   // the marker belongs to another user
		removed bool
	}{
		{name: "held by this process", dir: "sctrace-live", marker: marker(fmt.Sprintf("%d %d", self, selfStart)), removed: false},
		{name: "holder gone", dir: "sctrace-gone", marker: marker(fmt.Sprintf("%d %d", gonePid, goneStart)), removed: true},
		{name: "pid reused", dir: "sctrace-reused", marker: marker(fmt.Sprintf("%d %d", self, selfStart+1)), removed: true},
		{name: "one holder of two alive", dir: "sctrace-kept", marker: marker(fmt.Sprintf("%d %d", gonePid, goneStart), fmt.Sprintf("%d %d", self, selfStart)), removed: false},
		{name: "no holder listed", dir: "sctrace-empty", marker: marker(), removed: true},
		{name: "no marker", dir: "sctrace-nomarker", removed: false},
		{name: "foreign marker", dir: "sctrace-foreign", marker: "something else\n1 2\n", removed: false},
		{name: "garbled marker", dir: "sctrace-garbled", marker: marker("12 x"), removed: false},
		{name: "not ours by name", dir: "other-gone", marker: marker(fmt.Sprintf("%d %d", gonePid, goneStart)), removed: false},
		{name: "symbolic link", dir: "sctrace-link", symlink: true, removed: false},
		{name: "marker of another user", dir: "sctrace-otheruser", marker: marker(fmt.Sprintf("%d %d", gonePid, goneStart)), chown: true, removed: false},
	}
	root := t.TempDir()
	target := filepath.Join(t.TempDir(), "stale")
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, MarkerName), []byte(marker()), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		dir := filepath.Join(root, tt.dir)
		if tt.symlink {
			if err := os.Symlink(target, dir); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if tt.marker != "" {
			m := filepath.Join(dir, MarkerName)
			if err := os.WriteFile(m, []byte(tt.marker), 0o600); err != nil {
				t.Fatal(err)
			}
			if tt.chown {
				if os.Getuid() != 0 {
					// Without root the file cannot be given away; an
					// unreadable marker stands in for a foreign one.
					os.Chmod(m, 0)
				} else if err := os.Chown(m, 65534, 65534); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	removed, err := clean(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(root, tt.dir)
			_, statErr := os.Lstat(dir)
			if gone := os.IsNotExist(statErr); gone != tt.removed {
				t.Errorf("%s removed = %v, want %v", tt.dir, gone, tt.removed)
			}
			if slices.Contains(removed, dir) != tt.removed {
				t.Errorf("Clean's list %v and %s disagree", removed, tt.dir)
			}
		})
	}
	if _, err := os.Stat(target); err != nil {
		t.Errorf("the symbolic link's target was removed: %v", err)
	}
}

func TestDirAndHolder(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	dir, err := Dir("test-")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("mode %v, want 0700", fi.Mode().Perm())
	}
	if removed, _ := Clean(); len(removed) != 0 {
		t.Fatalf("Clean removed %v while this process holds it", removed)
	}
	// A QEMU left running holds the directory after sctrace has gone.
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if err := AddHolder(dir, cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	hs, err := readMarker(filepath.Join(dir, MarkerName))
	if err != nil || len(hs) != 2 || hs[0].pid != cmd.Process.Pid || hs[1].pid != os.Getpid() {
		t.Fatalf("marker holders %v, %v", hs, err)
	}
}

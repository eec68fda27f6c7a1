// Package scratch makes sctrace's temporary directories and removes the ones
// an earlier run left behind when it was killed.
//
// Every directory is made private (mode 0700) under os.TempDir with a name
// starting with Prefix, and holds a marker file that lists the processes
// keeping it alive: the sctrace process that made it, and a QEMU that
// outlives sctrace (--keep). Each process is recorded with its start time
// from /proc/PID/stat, so that a reused pid does not keep a directory
// alive. Clean removes a directory only when it is owned by this user,
// holds a marker that parses, and every process the marker lists is gone.
package scratch

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Prefix starts the name of every temporary directory sctrace makes.
const Prefix = "sctrace-"

// MarkerName is the marker file inside each directory.
const MarkerName = ".sctrace-owner"

// markerMagic is the marker's first line.
const markerMagic = "sctrace temporary directory v1"

// Dir makes a private directory under os.TempDir named Prefix+name+random
// (name like "linux-") and marks it as held by this process.
func Dir(name string) (string, error) {
	dir, err := os.MkdirTemp("", Prefix+name)
	if err != nil {
		return "", fmt.Errorf("temporary directory: %w", err)
	}
	// MkdirTemp makes 0700 already; say so rather than rely on it.
	if err := os.Chmod(dir, 0o700); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("temporary directory: %w", err)
	}
	if err := writeMarker(dir, []int{os.Getpid()}); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// AddHolder records pid (a QEMU left running) as a process that keeps dir
// alive, beside those already recorded.
func AddHolder(dir string, pid int) error {
	owners, err := readMarker(filepath.Join(dir, MarkerName))
	if err != nil {
		return err
	}
	pids := []int{pid}
	for _, o := range owners {
		pids = append(pids, o.pid)
	}
	return writeMarker(dir, pids)
}

type holder struct {
	pid   int
	start uint64
}

// writeMarker writes the marker through a temporary file and a rename, so
// that a reader never sees half of it.
func writeMarker(dir string, pids []int) error {
	var b strings.Builder
	b.WriteString(markerMagic + "\n")
	for _, pid := range pids {
		start, err := StartTime(pid)
		if err != nil {
			continue // gone already: it holds nothing
		}
		fmt.Fprintf(&b, "%d %d\n", pid, start)
	}
	tmp := filepath.Join(dir, MarkerName+".new")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("temporary directory marker: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, MarkerName)); err != nil {
		return fmt.Errorf("temporary directory marker: %w", err)
	}
	return nil
}

func readMarker(path string) ([]holder, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	if !sc.Scan() || sc.Text() != markerMagic {
		return nil, fmt.Errorf("%s: not an sctrace marker", path)
	}
	var out []holder
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			return nil, fmt.Errorf("%s: bad line %q", path, sc.Text())
		}
		pid, err1 := strconv.Atoi(f[0])
		start, err2 := strconv.ParseUint(f[1], 10, 64)
		if err1 != nil || err2 != nil || pid <= 0 {
			return nil, fmt.Errorf("%s: bad line %q", path, sc.Text())
		}
		out = append(out, holder{pid, start})
	}
	return out, nil
}

// StartTime returns the start time of process pid in clock ticks since
// boot (field 22 of /proc/PID/stat).
func StartTime(pid int) (uint64, error) {
	_, start, err := procStat(pid)
	return start, err
}

// procStat returns the state letter (field 3) and the start time (field
// 22) of /proc/PID/stat.
func procStat(pid int) (string, uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// count fields after its closing parenthesis.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); field 22 is f[19].
	if len(f) < 20 {
		return "", 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	return f[0], start, err
}

// alive reports whether h is still running: its pid exists, is not a
// zombie, and started at the recorded time.
func (h holder) alive() bool {
	state, start, err := procStat(h.pid)
	return err == nil && start == h.start && state != "Z" && state != "X"
}

// Clean removes sctrace's temporary directories under os.TempDir that no
// live process holds, and returns their paths. A directory is removed only
// when it is a real directory (not a symbolic link) owned by this user and
// its marker is a regular file owned by this user that lists no live
// process. Anything else is left alone.
func Clean() ([]string, error) {
	return clean(os.TempDir())
}

func clean(root string) ([]string, error) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("clean temporary directories: %w", err)
	}
	uid := uint32(os.Getuid())
	var removed []string
	var errs []error
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), Prefix) {
			continue
		}
		dir := filepath.Join(root, e.Name())
		if !stale(dir, uid) {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, dir)
	}
	return removed, errors.Join(errs...)
}

// stale reports whether dir is an sctrace directory of uid's that no live
// process holds.
func stale(dir string, uid uint32) bool {
	if !ownedBy(dir, uid, true) {
		return false
	}
	marker := filepath.Join(dir, MarkerName)
	if !ownedBy(marker, uid, false) {
		return false
	}
	holders, err := readMarker(marker)
	if err != nil {
		return false
	}
	for _, h := range holders {
		if h.alive() {
			return false
		}
	}
	return true
}

// ownedBy reports whether path (not followed if a symbolic link) is a
// directory (dir) or a regular file owned by uid.
func ownedBy(path string, uid uint32, dir bool) bool {
	fi, err := os.Lstat(path)
	if err != nil {
		return false
	}
	if dir && !fi.IsDir() || !dir && !fi.Mode().IsRegular() {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Uid == uid
}

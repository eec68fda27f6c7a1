// Package outfile writes sctrace's output files (traces, exported lessons,
// plots, saved progress) so that nothing is lost or half written.
//
// Check says before any work starts whether a path can be written. Write
// puts a regular file in place atomically: the content goes to a
// temporary file beside the target, is flushed to disk and closed, and
// only then renamed over the target, so a failed write (a full disk, a
// file size limit) leaves an existing file as it was. Save adds a way
// out: when writing the target fails, the same content is written to a
// new file in the temporary directory, and the error says where it is.
//
// Targets that are not regular files (/dev/null, a terminal, a FIFO) are
// written in place, as a shell redirection would. /dev/stdout, /dev/stderr
// and /dev/fd/N write to the descriptor sctrace inherited, whatever it is
// (a pipe, a terminal, a file opened for appending).
package outfile

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Check reports, without writing anything at path, whether Write can
// write it: the path is not a directory, and either it is a file or
// device sctrace may write, or its directory exists and sctrace can
// create files in it. Errors name the path and say what is wrong.
func Check(path string) error {
	if path == "" {
		return errors.New("no file name")
	}
	if fd, ok := inheritedFD(path); ok {
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil {
			return fmt.Errorf("%s: descriptor %d: %w", path, fd, err)
		}
		return nil
	}
	target, fi, err := resolve(path)
	switch {
	case err == nil && fi.IsDir():
		return fmt.Errorf("%s: is a directory", path)
	case err == nil:
		// An existing file is replaced only when it could be written in
		// place: a read-only file stays protected, as from os.Create.
		if err := syscall.Access(target, 2 /* W_OK */); err != nil {
			return fmt.Errorf("%s: not writable: %w", path, err)
		}
		if inPlace(target, fi) {
			return nil
		}
	case err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR):
		return err
	}
	dir := filepath.Dir(target)
	di, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s: directory %s does not exist", path, dir)
	case err != nil:
		return fmt.Errorf("%s: %w", path, err)
	case !di.IsDir():
		return fmt.Errorf("%s: %s is not a directory", path, dir)
	}
	// Creating a file is the only sure test (read-only mounts, ACLs).
	f, err := os.CreateTemp(dir, ".sctrace-check-*")
	if err != nil {
		return fmt.Errorf("%s: cannot create files in %s: %w", path, dir, unwrapPath(err))
	}
	name := f.Name()
	f.Close()
	os.Remove(name)
	return nil
}

// Write writes what write produces to path. A regular file (new or
// existing) is replaced atomically: after a failure the old content, if
// any, is still there and no temporary file is left behind. A new file
// gets the mode os.Create would give it (0666 less the umask); an existing
// one keeps its mode. A symbolic link is followed, and its target
// replaced. Targets that are not regular files are written in place.
func Write(path string, write func(io.Writer) error) error {
	if fd, ok := inheritedFD(path); ok {
		return writeFD(path, fd, write)
	}
	target, fi, err := resolve(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("write %s: %w", path, unwrapPath(err))
	}
	if err == nil && fi.IsDir() {
		return fmt.Errorf("%s: is a directory", path)
	}
	if err == nil {
		if aerr := syscall.Access(target, 2 /* W_OK */); aerr != nil {
			return fmt.Errorf("write %s: %w", path, aerr)
		}
	}
	if err == nil && inPlace(target, fi) {
		return writeInPlace(path, target, fi, write)
	}
	mode := fs.FileMode(0o666) &^ umask()
	if err == nil {
		mode = fi.Mode().Perm()
	}
	return writeAtomic(path, target, mode, write)
}

// Save is Write, and when that fails, writes the same content to a new
// file in os.TempDir() named by keepPattern (as for os.CreateTemp, e.g.
// "sctrace-trace-*.json") and returns an error that says where it went.
// write is called a second time for that, so it must be repeatable.
func Save(path, keepPattern string, write func(io.Writer) error) error {
	err := Write(path, write)
	if err == nil {
		return nil
	}
	kept, kerr := Keep(keepPattern, write)
	if kerr != nil {
		return fmt.Errorf("%w; keeping it in %s failed too: %v", err, os.TempDir(), kerr)
	}
	return &KeptError{Err: err, Kept: kept}
}

// KeptError is Save's error when the target could not be written but the
// content was kept elsewhere.
type KeptError struct {
	Err  error  // why the target could not be written
	Kept string // the file that holds the content instead
}

func (e *KeptError) Error() string {
	return fmt.Sprintf("%v; written to %s instead", e.Err, e.Kept)
}

func (e *KeptError) Unwrap() error { return e.Err }

// Keep writes what write produces to a new file in os.TempDir() named by
// pattern, readable by its owner only, and returns its name. A file that
// cannot be written whole is removed.
func Keep(pattern string, write func(io.Writer) error) (string, error) {
	f, err := os.CreateTemp("", pattern)
	if err != nil {
		return "", err
	}
	if err := finish(f, write, true); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// resolve follows symbolic links in path and stats the result.
func resolve(path string) (string, fs.FileInfo, error) {
	target := path
	if t, err := filepath.EvalSymlinks(path); err == nil {
		target = t
	}
	fi, err := os.Stat(target)
	return target, fi, err
}

// inPlace reports whether target is written where it is rather than
// replaced: devices, FIFOs and sockets.
func inPlace(target string, fi fs.FileInfo) bool { return !fi.Mode().IsRegular() }

// inheritedFD returns the descriptor path names when it is one of the
// process's own: /dev/stdout, /dev/stderr, /dev/fd/N, /proc/self/fd/N.
// Opening such a path anew would start at offset 0 of a file that
// standard output appends to; writing to the descriptor does what the
// shell set up.
func inheritedFD(path string) (int, bool) {
	switch path {
	case "/dev/stdout":
		return 1, true
	case "/dev/stderr":
		return 2, true
	}
	for _, dir := range []string{"/dev/fd/", "/proc/self/fd/"} {
		if n, ok := strings.CutPrefix(path, dir); ok {
			if fd, err := strconv.Atoi(n); err == nil && fd >= 0 {
				return fd, true
			}
		}
	}
	return 0, false
}

// writeFD writes to a duplicate of an inherited descriptor: the
// duplicate shares its offset and flags (O_APPEND), and closing it leaves
// the original open.
func writeFD(path string, fd int, write func(io.Writer) error) error {
	dup, err := syscall.Dup(fd)
	if err != nil {
		return fmt.Errorf("write %s: descriptor %d: %w", path, fd, err)
	}
	syscall.CloseOnExec(dup)
	if err := finish(os.NewFile(uintptr(dup), path), write, false); err != nil {
		return fmt.Errorf("write %s: %w", path, unwrapPath(err))
	}
	return nil
}

// writeInPlace writes to a target that is not a regular file. A FIFO is
// opened without blocking: with no reader it is an error, not a hang.
func writeInPlace(path, target string, fi fs.FileInfo, write func(io.Writer) error) error {
	flag := os.O_WRONLY
	if fi.Mode()&fs.ModeNamedPipe != 0 {
		flag |= syscall.O_NONBLOCK
	}
	f, err := os.OpenFile(target, flag, 0)
	if errors.Is(err, syscall.ENXIO) {
		return fmt.Errorf("write %s: no process is reading the FIFO", path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, unwrapPath(err))
	}
	if err := finish(f, write, false); err != nil {
		return fmt.Errorf("write %s: %w", path, unwrapPath(err))
	}
	return nil
}

// writeAtomic writes to a temporary file beside target and renames it
// over target once it is complete, on disk and closed.
func writeAtomic(path, target string, mode fs.FileMode, write func(io.Writer) error) error {
	dir, base := filepath.Split(target)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, unwrapPath(err))
	}
	tmp := f.Name()
	if err := finish(f, write, true); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, unwrapPath(err))
	}
	if err := os.Chmod(tmp, mode); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, unwrapPath(err))
	}
	if err := os.Rename(tmp, target); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, unwrapPath(err))
	}
	// Make the rename itself durable. The file is in place whatever this
	// says, so a failure here is not reported as a failed write.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// finish writes to f through a buffer, flushes it, syncs it when sync is
// set, and closes it; the first error wins and Close's is never dropped.
func finish(f *os.File, write func(io.Writer) error, sync bool) error {
	bw := bufio.NewWriterSize(f, 64<<10)
	err := write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// unwrapPath drops the *PathError wrapper of a temporary file, whose name
// means nothing to the user; the caller names the target instead.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// umask returns the process's file mode creation mask, read from
// /proc/self/status (setting and restoring it with umask(2) would race
// with other goroutines creating files); 022 when it cannot be read.
func umask() fs.FileMode {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0o022
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Umask:"); ok {
			if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
				return fs.FileMode(m) & fs.ModePerm
			}
		}
	}
	return 0o022
}

package outfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func content(s string) func(io.Writer) error {
	return func(w io.Writer) error {
		_, err := io.WriteString(w, s)
		return err
	}
}

// failing writes half of s and fails.
func failing(s string) func(io.Writer) error {
	return func(w io.Writer) error {
		io.WriteString(w, s[:len(s)/2])
		return errors.New("encoder broke")
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path, want string // want "" for no error
	}{
		{filepath.Join(dir, "new.json"), ""},
		{file, ""},
		{"/dev/null", ""},
		{"/dev/full", ""}, // writable; the write fails, and Save keeps it elsewhere
		{"/dev/stdout", ""},
		{"/dev/fd/1", ""},
		{"/dev/fd/987", "descriptor 987"},
		{dir, "is a directory"},
		{"/nonexistent/dir/f.json", "directory /nonexistent/dir does not exist"},
		{filepath.Join(file, "f.json"), "is not a directory"},
		{"", "no file name"},
	}
	for _, tt := range tests {
		err := Check(tt.path)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("Check(%q) = %v, want %q", tt.path, err, tt.want)
		}
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".sctrace-check-*"))
	if len(left) > 0 {
		t.Errorf("Check left %v behind", left)
	}
}

func TestCheckReadOnlyDir(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root may write to a read-only directory")
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o500)
	defer os.Chmod(dir, 0o700)
	if err := Check(filepath.Join(dir, "f.json")); err == nil || !strings.Contains(err.Error(), "cannot create files in") {
		t.Errorf("Check in a read-only directory = %v", err)
	}
}

func TestReadOnlyFileKept(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root may write to a read-only file")
	}
	name := filepath.Join(t.TempDir(), "t.json")
	os.WriteFile(name, []byte("keep"), 0o444)
	if err := Check(name); err == nil || !strings.Contains(err.Error(), "not writable") {
		t.Errorf("Check(read-only file) = %v", err)
	}
	if err := Write(name, content("new")); !errors.Is(err, syscall.EACCES) {
		t.Errorf("Write(read-only file) = %v", err)
	}
	if b, _ := os.ReadFile(name); string(b) != "keep" {
		t.Errorf("the read-only file became %q", b)
	}
}

func TestWriteNew(t *testing.T) {
	name := filepath.Join(t.TempDir(), "t.json")
	if err := Write(name, content("new\n")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(name)
	if err != nil || string(b) != "new\n" {
		t.Fatalf("read back %q, %v", b, err)
	}
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	if want := fs.FileMode(0o666) &^ umask(); fi.Mode().Perm() != want {
		t.Errorf("mode %v, want %v (as os.Create)", fi.Mode().Perm(), want)
	}
}

func TestWriteReplaces(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "t.json")
	if err := os.WriteFile(name, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Write(name, content("new")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(name)
	fi, _ := os.Stat(name)
	if string(b) != "new" || fi.Mode().Perm() != 0o600 {
		t.Errorf("after Write: %q, mode %v; want new, 0600 kept", b, fi.Mode().Perm())
	}
}

func TestWriteFailureKeepsOld(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "t.json")
	if err := os.WriteFile(name, []byte("good old trace"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Write(name, failing("a new trace that breaks"))
	if err == nil || !strings.Contains(err.Error(), "encoder broke") || !strings.Contains(err.Error(), name) {
		t.Fatalf("Write = %v", err)
	}
	if b, _ := os.ReadFile(name); string(b) != "good old trace" {
		t.Errorf("the old file became %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
}

func TestWriteSymlink(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real.json")
	link := filepath.Join(dir, "link.json")
	os.WriteFile(real, []byte("old"), 0o644)
	if err := os.Symlink("real.json", link); err != nil {
		t.Fatal(err)
	}
	if err := Write(link, content("new")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(real); string(b) != "new" {
		t.Errorf("link target holds %q", b)
	}
	if fi, _ := os.Lstat(link); fi.Mode()&fs.ModeSymlink == 0 {
		t.Error("the link was replaced by a file")
	}
}

func TestWriteDevices(t *testing.T) {
	if err := Write("/dev/null", content("x")); err != nil {
		t.Errorf("Write(/dev/null) = %v", err)
	}
	err := Write("/dev/full", content("x"))
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "write /dev/full: no space left on device") {
		t.Errorf("Write(/dev/full) = %v", err)
	}
	if err := Write(t.TempDir(), content("x")); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("Write(dir) = %v", err)
	}
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip(err)
	}
	if err := Write(fifo, content("x")); err == nil || !strings.Contains(err.Error(), "no process is reading") {
		t.Errorf("Write(FIFO with no reader) = %v", err)
	}
}

func TestSaveKeepsElsewhere(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	err := Save("/dev/full", "sctrace-trace-*.json", content("the trace"))
	var ke *KeptError
	if !errors.As(err, &ke) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Save(/dev/full) = %v, want a KeptError", err)
	}
	if filepath.Dir(ke.Kept) != tmp || !strings.HasPrefix(filepath.Base(ke.Kept), "sctrace-trace-") {
		t.Errorf("kept in %s, want sctrace-trace-* in %s", ke.Kept, tmp)
	}
	if b, _ := os.ReadFile(ke.Kept); string(b) != "the trace" {
		t.Errorf("kept file holds %q", b)
	}
	if !strings.Contains(err.Error(), "written to "+ke.Kept+" instead") {
		t.Errorf("message %q does not say where", err)
	}
	if err := Save(filepath.Join(tmp, "ok.json"), "x-*", content("y")); err != nil {
		t.Errorf("Save to a good path = %v", err)
	}
}

// TestWriteFileSizeLimit runs a child under a file size limit (as after
// `ulimit -f`): the write fails with EFBIG, the good file at the path is
// left as it was, and nothing is left beside it.
func TestWriteFileSizeLimit(t *testing.T) {
	if name := os.Getenv("OUTFILE_TEST_EFBIG"); name != "" {
		lim := &syscall.Rlimit{Cur: 4096, Max: 4096}
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, lim); err != nil {
			fmt.Println("setrlimit:", err)
			os.Exit(2)
		}
		err := Write(name, content(strings.Repeat("x", 10000)))
		fmt.Println(err)
		os.Exit(0)
	}
	dir := t.TempDir()
	name := filepath.Join(dir, "t.json")
	os.WriteFile(name, []byte("good"), 0o644)
	cmd := exec.Command(os.Args[0], "-test.run=^TestWriteFileSizeLimit$")
	cmd.Env = append(os.Environ(), "OUTFILE_TEST_EFBIG="+name)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "write "+name+": file too large") {
		t.Errorf("child said %q, want EFBIG", out)
	}
	if b, _ := os.ReadFile(name); string(b) != "good" {
		t.Errorf("the good file became %d bytes", len(b))
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
}

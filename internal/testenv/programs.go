package testenv

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// BuildHello builds testdata/hello.c, a static x86-64 program that prints
// its arguments and calls getppid, with gcc -static into a temporary
// directory and returns its path. A missing gcc or static C library fails
// t (skipped under -short), as a missing tool does.
func BuildHello(t testing.TB) string {
	t.Helper()
	return buildHello(t, "-static")
}

// BuildHelloPIE builds testdata/hello.c as BuildHello does but with gcc
// -static-pie: a static position-independent executable (ELF type DYN
// with no PT_INTERP), which the kernel loads where it chooses.
func BuildHelloPIE(t testing.TB) string {
	t.Helper()
	return buildHello(t, "-static-pie")
}

func buildHello(t testing.TB, link string) string {
	t.Helper()
	NeedTools(t, "gcc")
	out := filepath.Join(t.TempDir(), "hello")
	cmd := exec.Command("gcc", link, "-O2", "-o", out, filepath.Join(testdata(t), "hello.c"))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gcc %s: %v\n%s(the static C library comes with `apt-get install -y libc6-dev`; scripts/setup.sh installs it)", link, err, b)
	}
	return out
}

// BuildHello32 assembles testdata/hello32.s, a static i386 program that
// writes a line and calls getppid through int $0x80, with binutils into a
// temporary directory and returns its path.
func BuildHello32(t testing.TB) string {
	t.Helper()
	NeedTools(t, "as", "ld")
	dir := t.TempDir()
	obj, out := filepath.Join(dir, "hello32.o"), filepath.Join(dir, "hello32")
	for _, args := range [][]string{
		{"as", "--32", "-o", obj, filepath.Join(testdata(t), "hello32.s")},
		{"ld", "-m", "elf_i386", "-static", "-o", out, obj},
	} {
		if b, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, b)
		}
	}
	return out
}

// BuildCompat32 assembles testdata/compat32.s, a static i386 program that
// calls getppid the way the 32-bit vDSO does, by sysenter or by syscall as
// its first argument says, with binutils into a temporary directory and
// returns its path.
func BuildCompat32(t testing.TB) string {
	t.Helper()
	NeedTools(t, "as", "ld")
	dir := t.TempDir()
	obj, out := filepath.Join(dir, "compat32.o"), filepath.Join(dir, "compat32")
	for _, args := range [][]string{
		{"as", "--32", "-o", obj, filepath.Join(testdata(t), "compat32.s")},
		{"ld", "-m", "elf_i386", "-static", "-o", out, obj},
	} {
		if b, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, b)
		}
	}
	return out
}

// testdata is this package's testdata directory.
func testdata(t testing.TB) string {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "internal", "testenv", "testdata")
}

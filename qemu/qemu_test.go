package qemu

import (
	"context"
	"errors"
	"fmt"
	"github.com/sctrace/sctrace/internal/testenv"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestFind(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "plain")
	if err := os.WriteFile(notExec, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, wantErr string
	}{
		{"missing file", filepath.Join(dir, "nope"), "no such file"},
		{"directory", dir, "not an executable"},
		{"not executable", notExec, "not an executable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Find(tt.path)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Find(%q) = %v, want error containing %q", tt.path, err, tt.wantErr)
			}
		})
	}
	t.Run("not on PATH", func(t *testing.T) {
		t.Setenv("PATH", dir)
		_, err := Find("")
		if !errors.Is(err, ErrNotInstalled) || !strings.Contains(err.Error(), "apt-get install") {
			t.Fatalf("Find(\"\") with empty PATH = %v, want ErrNotInstalled with an install hint", err)
		}
	})
}

func TestStartRefusesUnknownAccel(t *testing.T) {
	for _, a := range []string{"auto", "hvf", "KVM"} {
		if _, err := Start(context.Background(), Config{Accel: a}); err == nil || !strings.Contains(err.Error(), "want tcg or kvm") {
			t.Errorf("Start with accel %q: %v, want an error naming tcg and kvm", a, err)
		}
	}
}

func TestExitString(t *testing.T) {
	tests := []struct {
		e    Exit
		want string
	}{
		{Exit{Status: 1, DebugExit: true, Code: 0}, "guest exit code 0 (qemu status 1)"},
		{Exit{Status: -1, Signal: "killed"}, "killed by killed"},
		{Exit{Status: 2}, "qemu status 2"},
	}
	for _, tt := range tests {
		if got := tt.e.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.e, got, tt.want)
		}
	}
}

func TestStartStoppedWithGDB(t *testing.T) {
	testenv.NeedQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	inst, err := Start(ctx, Config{Accel: "tcg", GDB: true, Stopped: true})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Stop()
	if !strings.HasPrefix(inst.GDBAddr, "127.0.0.1:") {
		t.Fatalf("GDBAddr = %q, want a loopback address", inst.GDBAddr)
	}
	c, err := net.DialTimeout("tcp", inst.GDBAddr, 2*time.Second)
	if err != nil {
		t.Fatalf("dial gdbstub: %v", err)
	}
	c.Close()
	start := time.Now()
	inst.Stop()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Stop took %v", d)
	}
	e, err := inst.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if e.DebugExit {
		t.Errorf("exit %v: no debug-exit device was configured", e)
	}
	inst.Stop() // a second Stop returns at once
}

func TestStartBadKernel(t *testing.T) {
	testenv.NeedQEMU(t)
	_, err := Start(context.Background(), Config{Kernel: filepath.Join(t.TempDir(), "missing.elf")})
	if err == nil || !strings.Contains(err.Error(), "kernel") {
		t.Fatalf("Start with a missing kernel = %v, want a kernel error", err)
	}
}

func TestStartQEMUDiesEarly(t *testing.T) {
	testenv.NeedQEMU(t)
	_, err := Start(context.Background(), Config{Accel: "tcg", GDB: true, Extra: []string{"-no-such-option"}})
	if err == nil || !strings.Contains(err.Error(), "exited before") {
		t.Fatalf("Start with a bad option = %v, want an early-exit error with QEMU's message", err)
	}
	if !strings.Contains(err.Error(), "no-such-option") {
		t.Errorf("error %q does not quote QEMU's complaint", err)
	}
}

// TestKeepOutlivesParent starts QEMU from a child process, which exits at
// once: with Keep, QEMU must still run; without it, it must be gone.
func TestKeepOutlivesParent(t *testing.T) {
	testenv.NeedQEMU(t)
	for _, keep := range []bool{true, false} {
		t.Run(fmt.Sprintf("keep=%v", keep), func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperStartQEMU$")
			cmd.Env = append(os.Environ(), "SCTRACE_QEMU_HELPER=1", fmt.Sprintf("SCTRACE_QEMU_KEEP=%v", keep))
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("helper: %v", err)
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
			if err != nil {
				t.Fatalf("helper printed %q", out)
			}
			defer syscall.Kill(pid, syscall.SIGKILL)
			alive := false
			deadline := time.Now().Add(3 * time.Second)
			for time.Now().Before(deadline) {
				alive = processRunning(pid)
				if alive == keep {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if alive != keep {
				t.Errorf("QEMU alive after its parent exited = %v, want %v", alive, keep)
			}
		})
	}
}

// processRunning reports whether pid exists and is not a zombie.
func processRunning(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

// TestHelperStartQEMU is not a test: TestKeepOutlivesParent runs it in a
// child process to start QEMU and exit.
func TestHelperStartQEMU(t *testing.T) {
	if os.Getenv("SCTRACE_QEMU_HELPER") != "1" {
		t.Skip("helper process for TestKeepOutlivesParent")
	}
	inst, err := Start(context.Background(), Config{Accel: "tcg", GDB: true, Stopped: true, Keep: os.Getenv("SCTRACE_QEMU_KEEP") == "true"})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println(inst.Pid())
	os.Exit(0)
}

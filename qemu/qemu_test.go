package qemu

import (
	"context"
	"errors"
	"fmt"
	"github.com/sctrace/sctrace/internal/scratch"
	"github.com/sctrace/sctrace/internal/testenv"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
		{Exit{Status: -1, Signal: "SIGKILL"}, "killed by SIGKILL"},
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
	if inst.GDBAddr != "unix:"+inst.GDBSocket || filepath.Dir(inst.GDBSocket) != inst.Dir {
		t.Fatalf("GDBAddr = %q, socket %q, dir %q: want unix:DIR/SOCKET", inst.GDBAddr, inst.GDBSocket, inst.Dir)
	}
	checkPrivate(t, inst)
	if ports := ListeningTCPPorts(t, inst.Pid()); len(ports) != 0 {
		t.Errorf("qemu listens on TCP ports %v", ports)
	}
	c, err := net.DialTimeout("unix", inst.GDBSocket, 2*time.Second)
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
	if _, err := os.Lstat(inst.Dir); !os.IsNotExist(err) {
		t.Errorf("socket directory %s still there after qemu ended (%v)", inst.Dir, err)
	}
	inst.Stop() // a second Stop returns at once
}

// checkPrivate checks that only this user can reach inst's gdbstub: the
// directory is ours with mode 0700, and the socket is inside it.
func checkPrivate(t *testing.T, inst *Instance) {
	t.Helper()
	fi, err := os.Lstat(inst.Dir)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || fi.Mode().Perm() != 0o700 || int(st.Uid) != os.Getuid() {
		t.Errorf("socket directory %s: mode %v, owner %d; want a directory of mode 0700 owned by %d", inst.Dir, fi.Mode(), st.Uid, os.Getuid())
	}
	si, err := os.Lstat(inst.GDBSocket)
	if err != nil || si.Mode()&os.ModeSocket == 0 {
		t.Errorf("gdbstub socket %s: %v, %v", inst.GDBSocket, si, err)
	}
}

// ListeningTCPPorts returns the TCP ports on which process pid listens:
// the LISTEN entries of /proc/net/tcp and tcp6 whose socket inode is one of
// the process's file descriptors.
func ListeningTCPPorts(t *testing.T, pid int) []int {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	if len(inodes) == 0 {
		t.Fatalf("process %d has no sockets: is it qemu with a gdbstub?", pid)
	}
	var ports []int
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] {
				continue
			}
			_, hexPort, _ := strings.Cut(f[1], ":")
			p, _ := strconv.ParseInt(hexPort, 16, 32)
			ports = append(ports, int(p))
		}
	}
	return ports
}

func TestStartGDBTCP(t *testing.T) {
	testenv.NeedQEMU(t)
	inst, err := Start(context.Background(), Config{Accel: "tcg", GDB: true, GDBTCP: true, Stopped: true})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Stop()
	if !strings.HasPrefix(inst.GDBAddr, "127.0.0.1:") || inst.GDBSocket != "" {
		t.Fatalf("GDBAddr = %q, socket %q: want a loopback address and no socket", inst.GDBAddr, inst.GDBSocket)
	}
	_, port, _ := net.SplitHostPort(inst.GDBAddr)
	if ports := ListeningTCPPorts(t, inst.Pid()); len(ports) != 1 || strconv.Itoa(ports[0]) != port {
		t.Errorf("qemu listens on TCP ports %v, want [%s]", ports, port)
	}
}

// TestStartFailures starts QEMUs that cannot start and checks that the
// error says how QEMU ended and what it printed.
func TestStartFailures(t *testing.T) {
	testenv.NeedQEMU(t)
	dir := t.TempDir()
	real, err := exec.LookPath(BinaryName)
	if err != nil {
		t.Fatal(err)
	}
	// Passes the binary checks (--version, QMP query-target) as the real
	// QEMU, then dies of SIGSEGV when started to run a guest.
	dying := filepath.Join(dir, "dying-qemu")
	script := "#!/bin/sh\ncase \"$*\" in *--version*|*-qmp*) exec " + real + " \"$@\";; esac\necho 'cannot go on: out of luck' >&2\nkill -SEGV $$\n"
	if err := os.WriteFile(dying, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"bad option", Config{Extra: []string{"-no-such-option"}}, []string{"exited before its gdbstub listened", "exited with status 1", "no-such-option"}},
		{"unknown cpu", Config{CPU: "bogus"}, []string{"exited with status 1", "unable to find CPU model 'bogus'"}},
		{"false", Config{Binary: "/bin/false", ExitDevice: true}, []string{"/bin/false is not a QEMU system emulator"}},
		{"killed by a signal", Config{Binary: dying}, []string{"was killed by SIGSEGV", "cannot go on: out of luck"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Accel, cfg.GDB, cfg.Stopped = "tcg", true, true
			inst, err := Start(context.Background(), cfg)
			if err == nil {
				inst.Stop()
				t.Fatal("Start succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	left, _ := filepath.Glob(filepath.Join(os.TempDir(), "sctrace-qemu-*"))
	for _, d := range left {
		if b, err := os.ReadFile(filepath.Join(d, ".sctrace-owner")); err == nil && strings.Contains(string(b), fmt.Sprintf("\n%d ", os.Getpid())) {
			t.Errorf("socket directory %s left behind", d)
		}
	}
}

func TestStartBadKernel(t *testing.T) {
	testenv.NeedQEMU(t)
	_, err := Start(context.Background(), Config{Kernel: filepath.Join(t.TempDir(), "missing.elf")})
	if err == nil || !strings.Contains(err.Error(), "kernel") {
		t.Fatalf("Start with a missing kernel = %v, want a kernel error", err)
	}
}

// TestKeepOutlivesParent starts QEMU from a child process, which exits at
// once: with Keep, QEMU must still run and its socket directory stay; without
// it, QEMU must be gone. Either way, once QEMU is gone, the next start's
// clean-up (scratch.Clean) removes the directory the child left.
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
			var pid int
			var dir string
			if _, err := fmt.Sscan(string(out), &pid, &dir); err != nil {
				t.Fatalf("helper printed %q", out)
			}
			defer syscall.Kill(pid, syscall.SIGKILL)
			defer os.RemoveAll(dir)
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
			if keep {
				if removed, _ := scratch.Clean(); slices.Contains(removed, dir) {
					t.Fatalf("the socket directory of a running kept QEMU was cleaned")
				}
				if _, err := os.Stat(filepath.Join(dir, "gdb.sock")); err != nil {
					t.Errorf("kept QEMU's socket: %v", err)
				}
				syscall.Kill(pid, syscall.SIGKILL)
				for processRunning(pid) {
					time.Sleep(20 * time.Millisecond)
				}
			}
			removed, err := scratch.Clean()
			if err != nil || !slices.Contains(removed, dir) {
				t.Errorf("clean-up after QEMU ended removed %v (%v), want %s", removed, err, dir)
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
	fmt.Println(inst.Pid(), inst.Dir)
	os.Exit(0)
}

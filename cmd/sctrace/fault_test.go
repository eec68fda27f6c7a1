package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sctrace/sctrace/internal/kerneltest"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/qemu"
	"github.com/sctrace/sctrace/trace"
)

// The tests in this file run the real sctrace binary against the real QEMU
// and hurt it: signals sent to sctrace mid-record and mid-wait, QEMU frozen,
// killed or slowed by a wrapper script given with --qemu, a local user
// trying to reach a kept QEMU. Each checks what the user is promised: the
// message, the saved trace, no QEMU left running, no temporary directory
// left behind, no breakpoint left in a guest sctrace attached to.

var (
	buildOnce sync.Once
	builtExe  string
	buildErr  error
)

// sctraceExe builds the sctrace binary once, into a directory other users
// may enter (the attacker test runs it as nobody).
func sctraceExe(t *testing.T) string {
	t.Helper()
	testenv.NeedQEMU(t)
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sctrace-test-bin-")
		if err != nil {
			buildErr = err
			return
		}
		os.Chmod(dir, 0o755)
		builtExe = filepath.Join(dir, "sctrace")
		if out, err := exec.Command("go", "build", "-o", builtExe, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtExe
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtExe != "" {
		os.RemoveAll(filepath.Dir(builtExe))
	}
	os.Exit(code)
}

// faultEnv is one test's private temporary directory (sctrace's TMPDIR)
// and a QEMU wrapper that records QEMU's pid.
type faultEnv struct {
	t       *testing.T
	exe     string
	tmp     string // TMPDIR for sctrace: must be empty of sctrace-* at the end
	work    string // files of the test
	wrapper string // --qemu: writes its pid to pidFile, sleeps $SCTRACE_TEST_DELAY, execs QEMU
	pidFile string
}

func newFaultEnv(t *testing.T) *faultEnv {
	t.Helper()
	e := &faultEnv{t: t, exe: sctraceExe(t), tmp: t.TempDir(), work: t.TempDir()}
	// Let other users walk to the directories sctrace makes: only their
	// own modes may keep them out.
	for _, d := range []string{e.tmp, filepath.Dir(e.tmp)} {
		os.Chmod(d, 0o755)
	}
	e.pidFile = filepath.Join(e.work, "qemu.pid")
	e.wrapper = filepath.Join(e.work, "qemu-wrapper")
	real, err := exec.LookPath(qemu.BinaryName)
	if err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf("#!/bin/sh\necho $$ > %s\nsleep ${SCTRACE_TEST_DELAY:-0}\nexec %s \"$@\"\n", e.pidFile, real)
	if err := os.WriteFile(e.wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if pid := e.qemuPid(); pid > 0 && running(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return e
}

// command prepares sctrace with args, its TMPDIR the env's, extra
// environment variables env.
func (e *faultEnv) command(env []string, args ...string) (*exec.Cmd, *qemu.Output, *qemu.Output) {
	cmd := exec.Command(e.exe, args...)
	cmd.Env = append(append(os.Environ(), "TMPDIR="+e.tmp), env...)
	cmd.Dir = e.work
	var out, errb qemu.Output // written by the command while the test reads
	cmd.Stdout, cmd.Stderr = &out, &errb
	return cmd, &out, &errb
}

// qemuPid is the pid the wrapper wrote (QEMU's, after exec), or 0.
func (e *faultEnv) qemuPid() int {
	b, err := os.ReadFile(e.pidFile)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// waitWire polls a wire log until it holds n single-step requests.
func waitSteps(t *testing.T, wire string, n int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(wire)
		if bytes.Count(b, []byte("-> s\n")) >= n {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("no %d steps in the wire log within %v", n, d)
}

// exitWithin waits for cmd to end (starting it first if need be), killing
// it after d.
func exitWithin(t *testing.T, cmd *exec.Cmd, d time.Duration) error {
	t.Helper()
	if cmd.Process == nil {
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		cmd.Process.Kill()
		<-done
		t.Fatalf("sctrace did not end within %v", d)
		return nil
	}
}

// running reports whether pid exists and is not a zombie.
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

// checkNothingLeft checks that the QEMU sctrace started is gone and that
// no sctrace temporary directory is left.
func (e *faultEnv) checkNothingLeft() {
	e.t.Helper()
	if pid := e.qemuPid(); pid > 0 {
		deadline := time.Now().Add(3 * time.Second)
		for running(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if running(pid) {
			e.t.Errorf("qemu (pid %d) still running after sctrace ended", pid)
		}
	}
	ents, _ := os.ReadDir(e.tmp)
	for _, ent := range ents {
		if strings.HasPrefix(ent.Name(), "sctrace-") {
			e.t.Errorf("temporary %s left behind", filepath.Join(e.tmp, ent.Name()))
		}
	}
}

var signalCause = map[syscall.Signal]string{
	syscall.SIGHUP:  "hangup signal received",
	syscall.SIGTERM: "terminated signal received",
	syscall.SIGQUIT: "quit signal received",
	syscall.SIGINT:  "interrupt signal received",
}

// TestSignalMidRecord sends each stop signal to `sctrace run --trace` in
// the middle of a recording (QEMU frozen there, so that the recording
// cannot finish first): the steps recorded so far must be saved to --out,
// QEMU ended and the temporary directories removed.
func TestSignalMidRecord(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGTERM, syscall.SIGQUIT} {
		t.Run(signalCause[sig], func(t *testing.T) {
			e := newFaultEnv(t)
			out := filepath.Join(e.work, "t.json")
			wire := filepath.Join(e.work, "wire.log")
			cmd, _, stderr := e.command(nil, "run", "--trace", "--accel", "tcg", "--qemu", e.wrapper,
				"--format", "json", "--out", out, "--wire-log", wire, "--timeout", "30s")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			waitSteps(t, wire, 10, 30*time.Second)
			syscall.Kill(e.qemuPid(), syscall.SIGSTOP)
			time.Sleep(100 * time.Millisecond) // sctrace now waits on a step
			cmd.Process.Signal(sig)
			err := exitWithin(t, cmd, 10*time.Second)
			if err == nil {
				t.Fatalf("sctrace exited 0 after %v", sig)
			}
			msg := stderr.String()
			if !strings.Contains(msg, "interrupted ("+signalCause[sig]+")") || !strings.Contains(msg, "steps recorded are written to "+out+"\n") {
				t.Errorf("message:\n%s", msg)
			}
			// The user's signal is the whole story: no internal error
			// string after the file name.
			if strings.Contains(msg, context.Canceled.Error()) {
				t.Errorf("message names the internal cancellation:\n%s", msg)
			}
			tr, rerr := trace.ReadFile(out)
			if rerr != nil {
				t.Fatalf("saved trace: %v", rerr)
			}
			if tr.Len() < 5 || tr.Step(0).Symbol != "user_syscall_insn" {
				t.Errorf("saved trace has %d steps", tr.Len())
			}
			e.checkNothingLeft()
		})
	}
}

// cpuTicks returns the user+system CPU time of pid, in clock ticks.
func cpuTicks(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	u, _ := strconv.Atoi(f[11])
	s, _ := strconv.Atoi(f[12])
	return u + s
}

// TestSignalMidWaitAttach sends each stop signal to `sctrace trace
// --attach` while it waits for an int $0x80 that the guest (looping on
// syscall) never makes: sctrace must say it was interrupted, detach (the
// wire log ends with D), and leave the guest running: a guest stopped at
// a breakpoint left behind, or paused, burns no CPU.
func TestSignalMidWaitAttach(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGTERM, syscall.SIGQUIT} {
		t.Run(signalCause[sig], func(t *testing.T) {
			e := newFaultEnv(t)
			// Attach once the kernel runs its loop (before that the CPU is
			// in the firmware, where sctrace refuses to look for a call).
			inst := kerneltest.StartLoop(t, e.work, 20*time.Second)
			wire := filepath.Join(e.work, "wire.log")
			cmd, _, stderr := e.command(nil, "trace", "--attach", inst.GDBAddr, "-m", "int80", "--wire-log", wire)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(20 * time.Second)
			for !strings.Contains(stderr.String(), "waiting for the guest's next int80") && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			cmd.Process.Signal(sig)
			if err := exitWithin(t, cmd, 10*time.Second); err == nil {
				t.Fatalf("sctrace exited 0 after %v", sig)
			}
			msg := stderr.String()
			if !strings.Contains(msg, "interrupted ("+signalCause[sig]+"); nothing had been recorded") {
				t.Errorf("message:\n%s", msg)
			}
			if strings.Contains(msg, context.Canceled.Error()) {
				t.Errorf("message names the internal cancellation:\n%s", msg)
			}
			log, _ := os.ReadFile(wire)
			lines := strings.Split(strings.TrimSpace(string(log)), "\n")
			var sent []string
			for _, l := range lines {
				if _, p, ok := strings.Cut(l, " -> "); ok {
					sent = append(sent, p)
				}
			}
			if len(sent) == 0 || !strings.HasPrefix(sent[len(sent)-1], "D") {
				t.Errorf("last packet sent: %q, want D (detach)", sent[len(sent)-1:])
			}
			// A guest left paused at the stub costs QEMU next to no CPU; a
			// running one (the teaching kernel loops on its system call)
			// keeps a vCPU busy. On a loaded machine it may get only a
			// share of a core, hence the low bar over two seconds.
			c0 := cpuTicks(t, inst.Pid())
			time.Sleep(2 * time.Second)
			if c1 := cpuTicks(t, inst.Pid()); c1-c0 < 5 {
				t.Errorf("the guest does not run after sctrace left: %d CPU ticks in 2s", c1-c0)
			}
			e.checkNothingLeft()
		})
	}
}

// TestKeepPrivate runs `sctrace run --trace --keep` and checks that the
// QEMU left running listens on no TCP port, that its gdbstub socket is in
// a 0700 directory of ours, that another user cannot connect to it (while
// the same user can connect to a socket that is not so protected), that
// --keep's message says how to reach it, and that the next start of
// sctrace removes the directory once QEMU has ended.
func TestKeepPrivate(t *testing.T) {
	e := newFaultEnv(t)
	cmd, _, stderr := e.command(nil, "run", "--trace", "--accel", "tcg", "--qemu", e.wrapper, "--keep")
	if err := exitWithin(t, cmd, 60*time.Second); err != nil {
		t.Fatalf("run --keep: %v\n%s", err, stderr)
	}
	pid := e.qemuPid()
	if !running(pid) {
		t.Fatalf("kept qemu (pid %d) is not running", pid)
	}
	ents, _ := filepath.Glob(filepath.Join(e.tmp, "sctrace-qemu-*"))
	if len(ents) != 1 {
		t.Fatalf("socket directories: %v", ents)
	}
	dir, sock := ents[0], filepath.Join(ents[0], "gdb.sock")
	for _, want := range []string{"qemu left running (pid " + strconv.Itoa(pid) + ")", sock, "gdb -ex 'target remote " + sock + "'", "sctrace trace --attach unix:" + sock} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("--keep's message lacks %q:\n%s", want, stderr)
		}
	}
	if ports := listeningTCP(t, pid); len(ports) != 0 {
		t.Errorf("kept qemu listens on TCP ports %v", ports)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o700 || int(st.Uid) != os.Getuid() {
		t.Errorf("socket directory mode %v owner %d", fi.Mode().Perm(), st.Uid)
	}
	if os.Getuid() == 0 {
		// A local attacker: another user runs sctrace probe at the socket.
		// As a control, the same attacker reaches an unprotected socket.
		open := filepath.Join(e.tmp, "open.sock")
		l, err := net.Listen("unix", open)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		os.Chmod(open, 0o777)
		attack := func(addr string) (string, error) {
			out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
				e.exe, "probe", addr, "--timeout", "1s").CombinedOutput()
			return string(out), err
		}
		if out, _ := attack("unix:" + open); strings.Contains(out, "permission denied") {
			t.Fatalf("control: nobody cannot reach an open socket either: %s", out)
		}
		out, err := attack("unix:" + sock)
		if err == nil || !strings.Contains(out, "permission denied") {
			t.Errorf("nobody probing the kept qemu: %v\n%s", err, out)
		}
	} else {
		t.Log("not root: the other-user attacker is skipped (setpriv needs root)")
	}
	// The owner reaches it, as the message says.
	probe, _, perr := e.command(nil, "probe", "unix:"+sock, "--timeout", "5s")
	if err := exitWithin(t, probe, 20*time.Second); err != nil {
		t.Errorf("probe by the owner: %v\n%s", err, perr)
	}
	syscall.Kill(pid, syscall.SIGTERM)
	for running(pid) {
		time.Sleep(20 * time.Millisecond)
	}
	ver, _, _ := e.command(nil, "version")
	if err := exitWithin(t, ver, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	e.checkNothingLeft()
}

// listeningTCP returns the TCP ports pid listens on (see qemu's tests).
func listeningTCP(t *testing.T, pid int) []string {
	t.Helper()
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	inodes := map[string]bool{}
	for _, fd := range fds {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[l[len("socket:["):len(l)-1]] = true
		}
	}
	if len(inodes) == 0 {
		t.Fatalf("qemu (pid %d) has no socket", pid)
	}
	var ports []string
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, _ := os.ReadFile(table)
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 9 && f[3] == "0A" && inodes[f[9]] {
				ports = append(ports, f[1])
			}
		}
	}
	return ports
}

// TestQEMUFaults makes QEMU fail in several ways and checks that the
// message says how it ended, with its stderr and the console, that a
// partial trace is saved, and that nothing is left behind.
func TestQEMUFaults(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		env   []string
		fault func(e *faultEnv, wire string) // done mid-record; nil for none
		want  []string
		steps bool // a partial trace is saved
	}{
		{name: "unknown cpu", args: []string{"--cpu", "bogus"},
			want: []string{"qemu exited before its gdbstub listened", "exited with status 1", "unable to find CPU model 'bogus'"}},
		{name: "qemu is /bin/false", args: []string{"--qemu", "/bin/false"},
			want: []string{"/bin/false is not a QEMU system emulator"}},
		{name: "slow start", env: []string{"SCTRACE_TEST_DELAY=2"}, want: nil},
		{name: "killed mid-record", steps: true,
			fault: func(e *faultEnv, wire string) {
				waitSteps(e.t, wire, 10, 30*time.Second)
				syscall.Kill(e.qemuPid(), syscall.SIGKILL)
			},
			want: []string{"connection closed by the stub", "was killed by SIGKILL", "the guest's console ends:", "trace ready mech=syscall"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newFaultEnv(t)
			out := filepath.Join(e.work, "t.json")
			wire := filepath.Join(e.work, "wire.log")
			args := append([]string{"run", "--trace", "--accel", "tcg", "--qemu", e.wrapper, "--format", "json", "--out", out, "--wire-log", wire}, tt.args...)
			cmd, _, stderr := e.command(tt.env, args...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			if tt.fault != nil {
				tt.fault(e, wire)
			}
			err := exitWithin(t, cmd, 60*time.Second)
			if (err == nil) != (tt.want == nil) {
				t.Fatalf("sctrace: %v\n%s", err, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("message lacks %q:\n%s", w, stderr)
				}
			}
			if tt.steps || tt.want == nil {
				tr, err := trace.ReadFile(out)
				if err != nil || tr.Len() == 0 {
					t.Errorf("saved trace: %v", err)
				}
			}
			e.checkNothingLeft()
		})
	}
}

// TestStaleTempCleaned kills sctrace with SIGKILL mid-record, which leaves
// its temporary directories behind (QEMU dies with it), and checks that the
// next sctrace to start removes them, and leaves a directory that is not
// sctrace's alone.
func TestStaleTempCleaned(t *testing.T) {
	e := newFaultEnv(t)
	wire := filepath.Join(e.work, "wire.log")
	cmd, _, _ := e.command(nil, "run", "--trace", "--accel", "tcg", "--qemu", e.wrapper, "--wire-log", wire, "--timeout", "30s")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitSteps(t, wire, 5, 30*time.Second)
	syscall.Kill(e.qemuPid(), syscall.SIGSTOP)
	cmd.Process.Kill()
	cmd.Wait()
	left, _ := filepath.Glob(filepath.Join(e.tmp, "sctrace-*"))
	if len(left) < 2 {
		t.Fatalf("after SIGKILL, temporary directories %v: want the kernel's and the socket's", left)
	}
	foreign := filepath.Join(e.tmp, "sctrace-not-ours")
	if err := os.Mkdir(foreign, 0o700); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for running(e.qemuPid()) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	ver, _, _ := e.command(nil, "version")
	if err := exitWithin(t, ver, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Errorf("a directory without sctrace's marker was removed: %v", err)
	}
	os.Remove(foreign)
	e.checkNothingLeft()
}

// TestKeepAttachHint runs `sctrace run --trace --keep -m ud2` and then the
// `sctrace trace --attach` command its message prints, word for word: the
// teaching kernel's program now loops on ud2 and never makes a syscall, so
// the hint must carry the mechanism for the attach to record anything.
func TestKeepAttachHint(t *testing.T) {
	e := newFaultEnv(t)
	cmd, _, stderr := e.command(nil, "run", "--trace", "--accel", "tcg", "--qemu", e.wrapper, "--keep", "-m", "ud2")
	if err := exitWithin(t, cmd, 60*time.Second); err != nil {
		t.Fatalf("run --keep: %v\n%s", err, stderr)
	}
	pid := e.qemuPid()
	defer func() {
		syscall.Kill(pid, syscall.SIGTERM)
		for running(pid) {
			time.Sleep(20 * time.Millisecond)
		}
	}()
	var hint []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[0] == "sctrace" && f[1] == "trace" {
			hint = f[1:]
		}
	}
	if hint == nil {
		t.Fatalf("--keep's message has no sctrace trace command:\n%s", stderr)
	}
	out := filepath.Join(e.work, "attach.json")
	attach, _, aerr := e.command(nil, append(hint, "--format", "json", "--out", out)...)
	if err := attach.Start(); err != nil {
		t.Fatal(err)
	}
	// The guest makes its ud2 in a moment; a syscall never comes.
	deadline := time.AfterFunc(30*time.Second, func() { attach.Process.Signal(os.Interrupt) })
	err := attach.Wait()
	if !deadline.Stop() {
		t.Fatalf("sctrace %s was still waiting after 30s:\n%s", strings.Join(hint, " "), aerr)
	}
	if err != nil {
		t.Fatalf("sctrace %s: %v\n%s", strings.Join(hint, " "), err, aerr)
	}
	tr, err := trace.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if got := tr.Header.Mechanism; got != string(mechanism.UD2) {
		t.Errorf("attach recorded %q, want %q", got, mechanism.UD2)
	}
}

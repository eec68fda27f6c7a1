// Package qemu starts and stops qemu-system-x86_64 for sctrace: the bundled
// teaching kernel or a Linux kernel, with the gdbstub on a Unix socket in a
// private directory, the serial console captured, and the isa-debug-exit
// device decoded.
//
// The gdbstub is the only way into a QEMU started here (its monitor is
// off, and reachable only through the stub's qRcmd), and whoever can
// connect to the stub can make QEMU run host commands. So the stub listens
// on a Unix socket in a directory of mode 0700: only this user gets in.
// Config.GDBTCP opts back into a loopback TCP port, which every local user
// can reach.
//
// An Instance is always ended by Stop, which never blocks for long: QEMU is
// asked to quit with SIGTERM and killed if it has not gone within a grace
// period. The socket's directory is removed when QEMU ends while this
// process runs; when QEMU outlives it (Config.Keep), the directory stays as
// long as QEMU runs and the next sctrace to start removes it afterwards
// (see package scratch).
package qemu

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sctrace/sctrace/internal/scratch"
)

// BinaryName is the QEMU system emulator sctrace runs.
const BinaryName = "qemu-system-x86_64"

// InstallHint tells a user how to get QEMU on a Debian-like system.
const InstallHint = "install it with: apt-get update && apt-get install -y qemu-system-x86 (or run `make setup`)"

// ErrNotInstalled is returned when QEMU cannot be found.
var ErrNotInstalled = errors.New(BinaryName + " not found")

// DefaultCPU is the guest CPU model for the teaching kernel: qemu64 with an
// Intel vendor string, so that SYSENTER and SYSEXIT work in 64-bit mode under
// TCG (with the default AMD vendor they raise #UD, as on AMD hardware).
const DefaultCPU = "qemu64,vendor=GenuineIntel"

// Find returns the path of the QEMU binary: path itself when it is not empty,
// otherwise the first qemu-system-x86_64 on $PATH.
func Find(path string) (string, error) {
	if path != "" {
		st, err := os.Stat(path)
		if err != nil {
			return "", fmt.Errorf("qemu binary %s: %w", path, err)
		}
		if st.IsDir() || st.Mode()&0o111 == 0 {
			return "", fmt.Errorf("qemu binary %s: not an executable file", path)
		}
		return path, nil
	}
	p, err := exec.LookPath(BinaryName)
	if err != nil {
		return "", fmt.Errorf("%w on $PATH; %s", ErrNotInstalled, InstallHint)
	}
	return p, nil
}

// Version returns the first line of `qemu-system-x86_64 --version`.
func Version(ctx context.Context, bin string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", bin, err)
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line), nil
}

// KVMUsable reports whether /dev/kvm can be opened and answers the
// KVM_GET_API_VERSION ioctl with the stable API version. The reason says why
// not when it cannot.
func KVMUsable() (bool, string) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false, fmt.Sprintf("/dev/kvm: %v", errors.Unwrap(err))
	}
	defer f.Close()
	const kvmGetAPIVersion = 0xAE00
	v, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), kvmGetAPIVersion, 0)
	if errno != 0 {
		return false, fmt.Sprintf("/dev/kvm: KVM_GET_API_VERSION: %v", errno)
	}
	if v != 12 {
		return false, fmt.Sprintf("/dev/kvm: API version %d, want 12", v)
	}
	return true, ""
}

// Config describes one QEMU run.
type Config struct {
	Binary     string    // QEMU binary; "" finds qemu-system-x86_64 on $PATH
	Kernel     string    // -kernel: an ELF with a PVH note, or a bzImage
	Initrd     string    // -initrd, optional
	Append     string    // -append: the kernel command line
	Accel      string    // "tcg" (also "") or "kvm"; package accel chooses
	AccelNote  string    // why that accelerator, for Instance.Note
	CPU        string    // -cpu; "" means DefaultCPU
	Memory     string    // -m; "" means 128M
	SMP        int       // -smp: how many vCPUs; 0 leaves QEMU's default of one (see CheckSMP)
	GDB        bool      // open the gdbstub on a Unix socket in a private directory (Instance.GDBAddr)
	GDBTCP     bool      // with GDB, a free 127.0.0.1 port instead: any local user can connect (and run host commands through the monitor)
	Stopped    bool      // -S: start with the CPU stopped, waiting for the debugger
	ExitDevice bool      // add isa-debug-exit at port 0xf4 so the guest can end QEMU with a status
	Serial     io.Writer // receives the guest's serial console; nil discards it
	// Keep lets QEMU outlive this process. Otherwise QEMU is killed when
	// the process that started it dies, however it dies.
	Keep  bool
	Extra []string // more arguments, appended last
}

// MaxSMP is the most vCPUs QEMU's default x86 machine (pc, i440FX) takes:
// QEMU refuses more with "The max CPUs supported by machine ... is 255".
const MaxSMP = 255

// CheckSMP checks a vCPU count for -smp: at least one, at most MaxSMP.
func CheckSMP(n int) error {
	switch {
	case n < 1:
		return fmt.Errorf("--smp %d: a guest needs at least one vCPU", n)
	case n > MaxSMP:
		return fmt.Errorf("--smp %d: QEMU's pc machine takes at most %d vCPUs", n, MaxSMP)
	}
	return nil
}

// Exit is how a QEMU run ended.
type Exit struct {
	Status int    // QEMU's exit status (-1 when killed by a signal)
	Signal string // the signal that ended QEMU ("SIGKILL"), if any
	// DebugExit is true when the status is odd, an isa-debug-exit device
	// was present, and QEMU reported no error of its own on stderr: the
	// guest wrote Code to port 0xf4, and QEMU exited with (Code<<1)|1.
	DebugExit bool
	Code      int
}

func (e Exit) String() string {
	switch {
	case e.Signal != "":
		return "killed by " + e.Signal
	case e.DebugExit:
		return fmt.Sprintf("guest exit code %d (qemu status %d)", e.Code, e.Status)
	default:
		return fmt.Sprintf("qemu status %d", e.Status)
	}
}

// signalName names a signal as in C ("SIGKILL").
func signalName(sig syscall.Signal) string {
	names := map[syscall.Signal]string{
		syscall.SIGHUP: "SIGHUP", syscall.SIGINT: "SIGINT", syscall.SIGQUIT: "SIGQUIT",
		syscall.SIGILL: "SIGILL", syscall.SIGTRAP: "SIGTRAP", syscall.SIGABRT: "SIGABRT",
		syscall.SIGBUS: "SIGBUS", syscall.SIGFPE: "SIGFPE", syscall.SIGKILL: "SIGKILL",
		syscall.SIGUSR1: "SIGUSR1", syscall.SIGSEGV: "SIGSEGV", syscall.SIGUSR2: "SIGUSR2",
		syscall.SIGPIPE: "SIGPIPE", syscall.SIGALRM: "SIGALRM", syscall.SIGTERM: "SIGTERM",
		syscall.SIGXCPU: "SIGXCPU", syscall.SIGXFSZ: "SIGXFSZ", syscall.SIGSYS: "SIGSYS",
	}
	if n, ok := names[sig]; ok {
		return n
	}
	return fmt.Sprintf("signal %d (%v)", int(sig), sig)
}

// qemuError reports whether QEMU's stderr holds a message other than a
// warning: QEMU failed by itself (bad option, unknown CPU, unreadable
// kernel) and exited with status 1, which isa-debug-exit would otherwise
// read as the guest's exit code 0.
func qemuError(stderr string) bool {
	for _, line := range strings.Split(stderr, "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.Contains(line, "warning:") {
			return true
		}
	}
	return false
}

// Instance is a running QEMU.
type Instance struct {
	GDBAddr   string   // "unix:PATH" (or "127.0.0.1:PORT" with Config.GDBTCP) when Config.GDB was set
	GDBSocket string   // the gdbstub's Unix socket, inside Dir ("" with Config.GDBTCP)
	Dir       string   // the socket's private directory (0700), removed when QEMU ends while this process runs
	Accel     string   // the accelerator in use
	Note      string   // why that accelerator was chosen
	CPU       string   // the -cpu model QEMU runs
	Args      []string // the full command line, binary first

	cfg      Config
	cmd      *exec.Cmd
	stderr   *Output
	done     chan struct{}
	exit     Exit
	waitErr  error
	stopOnce sync.Once
	// listened is set once the gdbstub listened: with Config.Stopped the
	// guest cannot have run (nor written to isa-debug-exit) before.
	listened atomic.Bool
}

// Start launches QEMU. With Config.GDB it returns once the gdbstub is
// listening (or fails if QEMU dies first); the caller must call Stop.
func Start(ctx context.Context, cfg Config) (*Instance, error) {
	bin, err := Find(cfg.Binary)
	if err != nil {
		return nil, err
	}
	if _, err := Check(ctx, bin); err != nil {
		return nil, err
	}
	accel := cmp.Or(cfg.Accel, "tcg")
	if accel != "tcg" && accel != "kvm" {
		return nil, fmt.Errorf("qemu: accelerator %q: want tcg or kvm", cfg.Accel)
	}
	note := cmp.Or(cfg.AccelNote, accel)
	if cfg.Kernel != "" {
		if _, err := os.Stat(cfg.Kernel); err != nil {
			return nil, fmt.Errorf("kernel: %w", err)
		}
	}
	inst := &Instance{Accel: accel, Note: note, CPU: cmp.Or(cfg.CPU, DefaultCPU), cfg: cfg, done: make(chan struct{}), stderr: &Output{}}
	args := []string{
		"-accel", accel,
		"-cpu", cmp.Or(cfg.CPU, DefaultCPU),
		"-m", cmp.Or(cfg.Memory, "128M"),
		"-display", "none", "-nodefaults", "-no-reboot",
		"-monitor", "none",
		"-serial", "stdio",
	}
	if cfg.SMP != 0 {
		if err := CheckSMP(cfg.SMP); err != nil {
			return nil, err
		}
		if cfg.SMP > 1 {
			args = append(args, "-smp", strconv.Itoa(cfg.SMP))
		}
	}
	if cfg.Kernel != "" {
		args = append(args, "-kernel", cfg.Kernel)
	}
	if cfg.Initrd != "" {
		args = append(args, "-initrd", cfg.Initrd)
	}
	if cfg.Append != "" {
		args = append(args, "-append", cfg.Append)
	}
	if cfg.ExitDevice {
		args = append(args, "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04")
	}
	if cfg.Stopped {
		args = append(args, "-S")
	}
	var port int
	if cfg.GDB {
		if cfg.GDBTCP {
			port, err = freePort()
			if err != nil {
				return nil, err
			}
			inst.GDBAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			args = append(args, "-gdb", "tcp:"+inst.GDBAddr)
		} else {
			if inst.Dir, err = scratch.Dir("qemu-"); err != nil {
				return nil, err
			}
			inst.GDBSocket = filepath.Join(inst.Dir, "gdb.sock")
			if len(inst.GDBSocket) >= maxSocketPath {
				os.RemoveAll(inst.Dir)
				return nil, fmt.Errorf("gdbstub socket path %s is longer than a Unix socket address allows (%d bytes); set TMPDIR to a shorter directory", inst.GDBSocket, maxSocketPath-1)
			}
			inst.GDBAddr = "unix:" + inst.GDBSocket
			// server=on: QEMU listens; wait=off: it does not wait for a
			// client before running (-S alone keeps the CPU stopped).
			args = append(args, "-gdb", "unix:"+inst.GDBSocket+",server=on,wait=off")
		}
	}
	args = append(args, cfg.Extra...)
	inst.Args = append([]string{bin}, args...)

	cmd := exec.Command(bin, args...)
	// Stdin is /dev/null so that QEMU's stdio chardev never puts the user's
	// terminal into raw mode.
	cmd.Stdin = nil
	cmd.Stdout = cmp.Or(cfg.Serial, io.Discard)
	cmd.Stderr = inst.stderr
	// Own process group: a ctrl-c in the terminal reaches sctrace, which
	// then decides how to end QEMU, rather than killing it behind our back.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if !cfg.Keep {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if err := cmd.Start(); err != nil {
		if inst.Dir != "" {
			os.RemoveAll(inst.Dir)
		}
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	inst.cmd = cmd
	go inst.wait()
	if cfg.Keep && inst.Dir != "" {
		// QEMU may outlive this process: it then holds the directory.
		if err := scratch.AddHolder(inst.Dir, cmd.Process.Pid); err != nil {
			inst.Stop()
			return nil, err
		}
	}

	if cfg.GDB {
		if err := inst.waitListening(ctx, port); err != nil {
			inst.Stop()
			return nil, err
		}
	}
	return inst, nil
}

// maxSocketPath is the size of sun_path in a Unix socket address on Linux.
const maxSocketPath = 108

func (i *Instance) wait() {
	err := i.cmd.Wait()
	e := Exit{Status: i.cmd.ProcessState.ExitCode()}
	if ws, ok := i.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		e.Signal = signalName(ws.Signal())
		e.Status = -1
	}
	guestRan := !i.cfg.Stopped || i.listened.Load()
	if i.cfg.ExitDevice && guestRan && e.Status > 0 && e.Status%2 == 1 && !qemuError(i.stderr.String()) {
		e.DebugExit = true
		e.Code = e.Status >> 1
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		i.waitErr = err
	}
	i.exit = e
	if i.Dir != "" {
		os.RemoveAll(i.Dir)
	}
	close(i.done)
}

// waitListening polls until QEMU's gdbstub listens: on its Unix socket, or
// on port with Config.GDBTCP. It reads the kernel's socket tables instead
// of connecting, because a connection to the stub stops the guest and
// resets the stub's state.
func (i *Instance) waitListening(ctx context.Context, port int) error {
	where := i.GDBAddr
	ready := func() bool { return listeningUnix(i.GDBSocket) }
	if i.cfg.GDBTCP {
		ready = func() bool { return listeningTCP(port) }
	}
	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if ready() {
			i.listened.Store(true)
			return nil
		}
		select {
		case <-i.done:
			return fmt.Errorf("qemu exited before its gdbstub listened: %s", i.Report())
		case <-ctx.Done():
			return fmt.Errorf("waiting for qemu's gdbstub at %s: %w", where, ctx.Err())
		case <-deadline.C:
			return fmt.Errorf("qemu's gdbstub did not listen at %s within 15s: %s", where, i.Report())
		case <-tick.C:
		}
	}
}

// listeningTCP reports whether a TCP socket on 127.0.0.1:port (or any
// address) is in the LISTEN state, from /proc/net/tcp. Where that file
// cannot be read it says yes, and the debugger's dial retries instead.
func listeningTCP(port int) bool {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return true
	}
	defer f.Close()
	want := fmt.Sprintf(":%04X", port)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 3 && strings.HasSuffix(fields[1], want) && fields[3] == "0A" {
			return true
		}
	}
	return false
}

// listeningUnix reports whether a Unix stream socket bound to path is
// listening, from /proc/net/unix: its flags hold __SO_ACCEPTCON (0x10000).
// Where that file cannot be read it says whether path exists as a socket.
func listeningUnix(path string) bool {
	socks, err := UnixSockets(path)
	if err != nil {
		fi, err := os.Stat(path)
		return err == nil && fi.Mode()&os.ModeSocket != 0
	}
	for _, s := range socks {
		if s.Listening {
			return true
		}
	}
	return false
}

// A UnixSocket is a line of /proc/net/unix.
type UnixSocket struct {
	Inode     uint64
	Listening bool // a server socket accepting connections
	Connected bool // one end of an established connection (state SS_CONNECTED)
	Path      string
}

// UnixSockets lists the Unix sockets bound to path (all of them when path
// is ""), from /proc/net/unix. A server's accepted connections carry its
// path too: a Connected entry with the path of a listening socket is a
// client attached to it.
func UnixSockets(path string) ([]UnixSocket, error) {
	f, err := os.Open("/proc/net/unix")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []UnixSocket
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		// Num RefCount Protocol Flags Type St Inode [Path]
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 {
			continue
		}
		p := ""
		if len(fields) > 7 {
			p = strings.Join(fields[7:], " ")
		}
		if path != "" && p != path {
			continue
		}
		flags, _ := strconv.ParseUint(fields[3], 16, 32)
		inode, _ := strconv.ParseUint(fields[6], 10, 64)
		out = append(out, UnixSocket{
			Inode:     inode,
			Listening: flags&0x10000 != 0,
			Connected: fields[5] == "03",
			Path:      p,
		})
	}
	return out, sc.Err()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free loopback port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Done is closed when QEMU has exited.
func (i *Instance) Done() <-chan struct{} { return i.done }

// Wait waits for QEMU to exit and says how it ended.
func (i *Instance) Wait() (Exit, error) {
	<-i.done
	return i.exit, i.waitErr
}

// WaitContext is Wait bounded by ctx: when ctx ends first, QEMU is stopped
// and the context's error returned.
func (i *Instance) WaitContext(ctx context.Context) (Exit, error) {
	select {
	case <-i.done:
		return i.exit, i.waitErr
	case <-ctx.Done():
		i.Stop()
		return i.exit, fmt.Errorf("qemu still running: %w", ctx.Err())
	}
}

// Stop ends QEMU: SIGTERM, then SIGKILL after two seconds. It is safe to call
// more than once and after QEMU has exited.
func (i *Instance) Stop() error {
	i.stopOnce.Do(func() {
		select {
		case <-i.done:
			return
		default:
		}
		_ = i.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-i.done:
		case <-time.After(2 * time.Second):
			_ = i.cmd.Process.Kill()
			<-i.done
		}
	})
	return nil
}

// Pid returns QEMU's process id.
func (i *Instance) Pid() int { return i.cmd.Process.Pid }

// StderrTail returns the last lines QEMU wrote to its standard error.
func (i *Instance) StderrTail() string {
	s := strings.TrimSpace(i.stderr.String())
	if s == "" {
		return "(no output on stderr)"
	}
	lines := strings.Split(s, "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, "; ")
}

// State says what QEMU is doing now, for a message about a stub that went
// quiet or away: how it ended (status or signal), or that it is frozen
// (stopped by SIGSTOP or a debugger), or that it still runs.
func (i *Instance) State() string {
	who := fmt.Sprintf("qemu (pid %d)", i.Pid())
	select {
	case <-i.done:
		e := i.exit
		switch {
		case e.Signal != "":
			return who + " was killed by " + e.Signal
		case e.DebugExit:
			return fmt.Sprintf("%s exited with status %d (the guest's exit code %d through isa-debug-exit)", who, e.Status, e.Code)
		case e.Status == 0:
			// -no-reboot turns a guest reset, a triple fault included,
			// into QEMU's exit.
			return who + " exited with status 0 (the guest shut down or reset; a triple fault resets it)"
		default:
			return fmt.Sprintf("%s exited with status %d", who, e.Status)
		}
	default:
	}
	if st := procState(i.Pid()); st == "T" || st == "t" {
		return who + " is stopped (frozen by SIGSTOP or held by a debugger), not running"
	}
	return who + " is still running"
}

// Report is State followed by the last lines of QEMU's stderr.
func (i *Instance) Report() string {
	s := strings.TrimSpace(i.stderr.String())
	if s == "" {
		return i.State() + "; nothing on its stderr"
	}
	return i.State() + "; its stderr ends: " + i.StderrTail()
}

// Exited waits up to d for QEMU to end and reports whether it has: an
// error from the stub (a closed connection) is explained by QEMU's end
// only once QEMU has been reaped.
func (i *Instance) Exited(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-i.done:
		return true
	case <-t.C:
		return false
	}
}

// procState returns the state letter of process pid (R, S, T, Z, ...) from
// /proc/PID/stat, or "" when it cannot be read.
func procState(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	k := strings.LastIndexByte(s, ')')
	if k < 0 || k+3 > len(s) {
		return ""
	}
	return s[k+2 : k+3]
}

// CommandLine returns the QEMU command line, quoted for a shell.
func (i *Instance) CommandLine() string {
	q := make([]string, len(i.Args))
	for k, a := range i.Args {
		if strings.ContainsAny(a, " \"'$;&|") {
			a = strconv.Quote(a)
		}
		q[k] = a
	}
	return strings.Join(q, " ")
}

// Output collects what QEMU or its guest writes (stderr, a serial
// console), safe to read while it is being written. It keeps the recent
// output only: once it holds more than 64 KiB it starts again.
type Output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *Output) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 64<<10 {
		l.b.Reset()
	}
	return l.b.Write(p)
}

// String returns what was collected.
func (l *Output) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

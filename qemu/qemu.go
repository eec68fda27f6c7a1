// Package qemu starts and stops qemu-system-x86_64 for sctrace: the bundled
// teaching kernel or a Linux kernel, with the gdbstub on a free loopback port,
// the serial console captured, and the isa-debug-exit device decoded.
//
// An Instance is always ended by Stop, which never blocks for long: QEMU is
// asked to quit with SIGTERM and killed if it has not gone within a grace
// period.
package qemu

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
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
	GDB        bool      // open the gdbstub on a free 127.0.0.1 port (Instance.GDBAddr)
	Stopped    bool      // -S: start with the CPU stopped, waiting for the debugger
	ExitDevice bool      // add isa-debug-exit at port 0xf4 so the guest can end QEMU with a status
	Serial     io.Writer // receives the guest's serial console; nil discards it
	// Keep lets QEMU outlive this process. Otherwise QEMU is killed when
	// the process that started it dies, however it dies.
	Keep  bool
	Extra []string // more arguments, appended last
}

// Exit is how a QEMU run ended.
type Exit struct {
	Status int    // QEMU's exit status (-1 when killed by a signal)
	Signal string // the signal that ended QEMU, if any
	// DebugExit is true when the status is odd and an isa-debug-exit device
	// was present: the guest wrote Code to port 0xf4, and QEMU exited with
	// (Code<<1)|1.
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

// Instance is a running QEMU.
type Instance struct {
	GDBAddr string   // "127.0.0.1:PORT" when Config.GDB was set
	Accel   string   // the accelerator in use
	Note    string   // why that accelerator was chosen
	Args    []string // the full command line, binary first

	cfg      Config
	cmd      *exec.Cmd
	stderr   *lockedBuffer
	done     chan struct{}
	exit     Exit
	waitErr  error
	stopOnce sync.Once
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
	accel := or(cfg.Accel, "tcg")
	if accel != "tcg" && accel != "kvm" {
		return nil, fmt.Errorf("qemu: accelerator %q: want tcg or kvm", cfg.Accel)
	}
	note := or(cfg.AccelNote, accel)
	if cfg.Kernel != "" {
		if _, err := os.Stat(cfg.Kernel); err != nil {
			return nil, fmt.Errorf("kernel: %w", err)
		}
	}
	inst := &Instance{Accel: accel, Note: note, cfg: cfg, done: make(chan struct{}), stderr: &lockedBuffer{}}
	args := []string{
		"-accel", accel,
		"-cpu", or(cfg.CPU, DefaultCPU),
		"-m", or(cfg.Memory, "128M"),
		"-display", "none", "-nodefaults", "-no-reboot",
		"-monitor", "none",
		"-serial", "stdio",
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
		port, err = freePort()
		if err != nil {
			return nil, err
		}
		inst.GDBAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		args = append(args, "-gdb", "tcp:"+inst.GDBAddr)
	}
	args = append(args, cfg.Extra...)
	inst.Args = append([]string{bin}, args...)

	cmd := exec.Command(bin, args...)
	// Stdin is /dev/null so that QEMU's stdio chardev never puts the user's
	// terminal into raw mode.
	cmd.Stdin = nil
	cmd.Stdout = or2(cfg.Serial, io.Discard)
	cmd.Stderr = inst.stderr
	// Own process group: a ctrl-c in the terminal reaches sctrace, which
	// then decides how to end QEMU, rather than killing it behind our back.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if !cfg.Keep {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	inst.cmd = cmd
	go inst.wait()

	if cfg.GDB {
		if err := inst.waitListening(ctx, port); err != nil {
			inst.Stop()
			return nil, err
		}
	}
	return inst, nil
}

func (i *Instance) wait() {
	err := i.cmd.Wait()
	e := Exit{Status: i.cmd.ProcessState.ExitCode()}
	if ws, ok := i.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		e.Signal = ws.Signal().String()
		e.Status = -1
	}
	if i.cfg.ExitDevice && e.Status > 0 && e.Status%2 == 1 {
		e.DebugExit = true
		e.Code = e.Status >> 1
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		i.waitErr = err
	}
	i.exit = e
	close(i.done)
}

// waitListening polls until QEMU's gdbstub listens on port. It reads the
// kernel's socket table instead of connecting, because a connection to the
// stub stops the guest and resets the stub's state.
func (i *Instance) waitListening(ctx context.Context, port int) error {
	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if listening(port) {
			return nil
		}
		select {
		case <-i.done:
			return fmt.Errorf("qemu exited before its gdbstub listened (%s): %s", i.exit, i.StderrTail())
		case <-ctx.Done():
			return fmt.Errorf("waiting for qemu's gdbstub on port %d: %w", port, ctx.Err())
		case <-deadline.C:
			return fmt.Errorf("qemu's gdbstub did not listen on port %d within 15s: %s", port, i.StderrTail())
		case <-tick.C:
		}
	}
}

// listening reports whether a TCP socket on 127.0.0.1:port (or any address)
// is in the LISTEN state, from /proc/net/tcp. Where that file cannot be
// read it says yes, and the debugger's dial retries instead.
func listening(port int) bool {
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

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 64<<10 {
		l.b.Reset()
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func or2(w, def io.Writer) io.Writer {
	if w == nil {
		return def
	}
	return w
}

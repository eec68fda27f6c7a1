package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/qemu"
	"github.com/sctrace/sctrace/session"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/tui"
)

func newRunCmd() *cobra.Command {
	var (
		rf    recordFlags
		sf    stubFlags
		doTr  bool
		accel string
		qbin  string
		keep  bool
		cpu   string
		smp   int
		ucpu  string
		tcp   bool
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Boot the bundled teaching kernel under QEMU and trace a system call",
		Long: `run boots the teaching kernel that ships inside sctrace under QEMU (TCG,
unless --accel kvm is given and KVM passes its check here), stopped, with
its gdbstub on a Unix socket in a private directory (only you can connect;
--gdb-tcp uses a loopback port instead, open to every local user); attaches;
runs to the next user instruction that enters the kernel by the chosen
mechanism; and records the round trip back to user mode.

Without --trace it opens the interactive view stopped before that
instruction (? lists the keys); quitting ends QEMU. With --trace the trace
is printed (or saved with --out and --format) and QEMU is ended. --keep
leaves QEMU running afterwards and prints its gdbstub socket, for gdb or
'sctrace trace --attach'.

ctrl-c, SIGHUP (a closed terminal), SIGTERM and SIGQUIT stop recording,
write what was recorded, and end QEMU.` + recordHelpStarted,
		Example: `  sctrace run
  sctrace run --mechanism int80 --syntax intel
  sctrace run --trace
  sctrace run --trace --mechanism sysenter --syntax intel
  sctrace run --trace --mechanism syscall-compat
  sctrace run --trace --format json --out syscall.json
  sctrace run --trace --smp 2 --user-cpu 1
  sctrace run --trace --smp 2 --user-cpu both --on-cpu 0`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			m, syn, err := rf.check()
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("smp") {
				if err := qemu.CheckSMP(smp); err != nil {
					return err
				}
			}
			o := session.Options{QEMU: qbin, Accel: accel, CPU: cpu, SMP: smp, Mechanism: m, Keep: keep, Timeout: sf.timeout}
			if o.UserCPU, err = parseUserCPU(ucpu); err != nil {
				return err
			}
			rf.options(&o)
			if err := o.CheckUserCPU(); err != nil {
				return err
			}
			o.GDBTCP = tcp
			warnTCP(cmd.ErrOrStderr(), tcp)
			closeLog, err := sf.openWireLog(&o)
			if err != nil {
				return err
			}
			defer closeInto(&err, closeLog)
			if !doTr {
				if rf.probe {
					return errProbeWithoutTrace
				}
				return runTUI(cmd, o, m, syn)
			}
			s, err := session.StartFixture(cmd.Context(), o)
			if err != nil {
				return err
			}
			defer s.Close()
			if keep {
				defer sayKept(cmd.ErrOrStderr(), s, m, o)
			}
			return roundTrip(cmd.Context(), cmd.OutOrStdout(), s, m, &rf, syn)
		},
	}
	rf.register(cmd)
	sf.register(cmd)
	fl := cmd.Flags()
	fl.BoolVar(&doTr, "trace", false, "print the recorded round trip instead of opening the interactive view")
	accelFlag(fl, &accel)
	fl.StringVar(&qbin, "qemu", "", "QEMU binary to run (default: qemu-system-x86_64 on $PATH)")
	fl.BoolVar(&keep, "keep", false, "leave QEMU running when sctrace exits")
	fl.BoolVar(&tcp, "gdb-tcp", false, gdbTCPUsage)
	fl.StringVar(&cpu, "cpu", "", "guest CPU model (default qemu64,vendor=GenuineIntel; qemu64 alone shows AMD's #UD on sysenter)")
	fl.IntVar(&smp, "smp", 1, smpUsage)
	fl.StringVar(&ucpu, "user-cpu", "0", "the vCPU the teaching kernel runs its program on: 0, or with --smp 2 1 (it wakes CPU 1 with INIT-SIPI-SIPI) or both (both CPUs run it at once; not for pagefault and irq)")
	return cmd
}

// parseUserCPU reads --user-cpu: a CPU number, or "both".
func parseUserCPU(s string) (int, error) {
	if s == "both" {
		return session.BothCPUs, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("--user-cpu %q: want 0, 1 or both", s)
	}
	return n, nil
}

// runTUI boots the teaching kernel behind a spinner and opens the
// interactive view on it.
func runTUI(cmd *cobra.Command, o session.Options, m mechanism.Mechanism, syn trace.Syntax) error {
	o.StackWords = tui.StackWords
	return bootTUI(cmd, o, "booting the teaching kernel under QEMU", m, syn,
		func(ctx context.Context) (*session.Session, error) { return session.StartFixture(ctx, o) })
}

// bootTUI opens the interactive view on a guest that start boots under
// QEMU, behind a spinner saying starting, and says where QEMU is when it
// is kept running.
func bootTUI(cmd *cobra.Command, o session.Options, starting string, m mechanism.Mechanism, syn trace.Syntax,
	start func(context.Context) (*session.Session, error)) error {
	if _, err := qemu.Find(o.QEMU); err != nil {
		return err
	}
	var s *session.Session
	open := func(ctx context.Context) (*session.Session, error) {
		var err error
		s, err = start(ctx)
		return s, err
	}
	err := tui.Run(cmd.Context(), tui.Config{
		Start:    tui.StartLive(open, m, true),
		Starting: starting,
		Syntax:   syn,
	}, nil, nil)
	if o.Keep && s != nil {
		sayKept(cmd.ErrOrStderr(), s, m, o)
	}
	return err
}

// smpUsage is the help of --smp.
const smpUsage = "vCPUs the guest gets (QEMU's -smp, 1 to 255); the call is followed on the vCPU that makes it"

// errProbeWithoutTrace refuses --probe-msrs where nothing would use it.
var errProbeWithoutTrace = errors.New("--probe-msrs goes with --trace; in the interactive view, press p at a kernel stop")

// sayKept tells where the QEMU that --keep leaves running can be reached,
// with the flags that make `sctrace trace --attach` wait for what the
// guest was started to make (m, o's system call and vCPU), and who
// removes its socket.
func sayKept(w io.Writer, s *session.Session, m mechanism.Mechanism, o session.Options) {
	q := s.QEMU
	if q == nil {
		return
	}
	if q.GDBSocket == "" {
		fmt.Fprintf(w, "qemu left running (pid %d), gdbstub at %s (open to every local user: see --gdb-tcp)\n", q.Pid(), q.GDBAddr)
		return
	}
	fmt.Fprintf(w, `qemu left running (pid %d); its gdbstub listens on the Unix socket
  %s
in a directory only you can enter. Reach it with
  gdb -ex 'target remote %s'
  sctrace trace --attach %s%s
QEMU's monitor is reachable only through the stub ("monitor" in gdb). When
this QEMU ends (kill %d), the next sctrace to start removes the directory.
`, q.Pid(), q.GDBSocket, q.GDBSocket, q.GDBAddr, attachFlags(m, o), q.Pid())
}

// attachFlags returns the flags, each after a space, with which
// `sctrace trace --attach` waits for the entry a guest started with m and o
// makes: its mechanism when not trace's default, and the system call and
// vCPU o chose.
func attachFlags(m mechanism.Mechanism, o session.Options) string {
	var b strings.Builder
	if m != mechanism.Syscall {
		fmt.Fprintf(&b, " -m %s", m)
	}
	if o.Syscall != "" {
		fmt.Fprintf(&b, " --syscall %s", o.Syscall)
	}
	if o.OnCPU != nil {
		fmt.Fprintf(&b, " --on-cpu %d", *o.OnCPU)
	}
	return b.String()
}

// gdbTCPUsage is the help of --gdb-tcp.
const gdbTCPUsage = "put QEMU's gdbstub on a 127.0.0.1 port instead of a private Unix socket: unsafe on a shared machine (any local user can connect and run commands as you through the monitor)"

// warnTCP says why --gdb-tcp is unsafe, when it is given.
func warnTCP(w io.Writer, tcp bool) {
	if tcp {
		fmt.Fprintln(w, "sctrace: warning: --gdb-tcp: QEMU's gdbstub will listen on a loopback TCP port, which every user of this machine can connect to while sctrace is not connected (always, with --keep); through the stub's monitor commands they can make QEMU run programs as you. Use it only on a machine you do not share.")
	}
}

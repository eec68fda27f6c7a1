package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sctrace/sctrace/fixtures/linuxinit"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/qemu"
	"github.com/sctrace/sctrace/session"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/tui"
)

// withSub adds subcommands to cmd and returns it.
func withSub(cmd *cobra.Command, subs ...*cobra.Command) *cobra.Command {
	cmd.AddCommand(subs...)
	return cmd
}

func newRunLinuxCmd() *cobra.Command {
	var (
		rf     recordFlags
		sf     stubFlags
		lo     session.LinuxOptions
		doTr   bool
		timing bool
		exec   string
	)
	cmd := &cobra.Command{
		Use:   "linux --kernel BZIMAGE [--exec PROGRAM [-- ARGS...]]",
		Short: "Boot a Linux kernel under QEMU and trace a system call",
		Long: `run linux boots a Linux bzImage under QEMU with an initramfs sctrace
generates, whose /init loops on a system call (getpid by syscall or by
int $0x80, a vDSO clock_gettime, an unimplemented number, or one of the
calls that run long in the kernel: execve, fork, read, mmap with a page
fault, nanosleep; or int3 and a #GP answered with a signal). Once /init
loops, sctrace stops the CPU, reads the kernel's symbols from its kallsyms
tables in guest memory (no vmlinux or System.map needed), finds the TSS, the
entry and IST stacks from TR's base and the task stack from per-CPU data,
and opens the interactive view on the next system call (or, with --trace,
prints the round trip).

The kernel command line starts with
"` + session.LinuxDefaultAppend + `": nokaslr keeps addresses the same
from run to run, and pti=on forces page table isolation so that the CR3
switches are there to see. --no-pti and --kaslr change
that; --append adds words. scripts/fetch-kernel.sh downloads a Debian
cloud kernel.

--init MODE chooses what /init loops on:
` + initModesHelp() + `

-m pagefault makes /init loop on mmap and traces the page fault of its
first write to the fresh page, from that store through asm_exc_page_fault
and the kernel allocating the page to the iretq back to the same store
(thousands of instructions). -m irq waits, in any loop, for the local APIC
timer's interrupt to arrive in user mode.

-m int3 and -m gpfault make /init's child loop on int3 (#BP) or on hlt in
user mode (#GP), each with a signal handler installed, and trace from
that instruction through asm_exc_int3 or asm_exc_general_protection, the
signal sent (SIGTRAP, SIGSEGV) and its delivery on the way out
(arch_do_signal_or_restart builds the signal frame on the user stack) to
the iretq into the handler. --syscall rt_sigreturn (or -m syscall with
--init int3 or gpfault) traces the handler's way back, from its
restorer's syscall to the instruction after the one that raised it.

--syscall NAME|NR waits for that system call (by the syscall instruction),
letting the others through; names come from the kernel's own
sys_call_table, read through kallsyms. Without --init or --exec, /init
loops on the call when one of its modes makes it.

--exec PROGRAM packs a static x86-64 or i386 ELF program into the
initramfs; /init runs it again and again, with the arguments given after
--, and sctrace traces its next system call (or the one --syscall names).
Build it with gcc -static.

An i386 program runs in compatibility mode (32-bit code under the 64-bit
kernel) and is traced at its int $0x80 (asm_int80_emulation; entry_INT80_compat
in older kernels), or with -m sysenter at its own sysenter (entry_SYSENTER_compat) and with -m syscall
at its own syscall (entry_SYSCALL_compat, the CSTAR entry), made as the
32-bit vDSO's __kernel_vsyscall makes them: push ecx, edx and ebp, then
"mov %esp,%ebp; sysenter" or "mov %ecx,%ebp; syscall"; Linux returns from
both to the vDSO's int80_landing_pad. Only an Intel CPU takes sysenter and
only an AMD one takes syscall from compatibility mode (the other raises
#UD), so without --cpu sctrace runs ` + session.IntelCPU + ` for sysenter
and ` + session.AMDCPU + ` for syscall, and refuses a --cpu of
the other vendor; the trace header names the CPU.` + recordHelpStarted,
		Example: `  sctrace run linux --kernel "$(scripts/fetch-kernel.sh)"
  sctrace run linux --kernel vmlinuz --trace -m int80
  sctrace run linux --kernel vmlinuz --trace -m pagefault
  sctrace run linux --kernel vmlinuz --trace -m int3
  sctrace run linux --kernel vmlinuz --trace --syscall rt_sigreturn
  sctrace run linux --kernel vmlinuz --init execve --trace --budget 5000
  sctrace run linux --kernel vmlinuz --init execve --record log --trace --format trace -o execve.sctrace
  sctrace run linux --kernel vmlinuz --syscall read --trace
  sctrace run linux --kernel vmlinuz --exec ./hello --syscall write --trace -- one two
  sctrace run linux --kernel vmlinuz --exec ./prog32 -m sysenter --trace
  sctrace run linux --kernel vmlinuz --trace --no-pti --over 1`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 && (exec == "" || cmd.ArgsLenAtDash() != 0) {
				return fmt.Errorf("unexpected arguments %q: only --exec's program takes arguments, after --", args)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			start := time.Now()
			m, syn, err := rf.check()
			if err != nil {
				return err
			}
			if exec != "" {
				if lo.Program, err = linuxinit.LoadProgram(exec, args); err != nil {
					return err
				}
			}
			if m, err = lo.ChooseMechanism(m, cmd.Flags().Changed("mechanism")); err != nil {
				return err
			}
			if cmd.Flags().Changed("smp") {
				if err := qemu.CheckSMP(lo.SMP); err != nil {
					return err
				}
			}
			if lo.Kernel == "" {
				return fmt.Errorf("--kernel is required (scripts/fetch-kernel.sh downloads a Debian cloud kernel)")
			}
			lo.Timeout = sf.timeout
			rf.options(&lo.Options)
			if err := lo.CheckOnCPU(); err != nil {
				return err
			}
			warnTCP(cmd.ErrOrStderr(), lo.GDBTCP)
			closeLog, err := sf.openWireLog(&lo.Options)
			if err != nil {
				return err
			}
			defer closeInto(&err, closeLog)
			if !doTr {
				if rf.probe {
					return errProbeWithoutTrace
				}
				return runLinuxTUI(cmd, lo, m, syn)
			}
			status := newStatusLine(cmd.ErrOrStderr(), tui.IsTerminal(cmd.ErrOrStderr()))
			status.Show("booting Linux under QEMU…")
			s, err := session.StartLinux(cmd.Context(), lo)
			status.Clear()
			if err != nil {
				return err
			}
			defer s.Close()
			ready := time.Since(start)
			if lo.Keep {
				defer sayKept(cmd.ErrOrStderr(), s, m, lo.Options)
			}
			t0 := time.Now()
			err = roundTrip(cmd.Context(), cmd.OutOrStdout(), s, m, &rf, syn)
			if timing {
				fmt.Fprintf(cmd.ErrOrStderr(), "timing: ready %.2fs after start (linux booted to /init in %.2fs), round trip recorded and printed in %.2fs\n",
					ready.Seconds(), s.Linux().BootTime.Seconds(), time.Since(t0).Seconds())
			}
			return err
		},
	}
	rf.register(cmd)
	sf.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&lo.Kernel, "kernel", "", "Linux bzImage to boot (`FILE`)")
	fl.StringVar(&lo.Append, "append", "", "more words for the kernel command line")
	fl.BoolVar(&lo.NoPTI, "no-pti", false, "boot with pti=off (no KPTI CR3 switches)")
	fl.BoolVar(&lo.KASLR, "kaslr", false, "leave kernel address randomisation on (drop nokaslr)")
	fl.StringVar(&lo.Mode, "init", "", "what /init loops on: "+linuxinit.ModeList()+"\n(default: follows --mechanism; the modes are listed above)")
	_ = cmd.RegisterFlagCompletionFunc("init", cobra.FixedCompletions(linuxinit.Modes, cobra.ShellCompDirectiveNoFileComp))
	accelFlag(fl, &lo.Accel)
	fl.StringVar(&lo.QEMU, "qemu", "", "QEMU binary to run (default: qemu-system-x86_64 on $PATH)")
	fl.StringVar(&lo.CPU, "cpu", "", "guest CPU model (default "+qemu.DefaultCPU+"; "+session.AMDCPU+" to trace an i386 program's syscall)")
	fl.IntVar(&lo.SMP, "smp", 1, smpUsage)
	fl.StringVar(&lo.Memory, "memory", "", "guest memory, as QEMU's -m (default 256M)")
	fl.DurationVar(&lo.BootTimeout, "boot-timeout", 120*time.Second, "how long to wait for /init to start looping")
	fl.BoolVar(&lo.Keep, "keep", false, "leave QEMU running when sctrace exits")
	fl.BoolVar(&lo.GDBTCP, "gdb-tcp", false, gdbTCPUsage)
	fl.StringVar(&lo.Syscall, "syscall", "", "wait for this system call, by `NAME` or number (read, 0, execve...), letting others through")
	fl.StringVar(&exec, "exec", "", "pack this static x86-64 or i386 `PROGRAM` into the initramfs and trace its system calls;\nits arguments follow --")
	fl.BoolVar(&doTr, "trace", false, "print the recorded round trip instead of opening the interactive view")
	fl.BoolVar(&timing, "timing", false, "with --trace, print how long booting and recording took to standard error")
	return cmd
}

// runLinuxTUI boots Linux behind a spinner and opens the interactive view.
func runLinuxTUI(cmd *cobra.Command, lo session.LinuxOptions, m mechanism.Mechanism, syn trace.Syntax) error {
	if err := session.CheckKernelImage(lo.Kernel); err != nil {
		return err
	}
	lo.StackWords = tui.StackWords
	return bootTUI(cmd, lo.Options, "booting Linux under QEMU and reading its kallsyms", m, syn,
		func(ctx context.Context) (*session.Session, error) { return session.StartLinux(ctx, lo) })
}

// initModesHelp lists /init's modes, one a line, for run linux's help.
func initModesHelp() string {
	var b strings.Builder
	for _, w := range linuxinit.Workloads {
		fmt.Fprintf(&b, "  %-10s %s\n", w.Mode, w.Summary)
	}
	fmt.Fprintf(&b, "  %-10s %s\n", linuxinit.Exec, "the program --exec gives, again and again (--exec chooses it)")
	fmt.Fprintf(&b, "  %-10s %s", linuxinit.All, "syscall, int80, vdso and enosys in turn")
	return b.String()
}

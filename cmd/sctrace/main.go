// Command sctrace shows, instruction by instruction, how an x86-64 system
// call crosses into the kernel and back. It attaches to QEMU's gdbstub
// running the bundled teaching kernel or Linux, single-steps from the user
// instruction that enters the kernel to the return to user mode, and
// annotates every instruction with its effect on MSRs, the GS base, CR3 and
// the stacks.
//
// This package holds flags and wiring only; the work is done in the
// packages it imports.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/sctrace/sctrace/trace"

	"github.com/sctrace/sctrace/internal/scratch"
)

// stopSignals end every command the way ctrl-c does: recording stops, what
// was recorded is written out, breakpoints are removed, QEMU is ended (or
// left running detached with --keep) and temporary files are removed. A
// closed terminal or a dropped SSH session sends SIGHUP.
var stopSignals = []os.Signal{os.Interrupt, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGQUIT}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), stopSignals...)
	defer stop()
	// Remove the temporary directories of earlier runs that could not
	// clean up (killed with SIGKILL, or a kept QEMU that has ended since).
	_, _ = scratch.Clean()
	trace.Tool = versionString()
	root := newRootCmd()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "sctrace:", err)
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(int(ee))
		}
		os.Exit(1)
	}
}

// exitError carries a specific exit status out of a command.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "sctrace",
		Short: "Trace x86-64 system calls instruction by instruction through QEMU's gdbstub",
		Long: `sctrace shows how an x86-64 system call crosses into the kernel and back.

It attaches to QEMU's gdbstub, running either the teaching kernel bundled in
this binary or a Linux kernel, single-steps from the user instruction that
enters the kernel (syscall, int 0x80, sysenter, a call gate, ud2) to the
return to user mode, and says for every instruction what it did to the
machine: MSRs, the GS base, CR3, the privilege level and the stacks.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newVersionCmd(),
		newProbeCmd(),
		withSub(newRunCmd(), newRunLinuxCmd()),
		newTraceCmd(),
		newViewCmd(),
		newAttachCmd(),
		newBenchCmd(),
		newLearnCmd(),
		newDiffCmd(),
	)
	return root
}

// oneArg requires exactly one argument, and says what it is when it is
// missing or more are given.
func oneArg(what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch len(args) {
		case 1:
			return nil
		case 0:
			return fmt.Errorf("%s needs %s (see %s --help)", cmd.CommandPath(), what, cmd.CommandPath())
		default:
			return fmt.Errorf("%s takes one argument, %s; got %d: %q", cmd.CommandPath(), what, len(args), args)
		}
	}
}

package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/session"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/tui"
)

func newAttachCmd() *cobra.Command {
	var (
		sf      stubFlags
		symfile string
		mech    string
		syntax  string
		budget  int
		irq     bool
		here    bool
	)
	cmd := &cobra.Command{
		Use:   "attach HOST:PORT",
		Short: "Open the interactive view on a QEMU you started with -s or -gdb",
		Long: `attach connects to a QEMU gdbstub, runs the guest to the next user
instruction that enters the kernel by the chosen mechanism (unless --here),
and opens the interactive view there. Addresses are HOST:PORT, :PORT or
unix:/path. Without symbols (--symbols vmlinux or System.map) only the
syscall path can be found, by its entry point.

On quitting, sctrace removes its breakpoints and detaches: the guest runs on.`,
		Example: `  qemu-system-x86_64 -s -S -kernel bzImage ... &
  sctrace attach :1234 --symbols vmlinux`,
		Args: oneArg("the stub's address (HOST:PORT, :PORT or unix:PATH)"),
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			m, err := mechanism.Parse(mech)
			if err != nil {
				return err
			}
			syn, err := parseSyntax(syntax)
			if err != nil {
				return err
			}
			o := session.Options{Symbols: symfile, Timeout: sf.timeout, Budget: budget, AllowIRQ: irq, StackWords: tui.StackWords}
			closeLog, err := sf.openWireLog(&o)
			if err != nil {
				return err
			}
			defer closeInto(&err, closeLog)
			addr := args[0]
			open := func(ctx context.Context) (*session.Session, error) { return session.Attach(ctx, addr, o) }
			return tui.Run(cmd.Context(), tui.Config{
				Start:    tui.StartLive(open, m, !here),
				Starting: "attaching to " + addr,
				Syntax:   syn,
			}, nil, nil)
		},
	}
	sf.register(cmd)
	fl := cmd.Flags()
	fl.StringVarP(&symfile, "symbols", "s", "", "symbols from `FILE`: an ELF (vmlinux) or a System.map; none for no\nnames (default: the guest's kallsyms, or the bundled kernel's)")
	fl.StringVarP(&mech, "mechanism", "m", "syscall", "entry mechanism: syscall, int80, sysenter, callgate, ud2, vdso, or the entries that are no system call: pagefault (a demand page fault) and irq (a timer interrupt from user mode)")
	fl.StringVar(&syntax, "syntax", "att", "assembly syntax: att or intel (t toggles)")
	fl.IntVar(&budget, "budget", trace.DefaultBudget, "most instructions one run (e, r, R) steps")
	fl.BoolVar(&irq, "irq", false, "let interrupts and timers run while single-stepping")
	fl.BoolVar(&here, "here", false, "open where the guest stopped instead of running to the next system call")
	return cmd
}

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sctrace/sctrace/command"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/session"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/tui"
)

// batchFlags are attach's flags for running commands without the
// interactive view.
type batchFlags struct {
	script   string
	batch    bool
	yes      bool
	deadline time.Duration
}

func (b *batchFlags) active() bool { return b.script != "" || b.batch }

func newAttachCmd() *cobra.Command {
	var (
		sf      stubFlags
		bf      batchFlags
		symfile string
		mech    string
		syntax  string
		budget  int
		irq     bool
		here    bool
		boot    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "attach HOST:PORT [--batch COMMAND...]",
		Short: "Open the interactive view on a QEMU you started with -s or -gdb, or run debugger commands",
		Long: `attach connects to a QEMU gdbstub, runs the guest to the next user
instruction that enters the kernel by the chosen mechanism (unless --here),
and opens the interactive view there. Addresses are HOST:PORT, :PORT or
unix:/path. Without symbols (--symbols vmlinux or System.map) only the
syscall path can be found, by its entry point.

With -x FILE (one command a line, - for standard input) or --batch followed by
commands, attach runs gdb-style commands where the guest stopped instead, prints
what they show and exits, without the interactive view: break, delete,
continue, until, stepi, x, print, info, set, trace, save and help (run
--batch help for the list). Every command is parsed before the first runs; the
first that fails ends the run with a one-line error. set asks before it writes
the guest (--yes answers for it).

A guest that has not booted yet (QEMU started with -S waits at the reset
vector, in real mode) is recognised at once: with --boot-wait sctrace lets
it run until a 64-bit kernel is running, then looks for its symbols.

On exit, sctrace removes its breakpoints and detaches: the guest runs on.`,
		Example: `  qemu-system-x86_64 -s -S -kernel bzImage ... &
  sctrace attach :1234 --symbols vmlinux
  sctrace attach :1234 --batch 'break do_syscall_64' 'continue' 'info registers' 'x/4xg $rsp'
  sctrace attach :1234 -x session.cmds --yes
  sctrace attach :1234 --boot-wait        # QEMU started with -S`,
		Args: func(cmd *cobra.Command, args []string) error {
			if bf.batch && len(args) > 1 {
				return nil
			}
			if bf.batch {
				return fmt.Errorf("%s --batch needs the stub's address and at least one command, e.g. --batch 'info registers'", cmd.CommandPath())
			}
			if len(args) > 1 {
				return fmt.Errorf("%s takes one argument, the stub's address; got %d: %q (to run commands, put --batch before them)", cmd.CommandPath(), len(args), args)
			}
			return oneArg("the stub's address (HOST:PORT, :PORT or unix:PATH)")(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			m, err := mechanism.Parse(mech)
			if err != nil {
				return err
			}
			syn, err := parseSyntax(syntax)
			if err != nil {
				return err
			}
			for _, f := range []string{"yes", "deadline"} {
				if cmd.Flags().Changed(f) && !bf.active() {
					return fmt.Errorf("--%s goes with -x FILE or --batch", f)
				}
			}
			if bf.deadline < 0 {
				return fmt.Errorf("--deadline must be 0 (none) or positive, not %v", bf.deadline)
			}
			if err := checkBootWait(boot); err != nil {
				return err
			}
			o := session.Options{Symbols: symfile, Timeout: sf.timeout, Budget: budget, AllowIRQ: irq, StackWords: tui.StackWords, BootWait: boot}
			closeLog, err := sf.openWireLog(&o)
			if err != nil {
				return err
			}
			defer closeInto(&err, closeLog)
			addr := args[0]
			if bf.active() {
				return runBatch(cmd, addr, args[1:], o, bf, m, syn)
			}
			open := func(ctx context.Context) (*session.Session, error) { return session.Attach(ctx, addr, o) }
			cfg := tui.Config{
				Start:    tui.StartLive(open, m, !here),
				Starting: "attaching to " + addr,
				Syntax:   syn,
			}
			if boot == 0 {
				// A guest found not booted gets the offer --boot-wait
				// would have given.
				ob := o
				ob.BootWait = session.DefaultBootWait
				openBooted := func(ctx context.Context) (*session.Session, error) { return session.Attach(ctx, addr, ob) }
				cfg.BootWait, cfg.BootWaitFor = tui.StartLive(openBooted, m, !here), ob.BootWait
			}
			return tui.Run(cmd.Context(), cfg, nil, nil)
		},
	}
	sf.register(cmd)
	registerBootWait(cmd, &boot)
	fl := cmd.Flags()
	fl.StringVarP(&symfile, "symbols", "s", "", "symbols from `FILE`: an ELF (vmlinux) or a System.map; none for no\nnames (default: the guest's kallsyms, or the bundled kernel's)")
	fl.StringVarP(&mech, "mechanism", "m", "syscall", "entry mechanism: "+mechanism.Help())
	fl.StringVar(&syntax, "syntax", "att", "assembly syntax: att or intel (t toggles)")
	fl.IntVar(&budget, "budget", trace.DefaultBudget, "most instructions one run (e, r, R, trace) steps")
	fl.BoolVar(&irq, "irq", false, "let interrupts and timers run while single-stepping")
	fl.BoolVar(&here, "here", false, "open where the guest stopped instead of running to the next system call")
	fl.StringVarP(&bf.script, "command", "x", "", "run the debugger commands in `FILE` (one a line; - reads standard input),\nprint what they show and exit, without the interactive view")
	fl.BoolVar(&bf.batch, "batch", false, "run the commands given as the arguments after the address, print what\nthey show and exit, without the interactive view (after -x FILE's, if given)")
	fl.BoolVar(&bf.yes, "yes", false, "with -x or --batch: confirm every set (a write to the guest) without asking")
	fl.DurationVar(&bf.deadline, "deadline", time.Minute, "with -x or --batch: how long continue and until let the guest run before\nstopping it (0: until a breakpoint or ctrl-c)")
	return cmd
}

// runBatch attaches, runs the commands of -x and --batch, and detaches:
// breakpoints removed, the guest left running.
func runBatch(cmd *cobra.Command, addr string, args []string, o session.Options, bf batchFlags, m mechanism.Mechanism, syn trace.Syntax) (err error) {
	var lines []command.Line
	stdinScript := bf.script == "-"
	if bf.script != "" {
		var r io.Reader = cmd.InOrStdin()
		name := "standard input"
		if !stdinScript {
			f, err := os.Open(bf.script)
			if err != nil {
				return fmt.Errorf("-x: %w", err)
			}
			defer f.Close()
			r, name = f, bf.script
		}
		lines, err = command.ReadScript(r, name)
		if err != nil {
			return err
		}
	}
	for i, a := range args {
		lines = append(lines, command.Line{Where: fmt.Sprintf("--batch command %d", i+1), Text: a})
	}
	// Parse everything before attaching: a typo costs no connection.
	onlyHelp := true
	for _, l := range lines {
		c, err := command.Parse(l.Text)
		if err != nil {
			return fmt.Errorf("%s: %w (nothing was run)", l.Where, err)
		}
		onlyHelp = onlyHelp && (c.Verb == "help" || c.Verb == "")
	}
	ctx := cmd.Context()
	if onlyHelp {
		// Help needs no guest.
		return command.New(nil, cmd.OutOrStdout()).Batch(ctx, lines)
	}
	s, err := session.Attach(ctx, addr, o)
	if err != nil {
		return err
	}
	defer closeInto(&err, s.Close)
	for _, n := range s.Notes {
		fmt.Fprintln(cmd.ErrOrStderr(), "sctrace: note:", n)
	}
	out := cmd.OutOrStdout()
	e := command.New(s, out)
	e.Syntax, e.Deadline, e.Mechanism = syn, bf.deadline, m
	asked := false
	e.Confirm = confirmer(bf.yes, stdinScript, cmd.InOrStdin(), cmd.ErrOrStderr(), &asked)
	defer closeInto(&err, func() error { return e.Close(context.WithoutCancel(ctx)) })
	err = e.Batch(ctx, lines)
	if errors.Is(err, command.ErrNotConfirmed) && !asked {
		err = fmt.Errorf("%w; no terminal to ask on: give --yes to confirm writes", err)
	}
	return err
}

// confirmer asks on the terminal before a write, unless yes answers for
// it; with no terminal to ask on (or the script itself on standard
// input), it refuses.
func confirmer(yes, stdinScript bool, in io.Reader, prompt io.Writer, asked *bool) func(string) bool {
	if yes {
		return func(string) bool { return true }
	}
	f, ok := in.(*os.File)
	if stdinScript || !ok || !tui.IsTerminal(f) {
		return func(string) bool { return false }
	}
	rd := bufio.NewReader(in)
	return func(q string) bool {
		*asked = true
		fmt.Fprintf(prompt, "%s [y/N] ", q)
		answer, _ := rd.ReadString('\n')
		answer = strings.ToLower(strings.TrimSpace(answer))
		return answer == "y" || answer == "yes"
	}
}

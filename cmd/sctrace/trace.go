package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sctrace/sctrace/internal/outfile"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/session"
	"github.com/sctrace/sctrace/syscalls"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/tui"
	"github.com/sctrace/sctrace/x86"
)

// recordFlags are the flags of the commands that record a round trip.
type recordFlags struct {
	mechanism string
	format    string
	out       string
	syntax    string
	budget    int
	over      int
	irq       bool
	probe     bool
	record    string
	logAfter  int
	onCPU     int
	flags     *pflag.FlagSet
}

func (f *recordFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	f.flags = fl
	fl.StringVar(&f.record, "record", session.RecordAuto, recordUsage)
	fl.IntVar(&f.logAfter, "log-after", session.DefaultLogAfter, "with --record auto, single-step this many instructions of a round trip before\nhanding the rest to QEMU's instruction log (with --record log: the steps before the log, none unless given)")
	fl.StringVarP(&f.mechanism, "mechanism", "m", "syscall", "entry mechanism to trace: "+mechanism.Help())
	fl.StringVarP(&f.format, "format", "f", "text", "output format: text, markdown, trace (the compact file sctrace view\nopens, for traces of any length) or json (every step in one JSON document)")
	fl.StringVarP(&f.out, "out", "o", "", "write the trace to `FILE` instead of standard output")
	fl.StringVar(&f.syntax, "syntax", "att", "assembly syntax: att or intel")
	fl.IntVar(&f.budget, "budget", trace.DefaultBudget, fmt.Sprintf("most instructions to record in a round trip; with --record log or auto, %d unless given", session.DefaultLogBudget))
	fl.IntVar(&f.over, "over", 0, "step over calls made at this call depth or deeper (1 skips every call the entry code makes; 0 steps into all)")
	fl.BoolVar(&f.irq, "irq", false, "let interrupts and timers run while single-stepping (QEMU masks them by default)")
	fl.IntVar(&f.onCPU, "on-cpu", 0, "on a guest with several vCPUs, record the entry made on this vCPU (QEMU's index),\nletting those on the others through (default: the first on any vCPU)")
	fl.BoolVar(&f.probe, "probe-msrs", false, "read STAR, LSTAR, FMASK, SYSENTER_* and the GS bases with rdmsr in the guest\nonce the kernel is entered (writes the guest briefly and puts every byte and\nregister back; run needs --trace for it, the interactive view has p)")
	_ = cmd.RegisterFlagCompletionFunc("mechanism", cobra.FixedCompletions(
		mechanism.Names(), cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions(
		[]string{"text", "json", "markdown", "trace"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("syntax", cobra.FixedCompletions(
		[]string{"att", "intel"}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("record", cobra.FixedCompletions(
		session.Recorders, cobra.ShellCompDirectiveNoFileComp))
}

// recordHelp is the paragraph on --record in the help of the commands
// that record.
const recordHelp = `

--record chooses how instructions are recorded: step single-steps each
through the gdbstub (every detail, a few thousand a second); log has QEMU
write each instruction's registers to its instruction log (far faster; TCG
only; stack memory is not captured, interrupts are not masked and their
handlers are left out); auto, the default, steps the first --log-after
instructions (2000) and hands the rest to the log where the guest runs
under TCG, and otherwise steps on and says why. With log or auto the
default --budget is 2000000. The header says which recorder made which
steps.`

// recordHelpStarted adds, for the commands that start QEMU, what the log
// changes in how QEMU is started.
const recordHelpStarted = recordHelp + ` With log or auto, a TCG QEMU is started with
-icount shift=0,sleep=off, so that guest time follows instructions and a
logged call takes no more timer interrupts than a free one; --record step
starts QEMU without it, and so does run linux with --smp 2 or more (Linux
does not bring its secondary CPUs up under -icount shift=0).`

// recordUsage is the help of --record.
const recordUsage = `how to record: step (single-step every instruction through the gdbstub),
log (QEMU's instruction log: far faster, TCG only, no stack memory), or
auto (step the first --log-after instructions, hand the rest to the log
where the guest runs under TCG, else step on)`

func (f *recordFlags) check() (mechanism.Mechanism, trace.Syntax, error) {
	m, err := mechanism.Parse(f.mechanism)
	if err != nil {
		return "", 0, err
	}
	syn, err := parseSyntax(f.syntax)
	if err != nil {
		return "", 0, err
	}
	switch f.format {
	case "text", "json", "markdown", "md", "trace":
	default:
		return "", 0, fmt.Errorf("unknown format %q (want text, markdown, trace or json)", f.format)
	}
	if f.budget <= 0 {
		return "", 0, fmt.Errorf("--budget must be positive, not %d", f.budget)
	}
	if f.over < 0 {
		return "", 0, fmt.Errorf("--over must be 0 or more, not %d", f.over)
	}
	if err := session.CheckRecord(f.record, f.logAfter, f.changed("log-after")); err != nil {
		return "", 0, fmt.Errorf("--record: %w", err)
	}
	if f.record == session.RecordLog && f.over > 0 {
		return "", 0, errors.New("--record log records every instruction: --over needs --record step")
	}
	if f.record == session.RecordLog && m.Event() {
		return "", 0, fmt.Errorf("--record log follows a system call to the instruction after it; mechanism %s enters by an exception or an interrupt, which the log recorder does not follow: use --record step", m)
	}
	if m.Compat() && (f.record == session.RecordLog && (!f.changed("log-after") || f.logAfter == 0) || f.record == session.RecordAuto && f.logAfter == 0) {
		return "", 0, fmt.Errorf("--record %s: mechanism %s starts in 32-bit code, which QEMU's instruction log dumps in its 32-bit layout, without the 64-bit registers: single-step the way in (--log-after 1 or more) or use --record step", f.record, m)
	}
	if f.out != "" {
		// Before QEMU boots and the round trip is recorded, not after.
		if err := outfile.Check(f.out); err != nil {
			return "", 0, fmt.Errorf("--out %w", err)
		}
	}
	return m, syn, nil
}

// changed says whether the user gave the flag name.
func (f *recordFlags) changed(name string) bool { return f.flags != nil && f.flags.Changed(name) }

func (f *recordFlags) options(o *session.Options) {
	o.Budget, o.Over, o.AllowIRQ, o.ProbeMSRs = f.budget, f.over, f.irq, f.probe
	o.Record = f.record
	if f.changed("on-cpu") {
		v := f.onCPU
		o.OnCPU = &v
	}
	switch {
	case f.record == session.RecordAuto && (f.over > 0 || mechanism.Mechanism(f.mechanism).Event()):
		// Stepping over calls is the stepping recorder's, and so are
		// exceptions and interrupts, which return elsewhere than after a
		// system call.
		o.Record = session.RecordStep
	case f.record == session.RecordAuto || f.changed("log-after"):
		o.LogAfter = f.logAfter
	}
	if o.Record != session.RecordStep && !f.changed("budget") {
		o.Budget = 0 // the session's budget for the log
	}
	if f.format == "json" || f.format == "trace" {
		// A saved trace is replayed in the TUI, whose stack pane shows
		// the words at RSP: record them (one more read per step).
		o.StackWords = tui.StackWords
	}
}

func parseSyntax(s string) (trace.Syntax, error) {
	switch s {
	case "att", "at&t", "gnu":
		return trace.ATT, nil
	case "intel":
		return trace.Intel, nil
	}
	return 0, fmt.Errorf("unknown syntax %q (want att or intel)", s)
}

// emit writes a trace in the chosen format to w, or to the file out
// (replaced only by a complete trace; when it cannot be written the trace
// is kept in the temporary directory and the error says where).
func emit(w io.Writer, t *trace.Trace, format, out string, syn trace.Syntax) error {
	write, ext := func(w io.Writer) error { return trace.WriteText(w, t, syn) }, ".txt"
	switch format {
	case "json":
		write, ext = t.WriteJSON, ".json"
	case "trace":
		write, ext = t.Write, ".sctrace"
	case "markdown", "md":
		write, ext = func(w io.Writer) error { return trace.WriteMarkdown(w, t, syn) }, ".md"
	}
	if out != "" {
		return outfile.Save(out, "sctrace-trace-*"+ext, write)
	}
	if err := write(w); err != nil {
		return fmt.Errorf("write trace: %w", err)
	}
	return nil
}

// roundTrip records one round trip in s and writes it out. On ctrl-c it
// writes what was recorded and reports the interruption.
func roundTrip(ctx context.Context, w io.Writer, s *session.Session, m mechanism.Mechanism, f *recordFlags, syn trace.Syntax) error {
	// On a terminal, a status line says what sctrace is doing: waiting for
	// the call, then how many steps it has recorded.
	status := newStatusLine(os.Stderr, tui.IsTerminal(os.Stderr))
	defer status.Clear()
	waitingFor := fmt.Sprintf("waiting for the guest's next %s…", s.Awaited(m))
	// The guest may take its time to make the call, or never make it: say
	// what sctrace is waiting for.
	s.Waiting = func(m mechanism.Mechanism) {
		status.Clear()
		fmt.Fprintf(os.Stderr, "sctrace: waiting for the guest's next %s (ctrl-c stops)\n", s.Awaited(m))
		status.Show(waitingFor)
	}
	s.Notice = func(msg string) {
		status.Clear()
		fmt.Fprintln(os.Stderr, "sctrace:", msg)
	}
	status.Show(waitingFor)
	var until []trace.Until
	if status != nil {
		steps := 0
		until = []trace.Until{trace.BackInUser(), func(*trace.Step, *x86.State) trace.StopReason {
			steps++
			if steps == 1 {
				status.Show("recording: 1 step")
			} else {
				status.Update(fmt.Sprintf("recording: %d steps", steps))
			}
			return ""
		}}
	}
	t, err := s.RoundTrip(ctx, m, until...)
	status.Clear()
	if t != nil && t.Len() > 0 {
		if werr := emit(w, t, f.format, f.out, syn); werr != nil {
			return werr
		}
	}
	if err != nil {
		if errors.Is(err, context.Canceled) {
			saved := "nothing had been recorded"
			if t != nil && t.Len() > 0 {
				saved = fmt.Sprintf("the %d steps recorded are written to %s", t.Len(), cmp.Or(f.out, "standard output"))
			}
			return interrupted(ctx, saved, err)
		}
		return err
	}
	return nil
}

// interrupted reports a recording the user's signal (ctx's cause) cut
// short, and what became of its steps. When ctx was canceled, err's
// closing "context canceled" is an internal echo of that signal and is left
// out of the message (err stays wrapped for errors.Is); anything else err
// says is shown.
func interrupted(ctx context.Context, saved string, err error) error {
	msg := fmt.Sprintf("interrupted (%v); %s", context.Cause(ctx), saved)
	if ctx.Err() == nil {
		return fmt.Errorf("%s: %w", msg, err)
	}
	canceled := context.Canceled.Error()
	if rest := strings.TrimSuffix(err.Error(), ": "+canceled); rest != canceled {
		msg += ": " + rest
	}
	return &quietError{msg: msg, err: err}
}

// quietError is an error whose message leaves out the error it wraps.
type quietError struct {
	msg string
	err error
}

func (e *quietError) Error() string { return e.msg }
func (e *quietError) Unwrap() error { return e.err }

func newTraceCmd() *cobra.Command {
	var (
		rf      recordFlags
		sf      stubFlags
		attach  string
		symfile string
		boot    time.Duration
		sysc    string
	)
	cmd := &cobra.Command{
		Use:   "trace --attach HOST:PORT",
		Short: "Record one system call round trip from a running QEMU and print it",
		Long: `trace attaches to a QEMU gdbstub, lets the guest run to the next user
instruction that enters the kernel by the chosen mechanism, and single-steps
until the CPU is back in user mode. Every instruction is printed with what it
did: privilege changes, swapgs, CR3 writes, stack switches, MSRs learnt.
--syscall NAME|NR waits for one system call, letting the others through.

On the way out sctrace detaches, which removes its breakpoints and lets the
guest run on. A guest that has not booted (QEMU started with -S) is
refused at once, or, with --boot-wait, let run until a 64-bit kernel is
running. ctrl-c (or SIGHUP, SIGTERM, SIGQUIT) stops recording, prints
what was recorded and detaches the same way.` + recordHelp,
		Example: `  sctrace trace --attach :1234 --symbols vmlinux
  sctrace trace --attach :1234 --syscall execve
  sctrace trace --attach :1234 --mechanism int80 --format json --out int80.json
  sctrace trace --attach :1234 --boot-wait=30s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			m, syn, err := rf.check()
			if err != nil {
				return err
			}
			if attach == "" {
				return errors.New("--attach HOST:PORT is required (or use `sctrace run --trace` for the bundled kernel)")
			}
			if err := checkBootWait(boot); err != nil {
				return err
			}
			if sysc != "" {
				if m != "" && m != mechanism.Syscall && cmd.Flags().Changed("mechanism") {
					return fmt.Errorf("--syscall waits for the syscall instruction; mechanism %s is not it (x86-64 numbers mean nothing to int $0x80, which takes the i386 ones)", m)
				}
				// The guest's own table decides once attached; a name
				// no kernel has is refused before that.
				if _, err := syscalls.ABI().Parse(sysc); err != nil {
					return err
				}
				m = mechanism.Syscall
			}
			o := session.Options{Symbols: symfile, Timeout: sf.timeout, BootWait: boot, Syscall: sysc}
			rf.options(&o)
			closeLog, err := sf.openWireLog(&o)
			if err != nil {
				return err
			}
			defer closeInto(&err, closeLog)
			s, err := session.Attach(cmd.Context(), attach, o)
			if err != nil {
				return err
			}
			defer s.Close()
			for _, n := range s.Notes {
				fmt.Fprintln(cmd.ErrOrStderr(), "sctrace:", n)
			}
			return roundTrip(cmd.Context(), cmd.OutOrStdout(), s, m, &rf, syn)
		},
	}
	rf.register(cmd)
	sf.register(cmd)
	registerBootWait(cmd, &boot)
	cmd.Flags().StringVarP(&attach, "attach", "a", "", "gdbstub address: HOST:PORT, :PORT or unix:/path")
	cmd.Flags().StringVar(&sysc, "syscall", "", "wait for this system call, by `NAME` or number (read, 0, execve...), letting others through;\nnames come from the guest kernel's sys_call_table when kallsyms has it")
	cmd.Flags().StringVarP(&symfile, "symbols", "s", "", "symbols from `FILE`: an ELF (vmlinux) or a System.map; none for no\nnames (default: the guest's kallsyms, or the bundled kernel's)")
	return cmd
}

func newViewCmd() *cobra.Command {
	var (
		format string
		syntax string
		other  string
		expand bool
		follow bool
	)
	cmd := &cobra.Command{
		Use:   "view FILE [--diff OTHER | --follow]",
		Short: "Open a saved trace in the interactive view, or print it, with no QEMU running",
		Long: `view reads a trace saved with --format trace or --format json (or with w in
the interactive view) and opens it in the interactive view: f and b walk the
steps, e and E jump to the next and previous event, ? lists the keys. A trace
file (version 2) opens at once whatever its length: steps are decoded as they
are shown. With --format, or when standard output is not a terminal, it
prints the trace instead; --format json or trace converts between the two.

With --diff OTHER it shows FILE (A) and OTHER (B) aligned side by side, the
two code panes scrolling together; e and E jump to the next and previous
difference (see sctrace diff, which prints the same alignment).

With --follow it reads FILE again whenever it changes, for a trace another
sctrace keeps saving while it records (sctrace proxy --out FILE, in a second
terminal): the view stays on the step it shows, or follows the last one.`,
		Example: `  sctrace view syscall.sctrace
  sctrace view --follow gdb-session.sctrace
  sctrace view syscall.json --format markdown > syscall.md
  sctrace view execve.sctrace --format json > execve.json
  sctrace view pti-on.json --diff pti-off.json`,
		Args: oneArg("the trace file to view"),
		RunE: func(cmd *cobra.Command, args []string) error {
			syn, err := parseSyntax(syntax)
			if err != nil {
				return err
			}
			if follow {
				if format != "" || other != "" {
					return errors.New("--follow opens the interactive view: it goes with neither --format nor --diff")
				}
				if !tui.IsTerminal(cmd.OutOrStdout()) {
					return errors.New("--follow opens the interactive view, and standard output is not a terminal")
				}
				f, err := tui.NewFollow(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				return tui.Run(cmd.Context(), tui.Config{Driver: f, Syntax: syn}, nil, nil)
			}
			if format == "" && other == "" && tui.IsTerminal(cmd.OutOrStdout()) {
				// The viewer decodes steps as it shows them.
				t, err := trace.Open(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				return tui.Run(cmd.Context(), tui.Config{Driver: tui.NewReplay(t), Syntax: syn}, nil, nil)
			}
			// Printing or converting reads, and checks, every step first.
			t, err := trace.ReadFileContext(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if other != "" {
				return viewDiff(cmd, t, args[0], other, format, syn, expand)
			}
			if format == "" {
				format = "text"
			}
			return emit(cmd.OutOrStdout(), t, format, "", syn)
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", "print as text, markdown, json or trace instead of opening the interactive view")
	cmd.Flags().StringVar(&syntax, "syntax", "att", "assembly syntax: att or intel")
	cmd.Flags().StringVar(&other, "diff", "", "show FILE and this trace (`OTHER`) side by side, aligned")
	cmd.Flags().BoolVar(&expand, "expand", false, "with --diff and --format, list every step of a run only in one trace")
	cmd.Flags().BoolVar(&follow, "follow", false, "read FILE again whenever it changes (a trace sctrace proxy --out keeps saving)")
	return cmd
}

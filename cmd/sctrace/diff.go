package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sctrace/sctrace/diff"
	"github.com/sctrace/sctrace/internal/outfile"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/session"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/tui"
)

// diffFlags are the flags of the diff command.
type diffFlags struct {
	format, out, syntax string
	expand              bool
	// Recording both round trips.
	linux          []string
	aAppend        string
	bAppend        string
	mechanism      string
	syscall        string
	accel, qemu    string
	budget         int
	bootTimeout    time.Duration
	aOut, bOut     string
	stubTimeout    time.Duration
	recordingFlags []string
}

func newDiffCmd() *cobra.Command {
	var f diffFlags
	cmd := &cobra.Command{
		Use:   "diff A B | diff --linux K1 [--linux K2] [--a-append W] [--b-append W]",
		Short: "Align two traces instruction by instruction and say what differs",
		Long: `diff aligns two saved traces (.sctrace files, from --format trace or w in
the interactive view, or JSON documents from --format json) by what their instructions are, not where they are: each
step is keyed by the function it runs in and the instruction's operation and
operands, with addresses left out, so that KASLR, another kernel build or
other register values do not by themselves make two steps different; two
traces of one kernel build (the same banner) are keyed by the offset in the
function as well, so a site patched differently at boot shows as changed. The
calls each trace makes are aligned one by one (Myers' algorithm on each
call's steps), so a long call made in one trace only cannot pull the rest
out of line. Traces without symbols are matched by the instruction alone,
and the output says so.

It prints a summary first: the instructions of A and B, per function how
many are the same (=), changed in place (~), only in A (-) and only in B
(+), and the events (CR3 writes, swapgs, mitigations such as verw and
return thunks, stack switches, findings) that one trace has where the other
has not. Then the alignment, where a run of steps only in one trace is one
line with its count and first instruction (--expand lists them).

Instead of two files, diff can record both round trips itself: --linux
boots a Linux kernel for each side (give it twice for two kernels, once for
one kernel twice), with no --linux the teaching kernel; --a-append and
--b-append add words to one side's kernel command line (pti=off, a
bug=int80-noswapgs for the teaching kernel, mitigations=off). On Linux,
--syscall NAME|NR records that system call on both sides instead of
getpid, its /init loop chosen as run linux chooses it.`,
		Example: `  sctrace diff on.json off.json
  sctrace diff 6.1.json 6.12.json --format markdown > entry.md
  sctrace diff --linux "$(scripts/fetch-kernel.sh 6.12)" --b-append pti=off
  sctrace diff --linux "$(scripts/fetch-kernel.sh 6.1)" --linux "$(scripts/fetch-kernel.sh 6.12)"
  sctrace diff --linux "$(scripts/fetch-kernel.sh 6.12)" --syscall read --b-append pti=off
  sctrace diff -m int80 --b-append bug=int80-noswapgs`,
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			o := diff.Options{Expand: f.expand}
			if o.Syntax, err = parseSyntax(f.syntax); err != nil {
				return err
			}
			write, err := diffWriter(f.format)
			if err != nil {
				return err
			}
			if f.out != "" {
				if err := outfile.Check(f.out); err != nil {
					return fmt.Errorf("--out %w", err)
				}
			}
			recording := f.recording(cmd)
			var a, b *trace.Trace
			switch {
			case len(args) == 2 && len(recording) > 0:
				return fmt.Errorf("diff takes two trace files or records both round trips (%s), not both", strings.Join(recording, ", "))
			case len(args) == 2:
				o.NameA, o.NameB = args[0], args[1]
				if a, err = trace.ReadFileContext(cmd.Context(), args[0]); err != nil {
					return fmt.Errorf("A: %w", err)
				}
				if b, err = trace.ReadFileContext(cmd.Context(), args[1]); err != nil {
					return fmt.Errorf("B: %w", err)
				}
			case len(args) != 0:
				return fmt.Errorf("diff takes two trace files, A and B; got %d: %q (see sctrace diff --help)", len(args), args)
			case len(recording) == 0:
				return errors.New("diff needs two trace files, or --linux, --a-append or --b-append to record both round trips (see sctrace diff --help)")
			default:
				if a, b, err = f.record(cmd); err != nil {
					return err
				}
				o.NameA, o.NameB = f.sideName(0, f.aAppend), f.sideName(1, f.bAppend)
			}
			if a.Len() == 0 || b.Len() == 0 {
				return fmt.Errorf("nothing to align: A has %d steps, B %d", a.Len(), b.Len())
			}
			r := diff.Compare(a, b)
			w := func(w io.Writer) error { return write(w, r, o) }
			if f.out != "" {
				ext := map[string]string{"json": ".json", "markdown": ".md", "md": ".md"}[f.format]
				return outfile.Save(f.out, "sctrace-diff-*"+cmp.Or(ext, ".txt"), w)
			}
			return w(cmd.OutOrStdout())
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.format, "format", "f", "text", "output format: text, json or markdown")
	fl.StringVarP(&f.out, "out", "o", "", "write the diff to `FILE` instead of standard output")
	fl.StringVar(&f.syntax, "syntax", "att", "assembly syntax: att or intel")
	fl.BoolVar(&f.expand, "expand", false, "list every step of a run only in one trace, not one line for the run")
	fl.StringArrayVar(&f.linux, "linux", nil, "record on this Linux bzImage (`FILE`); twice for A and B, once for both")
	fl.StringVar(&f.aAppend, "a-append", "", "words for A's kernel command line (pti=off, mitigations=off, bug=...)")
	fl.StringVar(&f.bAppend, "b-append", "", "words for B's kernel command line")
	fl.StringVarP(&f.mechanism, "mechanism", "m", "syscall", "entry mechanism to record: "+mechanism.Help())
	fl.StringVar(&f.syscall, "syscall", "", "with --linux: record this system call, by `NAME` or number, on both sides")
	accelFlag(fl, &f.accel)
	fl.StringVar(&f.qemu, "qemu", "", "QEMU binary to run (default: qemu-system-x86_64 on $PATH)")
	fl.IntVar(&f.budget, "budget", trace.DefaultBudget, "most instructions to step in each round trip")
	fl.DurationVar(&f.bootTimeout, "boot-timeout", 120*time.Second, "how long to wait for Linux's /init to start looping")
	fl.DurationVar(&f.stubTimeout, "stub-timeout", 0, "how long to wait for each reply of QEMU's gdbstub (default 5s)")
	fl.StringVar(&f.aOut, "a-out", "", "save the recorded trace A as JSON in `FILE`")
	fl.StringVar(&f.bOut, "b-out", "", "save the recorded trace B as JSON in `FILE`")
	f.recordingFlags = []string{"linux", "a-append", "b-append", "mechanism", "syscall", "accel", "qemu", "budget", "boot-timeout", "stub-timeout", "a-out", "b-out"}
	_ = cmd.RegisterFlagCompletionFunc("mechanism", cobra.FixedCompletions(mechanism.Names(), cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions([]string{"text", "json", "markdown"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// recording returns the recording flags given, as --name.
func (f *diffFlags) recording(cmd *cobra.Command) []string {
	var out []string
	for _, n := range f.recordingFlags {
		if cmd.Flags().Changed(n) {
			out = append(out, "--"+n)
		}
	}
	return out
}

func diffWriter(format string) (func(io.Writer, *diff.Result, diff.Options) error, error) {
	switch format {
	case "text":
		return diff.WriteText, nil
	case "markdown", "md":
		return diff.WriteMarkdown, nil
	case "json":
		return diff.WriteJSON, nil
	}
	return nil, fmt.Errorf("unknown format %q (want text, json or markdown)", format)
}

// kernel returns the kernel of side i (0 for A, 1 for B): "" for the
// teaching kernel.
func (f *diffFlags) kernel(i int) string {
	switch len(f.linux) {
	case 0:
		return ""
	case 1:
		return f.linux[0]
	}
	return f.linux[i]
}

// sideName names a recorded side for the output: its kernel and the words
// added to its command line.
func (f *diffFlags) sideName(i int, words string) string {
	name := "teaching kernel"
	if k := f.kernel(i); k != "" {
		name = filepath.Base(k)
	}
	if words != "" {
		name += " + " + words
	}
	return name
}

// record boots each side's kernel in turn and records one round trip.
func (f *diffFlags) record(cmd *cobra.Command) (*trace.Trace, *trace.Trace, error) {
	if len(f.linux) > 2 {
		return nil, nil, fmt.Errorf("--linux given %d times: once (one kernel for both sides) or twice (A's and B's)", len(f.linux))
	}
	m, err := mechanism.Parse(f.mechanism)
	if err != nil {
		return nil, nil, err
	}
	if f.budget <= 0 {
		return nil, nil, fmt.Errorf("--budget must be positive, not %d", f.budget)
	}
	if f.syscall != "" && len(f.linux) == 0 {
		return nil, nil, errors.New("--syscall goes with --linux: the teaching kernel makes no system call by number but its own getpid")
	}
	for _, p := range []struct{ flag, path string }{{"--a-out", f.aOut}, {"--b-out", f.bOut}} {
		if p.path != "" {
			if err := outfile.Check(p.path); err != nil {
				return nil, nil, fmt.Errorf("%s %w", p.flag, err)
			}
		}
	}
	var out [2]*trace.Trace
	for i, words := range []string{f.aAppend, f.bAppend} {
		t, err := f.recordSide(cmd.Context(), cmd.ErrOrStderr(), i, words, m, cmd.Flags().Changed("mechanism"))
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", "AB"[i:i+1], err)
		}
		if path := []string{f.aOut, f.bOut}[i]; path != "" {
			if err := outfile.Save(path, "sctrace-trace-*.json", t.WriteJSON); err != nil {
				return nil, nil, err
			}
		}
		out[i] = t
	}
	return out[0], out[1], nil
}

// recordSide boots side i's kernel with words added to its command line,
// records one round trip by m and ends QEMU.
func (f *diffFlags) recordSide(ctx context.Context, log io.Writer, i int, words string, m mechanism.Mechanism, chosen bool) (*trace.Trace, error) {
	o := session.Options{QEMU: f.qemu, Accel: f.accel, Mechanism: m, Budget: f.budget, Timeout: f.stubTimeout}
	fmt.Fprintf(log, "sctrace: recording %s: %s\n", "AB"[i:i+1], f.sideName(i, words))
	var (
		s   *session.Session
		err error
	)
	if k := f.kernel(i); k != "" {
		lo := session.LinuxOptions{Options: o, Kernel: k, BootTimeout: f.bootTimeout}
		lo.Syscall = f.syscall
		lo.Append, lo.NoPTI = linuxWords(words)
		if m, err = lo.ChooseMechanism(m, chosen); err != nil {
			return nil, err
		}
		s, err = session.StartLinux(ctx, lo)
	} else {
		o.Append = words
		s, err = session.StartFixture(ctx, o)
	}
	if err != nil {
		return nil, err
	}
	defer s.Close()
	t, err := s.RoundTrip(ctx, m)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// linuxWords takes pti=on and pti=off out of words for Linux's command
// line, which starts with pti=on: pti=off is said by LinuxOptions.NoPTI
// rather than by a second pti= after the first.
func linuxWords(words string) (rest string, noPTI bool) {
	var keep []string
	for _, w := range strings.Fields(words) {
		switch w {
		case "pti=off":
			noPTI = true
		case "pti=on":
			noPTI = false
		default:
			keep = append(keep, w)
		}
	}
	return strings.Join(slices.Clip(keep), " "), noPTI
}

// viewDiff opens the side-by-side view of a (read from nameA) and the
// trace in nameB, or prints their diff in format when one is given or
// standard output is not a terminal.
func viewDiff(cmd *cobra.Command, a *trace.Trace, nameA, nameB, format string, syn trace.Syntax, expand bool) error {
	b, err := trace.ReadFileContext(cmd.Context(), nameB)
	if err != nil {
		return fmt.Errorf("--diff: %w", err)
	}
	if a.Len() == 0 || b.Len() == 0 {
		return fmt.Errorf("nothing to align: %s has %d steps, %s %d", nameA, a.Len(), nameB, b.Len())
	}
	r := diff.Compare(a, b)
	o := diff.Options{NameA: nameA, NameB: nameB, Syntax: syn, Expand: expand}
	if format == "" && tui.IsTerminal(cmd.OutOrStdout()) {
		return tui.RunDiff(cmd.Context(), r, o, nil, nil)
	}
	write, err := diffWriter(cmp.Or(format, "text"))
	if err != nil {
		return err
	}
	return write(cmd.OutOrStdout(), r, o)
}

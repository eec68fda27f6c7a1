package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sctrace/sctrace/bench"
	"github.com/sctrace/sctrace/fixtures/kernel"
	"github.com/sctrace/sctrace/internal/outfile"
	"github.com/sctrace/sctrace/qemu"
	"github.com/sctrace/sctrace/session"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/tui"
	"github.com/sctrace/sctrace/walkthrough"
)

func newLearnCmd() *cobra.Command {
	var (
		export, linuxKernel, accel, qbin, syntax string
		iters                                    int
	)
	cmd := &cobra.Command{
		Use:   "learn [N]",
		Short: "Guided lessons that run on a live system call",
		Long: `learn lists the lessons, with how far you got in each. learn N boots what
lesson N needs (the teaching kernel, its bug variant, or Linux) and opens the
interactive view with a lesson pane: each paragraph appears when the trace
reaches the event it talks about, points at a pane and a value, and now and
then asks a question that is checked against the registers on screen.

In the lesson: space goes on to the next paragraph's event, a answers the
question, l hides the lesson, ? lists every key.

The Linux lesson boots a kernel that scripts/fetch-kernel.sh downloaded
(found in its cache) or the one --kernel names. Lesson 3 first measures
each mechanism's round trip on this machine (--iters samples each).

--export FILE records the lesson's round trips and writes the lesson with
its trace to one page, Markdown or (for a .html FILE) HTML, for a course
site. Progress is kept in $XDG_STATE_HOME/sctrace/progress.json.`,
		Example: `  sctrace learn
  sctrace learn 1
  sctrace learn 4 --kernel "$(scripts/fetch-kernel.sh)"
  sctrace learn 2 --export entry.html`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, err := walkthrough.DefaultStore()
			if err != nil {
				return err
			}
			progress, err := store.Load()
			if err != nil {
				return err
			}
			if len(args) == 0 {
				lessons, err := walkthrough.All(nil)
				if err != nil {
					return err
				}
				return walkthrough.WriteList(cmd.OutOrStdout(), lessons, progress, store.Path)
			}
			n, err := strconv.Atoi(args[0])
			if err != nil {
				return fmt.Errorf("lesson %q: want a number (sctrace learn lists them)", args[0])
			}
			if export != "" {
				if err := outfile.Check(export); err != nil {
					return fmt.Errorf("--export %w", err)
				}
				if _, err := exportFormat(export); err != nil {
					return err
				}
			}
			syn, err := parseSyntax(syntax)
			if err != nil {
				return err
			}
			l, err := walkthrough.Get(n, nil)
			if err != nil {
				return err
			}
			if _, err := qemu.Find(qbin); err != nil {
				return err
			}
			if l.Bench {
				d := measure(cmd, iters, accel, qbin)
				if l, err = walkthrough.Get(n, d); err != nil {
					return err
				}
			}
			base := session.Options{QEMU: qbin, Accel: accel, StackWords: tui.StackWords}
			if export != "" {
				if err := exportLesson(cmd.Context(), l, linuxKernel, base, export, syn); err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "lesson %s written to %s\n", l.Name(), export)
				return nil
			}
			open := func(ctx context.Context) (*session.Session, error) {
				return walkthrough.Open(ctx, l, linuxKernel, base)
			}
			starting := "booting the teaching kernel under QEMU"
			if l.Target == walkthrough.TargetLinux {
				starting = "booting Linux under QEMU (a few seconds)"
			}
			return tui.Run(cmd.Context(), tui.Config{
				Start:    tui.StartLive(open, l.Mechanism, true),
				Starting: starting,
				Syntax:   syn,
				Lesson: &tui.LessonConfig{Lesson: l, Progress: progress[l.Name()],
					OnProgress: func(p walkthrough.Progress) error { return store.Save(l.Name(), p) }},
			}, nil, nil)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&export, "export", "", "record the lesson's round trips and write the lesson with its trace to `FILE` (.md or .html)")
	fl.StringVar(&linuxKernel, "kernel", "", "Linux bzImage for the Linux lesson (default: the newest in scripts/fetch-kernel.sh's cache)")
	accelFlag(fl, &accel)
	fl.StringVar(&qbin, "qemu", "", "QEMU binary to run (default: qemu-system-x86_64 on $PATH)")
	fl.StringVar(&syntax, "syntax", "att", "assembly syntax: att or intel")
	fl.IntVar(&iters, "iters", 500, "samples per mechanism for the lessons that measure costs")
	return cmd
}

// measure runs the teaching kernel's bench for a lesson that quotes costs.
func measure(cmd *cobra.Command, iters int, accel, qbin string) *walkthrough.Data {
	fmt.Fprintf(cmd.ErrOrStderr(), "measuring each way in on this machine (%d round trips each)…\n", iters)
	progress, clear := bench.ProgressBar(cmd.ErrOrStderr())
	rep, err := bench.Run(cmd.Context(), bench.Config{Targets: []string{bench.TargetFixture}, Iters: iters,
		Kernel: kernel.ELF, QEMU: qbin, Accel: accel, Progress: progress})
	clear()
	return &walkthrough.Data{Bench: rep, BenchErr: err}
}

// exportLesson records lesson l's round trips and writes the page.
func exportLesson(ctx context.Context, l *walkthrough.Lesson, linuxKernel string, base session.Options, file string, syn trace.Syntax) (err error) {
	s, err := walkthrough.Open(ctx, l, linuxKernel, base)
	if err != nil {
		return err
	}
	defer s.Close()
	traces, err := walkthrough.Record(ctx, l, s)
	if err != nil {
		return err
	}
	if f, _ := exportFormat(file); f == "html" {
		return outfile.Save(file, "sctrace-lesson-*.html", func(w io.Writer) error { return walkthrough.WriteHTML(w, l, traces, syn) })
	}
	return outfile.Save(file, "sctrace-lesson-*.md", func(w io.Writer) error { return walkthrough.WriteMarkdown(w, l, traces, syn) })
}

// exportFormat picks the export format from the file name: HTML for .html
// and .htm, Markdown for .md, .markdown, no extension or a device such as
// /dev/stdout; anything else is refused before the lesson is recorded.
func exportFormat(file string) (string, error) {
	switch ext := strings.ToLower(filepath.Ext(file)); {
	case ext == ".html" || ext == ".htm":
		return "html", nil
	case ext == ".md" || ext == ".markdown" || ext == "" || strings.HasPrefix(file, "/dev/"):
		return "markdown", nil
	default:
		return "", fmt.Errorf("--export %s: lessons are written as Markdown (.md) or HTML (.html), not %s", file, ext)
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/sctrace/sctrace/internal/outfile"
	"github.com/sctrace/sctrace/proxy"
	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/trace"

	"github.com/sctrace/sctrace/tui"
)

func newProxyCmd() *cobra.Command {
	var (
		timeout time.Duration
		listen  string
		to      string
		symfile string
		out     string
		listing string
		syntax  string
	)
	cmd := &cobra.Command{
		Use:   "proxy --to HOST:PORT",
		Short: "Sit between gdb and QEMU's gdbstub and record every instruction gdb single-steps",
		Long: `proxy listens for gdb (or pwndbg, gef: any client of the remote protocol),
connects it to the QEMU gdbstub given by --to, and forwards every byte both
ways unchanged: gdb's session works as when connected directly, breakpoints,
monitor commands and ctrl-c included.

Meanwhile every instruction gdb single-steps (stepi, or a step that gdb
makes of single steps) is read, annotated as sctrace annotates its own
steps, and listed as it happens: on standard output, or in the file given
by --listing, which grows as gdb steps (follow it with tail -f in a second
terminal). When gdb lets the guest run (continue, next over a call), the
recording notes a gap. The proxy reads the registers and memory it needs
while the guest is stopped, before gdb hears of the stop, and changes
nothing gdb relies on.

By default the proxy listens on a Unix socket in a new private directory
and prints the gdb command that connects to it; --listen :PORT uses a
loopback TCP port. The session ends when gdb disconnects, the stub goes
away, or on ctrl-c. With --out FILE the trace is saved there as gdb steps
(at most twice a second, each time whole) and once more at the end:
sctrace view --follow FILE in a second terminal shows it in the interactive
view as it grows; .sctrace saves the compact format, .txt and .md text,
anything else JSON.`,
		Example: `  qemu-system-x86_64 -s -S -kernel bzImage ... &
  sctrace proxy --to :1234 --out session.sctrace
  sctrace view --follow session.sctrace                        # in a second terminal
  gdb -ex 'target remote /tmp/sctrace-proxy-123/gdb.sock'      # as printed
  sctrace proxy --to :1234 --listen :2345 --listing steps.txt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			if to == "" {
				return errors.New("--to is required: the QEMU gdbstub's address (HOST:PORT, :PORT or unix:PATH)")
			}
			syn, err := parseSyntax(syntax)
			if err != nil {
				return err
			}
			if out != "" {
				if err := outfile.Check(out); err != nil {
					return fmt.Errorf("--out %w", err)
				}
			}
			var syms *symbols.Table
			if symfile != "" {
				if syms, err = symbols.Load(symfile); err != nil {
					return err
				}
			}
			var list io.Writer = cmd.OutOrStdout()
			switch listing {
			case "-":
			case "none":
				list = nil
			default:
				var f *os.File
				f, err = os.OpenFile(listing, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o666)
				if err != nil {
					return fmt.Errorf("--listing: %w", err)
				}
				defer closeInto(&err, f.Close)
				list = f
			}
			stderr := cmd.ErrOrStderr()
			ln, err := proxy.Listen(listen)
			if err != nil {
				return err
			}
			defer ln.Close()
			if ln.Open != "" {
				fmt.Fprintln(stderr, "sctrace: warning: --listen:", ln.Open)
			}
			fmt.Fprintf(stderr, "sctrace: waiting for gdb: gdb -ex 'target remote %s'\n", ln.Target)
			warn := func(msg string) { fmt.Fprintln(stderr, "sctrace: warning:", msg) }
			var live *liveSave
			if out != "" {
				live = startLiveSave(out, syn, warn)
			}
			t, err := proxy.Serve(cmd.Context(), ln, proxy.Config{
				To: to, Symbols: syms, Timeout: timeout, StackWords: tui.StackWords,
				Listing: list, Syntax: syn, Warn: warn, Recorded: live.recorded,
			})
			live.stop()
			steps := 0
			if t != nil {
				steps = t.Len()
			}
			if errors.Is(err, context.Canceled) {
				err = nil // ctrl-c: an ordinary end
			}
			if out != "" && t != nil {
				write, ext := trace.WriterFor(t, out, syn)
				if werr := outfile.Save(out, "sctrace-trace-*"+ext, write); werr != nil {
					return errors.Join(err, werr)
				}
				fmt.Fprintf(stderr, "sctrace: %d steps saved to %s\n", steps, out)
			} else if out != "" {
				fmt.Fprintf(stderr, "sctrace: gdb stepped no instruction: nothing saved to %s\n", out)
			}
			return err
		},
	}
	fl := cmd.Flags()
	fl.DurationVar(&timeout, "timeout", 5*time.Second, "deadline for each of the proxy's own exchanges with the stub")
	fl.StringVar(&to, "to", "", "the QEMU gdbstub to connect gdb to: HOST:PORT, :PORT or unix:PATH")
	fl.StringVar(&listen, "listen", "", "where gdb connects: unix:PATH, :PORT (loopback) or HOST:PORT\n(default: a Unix socket in a new private directory)")
	fl.StringVarP(&symfile, "symbols", "s", "", "symbols from `FILE`: an ELF (vmlinux) or a System.map (default: the bundled\nkernel's when the guest runs it, or a Linux guest's kallsyms)")
	fl.StringVarP(&out, "out", "o", "", "save the trace to `FILE` when the session ends: .sctrace for the compact\nformat, .txt or .md to read, anything else JSON")
	fl.StringVar(&listing, "listing", "-", "write the live listing of the steps to `FILE` (- for standard output, none for none)")
	fl.StringVar(&syntax, "syntax", "att", "assembly syntax of the listing: att or intel")
	return cmd
}

// liveSave keeps saving the trace the proxy records to one file while gdb
// steps, at most every tui.FollowInterval and each time whole (written
// beside it and renamed over it), so that `sctrace view --follow FILE` in
// another terminal shows the steps as they come and never reads a file
// half written.
type liveSave struct {
	path string
	syn  trace.Syntax
	warn func(string)
	next chan *trace.Trace // the latest view not yet saved
	done chan struct{}
}

func startLiveSave(path string, syn trace.Syntax, warn func(string)) *liveSave {
	l := &liveSave{path: path, syn: syn, warn: warn, next: make(chan *trace.Trace, 1), done: make(chan struct{})}
	go l.run()
	return l
}

// recorded hands the saver a view of t, in place of one it has not saved
// yet. It is called on the proxy's goroutine only, so after the drain
// there is room for the send. A nil l does nothing.
func (l *liveSave) recorded(t *trace.Trace) {
	if l == nil {
		return
	}
	v := t.View(t.Len())
	select {
	case <-l.next:
	default:
	}
	l.next <- v
}

func (l *liveSave) run() {
	defer close(l.done)
	warned := false
	for v := range l.next {
		write, _ := trace.WriterFor(v, l.path, l.syn)
		if err := outfile.Write(l.path, write); err != nil && !warned {
			l.warn(fmt.Sprintf("saving the steps so far to %s: %v (it is tried again at the end)", l.path, err))
			warned = true
		}
		time.Sleep(tui.FollowInterval)
	}
}

// stop ends the saving, after the save under way; the caller then saves
// the whole trace one last time. A nil l does nothing.
func (l *liveSave) stop() {
	if l == nil {
		return
	}
	close(l.next)
	<-l.done
}

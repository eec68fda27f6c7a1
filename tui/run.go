package tui

import (
	"context"
	"errors"
	"fmt"
	"github.com/charmbracelet/x/term"
	"io"
	"os"

	tea "charm.land/bubbletea/v2"
)

// Run shows the TUI until the user quits, then closes the driver (which
// removes breakpoints and ends QEMU when sctrace started it). ctx ending
// (SIGTERM) ends the program the same way. in and out default to the
// terminal.
func Run(ctx context.Context, cfg Config, in io.Reader, out io.Writer) error {
	if in == nil && out == nil && !IsTerminal(os.Stdout) {
		return ErrNoTerminal
	}
	m := New(cfg)
	opts := []tea.ProgramOption{tea.WithContext(ctx)}
	if in != nil {
		opts = append(opts, tea.WithInput(in))
	}
	if out != nil {
		opts = append(opts, tea.WithOutput(out))
	}
	p := tea.NewProgram(m, opts...)
	_, err := p.Run()
	m.cancel()
	var cerr error
	if d := m.hold.get(); d != nil {
		cerr = d.Close()
	}
	if errors.Is(err, tea.ErrProgramKilled) && ctx.Err() != nil {
		err = nil
	}
	switch name, steps, kerr := m.Kept(); {
	case kerr != nil:
		err = errors.Join(err, fmt.Errorf("the unsaved recording could not be kept: %w", kerr))
	case name != "":
		fmt.Fprintf(os.Stderr, "sctrace: the recording of %d steps was not saved; it is kept in %s (sctrace view opens it)\n", steps, name)
	}
	return errors.Join(err, m.Err(), cerr)
}

// ErrNoTerminal is returned by Run when standard output is not a terminal.
var ErrNoTerminal = errors.New("the interactive view needs a terminal; to print a trace instead, use --trace (run, run linux) or the trace command")

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(f.Fd())
}

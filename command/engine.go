package command

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sctrace/sctrace/expr"
	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/internal/termtext"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/session"
	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// Engine runs commands against a live session. It keeps the breakpoints
// it set, and Close removes them. It is not safe for concurrent use.
type Engine struct {
	// S is the live session; nil when there is none (a replay), where
	// only help runs.
	S *session.Session
	// Out receives what commands show.
	Out io.Writer
	// Confirm is asked before set writes the guest; the write is made only
	// when it returns true. Nil refuses every write.
	Confirm func(question string) bool
	// Deadline, when not zero, bounds how long continue and until let the
	// guest run before stopping it.
	Deadline time.Duration
	// Syntax is the assembly syntax of disassembly.
	Syntax trace.Syntax
	// Mechanism is what trace waits for in user mode ("" is syscall).
	Mechanism mechanism.Mechanism

	bps    []Breakpoint
	nextBP int
	// moved is set when the guest ran outside the recorder (continue,
	// until): the recording no longer leads to where the CPU is, so the
	// next recording starts afresh.
	moved bool
	prev  *trace.Trace // the last recording set aside by a fresh start
}

// Breakpoint is a hardware breakpoint the engine set.
type Breakpoint struct {
	ID   int
	Addr uint64
	Spec string // as given: "do_syscall_64", "0xffffffff81000000"
	Hits int
}

// New returns an engine on s (nil for none) writing to out.
func New(s *session.Session, out io.Writer) *Engine {
	// Until the first recording, the recorder's view of the CPU may be
	// from when the session opened.
	return &Engine{S: s, Out: out, Syntax: trace.ATT, moved: true}
}

// ErrNotConfirmed is returned by set when the write was not confirmed.
var ErrNotConfirmed = errors.New("not written: not confirmed")

// ErrInterrupted is matched by the error of a command that ctrl-c (the
// context's end) stopped.
var ErrInterrupted = errors.New("interrupted")

// Run parses and runs one command line. Blank lines and comments do
// nothing.
func (e *Engine) Run(ctx context.Context, line string) error {
	c, err := Parse(line)
	if err != nil {
		return err
	}
	if c.Verb == "" {
		return nil
	}
	return e.Exec(ctx, c)
}

// Exec runs a parsed command.
func (e *Engine) Exec(ctx context.Context, c Command) error {
	v, err := lookupVerb(c.Verb)
	if err != nil {
		return err
	}
	if v.live && (e.S == nil || e.S.Conn == nil) {
		return fmt.Errorf("%s needs a live guest (attach to a QEMU gdbstub first)", c.Verb)
	}
	var run func(context.Context, Command) error
	switch c.Verb {
	case "break":
		run = e.breakCmd
	case "delete":
		run = e.deleteCmd
	case "continue":
		run = func(ctx context.Context, c Command) error { return e.cont(ctx, 0, false) }
	case "until":
		run = e.untilCmd
	case "stepi":
		run = e.stepi
	case "x":
		run = e.examine
	case "print":
		run = e.print
	case "info":
		run = e.info
	case "set":
		run = e.set
	case "trace":
		run = e.traceCmd
	case "save":
		run = e.save
	case "help":
		return Help(e.Out, c.Topic)
	default:
		return unknownCommand(c.Verb)
	}
	if err := run(ctx, c); err != nil {
		if ctx.Err() != nil && !errors.Is(err, ErrInterrupted) && !errors.Is(err, ctx.Err()) {
			return clean(fmt.Errorf("%s: %w: %w", c.Verb, ErrInterrupted, err))
		}
		return clean(fmt.Errorf("%s: %w", c.Verb, err))
	}
	return nil
}

// Breakpoints returns the breakpoints set, in the order they were set.
func (e *Engine) Breakpoints() []Breakpoint { return append([]Breakpoint(nil), e.bps...) }

// Close removes every breakpoint the engine set, even when ctx is done.
func (e *Engine) Close(ctx context.Context) error {
	if e.S == nil || e.S.Conn == nil {
		e.bps = nil
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var errs []error
	for _, b := range e.bps {
		if err := e.S.Conn.ClearBreakpoint(ctx, gdbremote.Hardware, b.Addr, 1); err != nil {
			errs = append(errs, fmt.Errorf("breakpoint %d at %s may be left in the guest: %w", b.ID, e.name(b.Addr), err))
		}
	}
	e.bps = nil
	return errors.Join(errs...)
}

// printf writes to Out with control characters escaped: symbol names and
// the stub's text come from the guest, which may be hostile (see
// termtext).
func (e *Engine) printf(format string, args ...any) {
	fmt.Fprint(e.Out, termtext.Text(fmt.Sprintf(format, args...)))
}

// cleanError is an error whose message has its control characters
// escaped, for one that quotes the guest.
type cleanError struct{ err error }

func (c cleanError) Error() string { return termtext.Line(c.err.Error()) }

func (c cleanError) Unwrap() error { return c.err }

// clean returns err, escaped when its message needs it.
func clean(err error) error {
	if err == nil || termtext.IsClean(err.Error()) {
		return err
	}
	return cleanError{err}
}

func (e *Engine) syms() *symbols.Table { return e.S.Symbols }

// name renders addr as "0x… <sym+off>".
func (e *Engine) name(addr uint64) string {
	if e.S != nil {
		if s := e.syms().Symbolize(addr); s != "" {
			return fmt.Sprintf("%#x <%s>", addr, s)
		}
	}
	return fmt.Sprintf("%#x", addr)
}

// state reads the registers at the current stop.
func (e *Engine) state(ctx context.Context) (*x86.State, error) {
	return e.S.Target.State(ctx)
}

// env is the live expression environment at the current stop.
func (e *Engine) env(ctx context.Context, physical bool) (*expr.Live, error) {
	st, err := e.state(ctx)
	if err != nil {
		return nil, err
	}
	return &expr.Live{Ctx: ctx, T: e.S.Target, State: st, Symbols: e.syms(), Regions: e.S.Regions, Physical: physical}, nil
}

// eval evaluates x at the current stop.
func (e *Engine) eval(ctx context.Context, x expr.Expr) (uint64, *expr.Live, error) {
	env, err := e.env(ctx, false)
	if err != nil {
		return 0, nil, err
	}
	v, err := expr.Eval(x, env)
	return v, env, err
}

func le(v uint64, size int) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, v)
	return b[:size]
}

// Line is one command of a script, with where it came from ("cmds:3",
// "--batch 2") for error messages.
type Line struct {
	Where, Text string
}

// ReadScript reads a command file, one command a line; blank lines and
// lines starting with # are kept out.
func ReadScript(r io.Reader, name string) ([]Line, error) {
	var out []Line
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		out = append(out, Line{Where: fmt.Sprintf("%s:%d", name, n), Text: text})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return out, nil
}

// Batch runs lines in order, each echoed to Out after "(sctrace) ", and
// stops at the first that fails (a command after a failed break or set
// would act on a guest the script did not expect). Every line is parsed
// before any runs, so a typo at the end stops the script before it
// touches the guest. The error names the line.
func (e *Engine) Batch(ctx context.Context, lines []Line) error {
	cmds := make([]Command, len(lines))
	for i, l := range lines {
		c, err := Parse(l.Text)
		if err != nil {
			return fmt.Errorf("%s: %w (nothing was run)", l.Where, err)
		}
		cmds[i] = c
	}
	for i, c := range cmds {
		if c.Verb == "" {
			continue
		}
		e.printf("(sctrace) %s\n", lines[i].Text)
		if err := e.Exec(ctx, c); err != nil {
			if left := len(cmds) - i - 1; left > 0 {
				return fmt.Errorf("%s: %w (%d more not run)", lines[i].Where, err, left)
			}
			return fmt.Errorf("%s: %w", lines[i].Where, err)
		}
	}
	return nil
}

// Following tells the engine that the recorder's view of the CPU is
// current: a front end that drives the recorder itself between commands
// (the TUI) has it at the current stop, so the next command that records
// or writes goes on from there instead of starting afresh.
func (e *Engine) Following() { e.moved = false }

// Sync starts a new recording at the current stop when the guest ran on
// outside the recorder since the last one (continue, until), so that a
// front end showing the recorder sees where the CPU is. The recording set
// aside stays for save.
func (e *Engine) Sync(ctx context.Context) error { return e.fresh(ctx) }

// Lift removes the engine's breakpoints from the stub while a front end
// lets the guest run by other means (the TUI's run to the next system
// call), so they do not stop it there; the function it returns puts them
// back.
func (e *Engine) Lift(ctx context.Context) (func() error, error) { return e.lift(ctx) }

package tui

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	tea "charm.land/bubbletea/v2"

	"github.com/sctrace/sctrace/command"
	"github.com/sctrace/sctrace/internal/termtext"
	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/watch"
)

// maxHistory is how many command lines the history keeps.
const maxHistory = 200

// cmdState is the command line: its history, its completions, the engine
// that runs the commands and the watch list.
type cmdState struct {
	history     []string
	hist        int // index in history while browsing; len(history) when not
	draft       string
	completions []string
	eng         *command.Engine
	watches     watch.List
	// cancel ends the command or search in flight (esc).
	cancel context.CancelFunc
	// reply answers the confirmation asked; wait goes on waiting for the
	// command once it is answered.
	reply chan<- bool
	wait  tea.Cmd
}

// confirmMsg asks the user to confirm what a command is about to do.
type confirmMsg struct {
	q     string
	reply chan<- bool
	wait  tea.Cmd
}

// engineDriver is a driver with a live session that commands run on.
type engineDriver interface {
	engine() *command.Engine
	symbols() *symbols.Table
}

// watcher is a driver that evaluates the watches at each stop.
type watcher interface{ setWatches(*watch.List) }

// output is the pane that shows what commands printed.
type output struct {
	title string
	lines []string
	top   int
}

// tuiVerbs are the commands the TUI adds to the engine's.
var tuiVerbs = []string{"watch", "unwatch"}

func (m *Model) engine() *command.Engine {
	if d, ok := m.drv.(engineDriver); ok {
		return d.engine()
	}
	if m.cmd.eng == nil {
		m.cmd.eng = command.New(nil, nil)
	}
	return m.cmd.eng
}

func (m *Model) syms() *symbols.Table {
	if d, ok := m.drv.(engineDriver); ok {
		return d.symbols()
	}
	return nil
}

func (m *Model) openCommand() {
	m.openPrompt(inputCommand, ":", "")
	m.cmd.hist = len(m.cmd.history)
	m.cmd.completions = nil
}

// commandKey handles history and completion on the command line; false
// leaves the key to the prompt.
func (m *Model) commandKey(k tea.KeyPressMsg) (bool, tea.Model, tea.Cmd) {
	c := &m.cmd
	switch k.String() {
	case "up":
		if c.hist > 0 {
			if c.hist == len(c.history) {
				c.draft = m.prompt.Value()
			}
			c.hist--
			m.prompt.SetValue(c.history[c.hist])
			m.prompt.CursorEnd()
		}
		return true, m, nil
	case "down":
		if c.hist < len(c.history) {
			c.hist++
			v := c.draft
			if c.hist < len(c.history) {
				v = c.history[c.hist]
			}
			m.prompt.SetValue(v)
			m.prompt.CursorEnd()
		}
		return true, m, nil
	case "tab":
		m.complete()
		return true, m, nil
	}
	c.completions = nil
	return false, m, nil
}

// complete finishes the word at the end of the command line: the only
// completion, or the part all of them share, listing them above.
func (m *Model) complete() {
	line := m.prompt.Value()
	var cs []string
	if !strings.ContainsAny(line, " \t") {
		for _, v := range tuiVerbs {
			if strings.HasPrefix(v, line) {
				cs = append(cs, v+" ")
			}
		}
	}
	cs = append(cs, command.Complete(line, m.syms())...)
	m.cmd.completions = nil
	switch len(cs) {
	case 0:
		return
	case 1:
		m.prompt.SetValue(cs[0])
	default:
		p := cs[0]
		for _, c := range cs[1:] {
			for !strings.HasPrefix(c, p) {
				p = p[:len(p)-1]
			}
		}
		if len(p) > len(line) {
			m.prompt.SetValue(p)
		}
		m.cmd.completions = cs
	}
	m.prompt.CursorEnd()
}

// runCommand runs a command line: the TUI's own (watch, unwatch) here,
// the engine's in a command off the update loop.
func (m *Model) runCommand(line string) (tea.Model, tea.Cmd) {
	m.cmd.completions = nil
	if line == "" {
		return m, nil
	}
	if h := m.cmd.history; len(h) == 0 || h[len(h)-1] != line {
		m.cmd.history = append(h, line)
		if len(m.cmd.history) > maxHistory {
			m.cmd.history = m.cmd.history[1:]
		}
	}
	verb, rest, _ := strings.Cut(line, " ")
	rest = strings.TrimSpace(rest)
	switch verb {
	case "watch":
		return m.watchCmd(rest)
	case "unwatch":
		return m.unwatchCmd(rest)
	}
	c, err := command.Parse(line)
	if err != nil {
		m.fail(oneLine(err))
		return m, nil
	}
	if c.Verb == "" {
		return m, nil
	}
	if c.Verb == "help" && c.Topic == "" {
		var b bytes.Buffer
		command.Help(&b, "")
		b.WriteString("TUI commands:\n  watch EXPR                     add EXPR to the watch pane (tab shows it)\n  unwatch N                      remove watch N\n")
		m.showOutput(":help", b.String())
		return m, nil
	}
	if m.busy != nil {
		m.say("busy %s: run the command when it is done (esc stops a command)", m.busy.label)
		return m, nil
	}
	if m.drv == nil {
		return m, nil
	}
	eng, syn, d := m.engine(), m.syn, m.drv
	return m.startCommand(op{kind: opCommand, label: "running :" + c.Verb, line: line},
		func(ctx context.Context, confirm func(string) bool) (string, error) {
			var b bytes.Buffer
			eng.Out, eng.Confirm, eng.Syntax = &b, confirm, syn
			err := eng.Exec(ctx, c)
			if l, ok := d.(*Live); ok {
				// continue and until move the guest outside the
				// recorder: a new recording starts where it stopped.
				err = errors.Join(err, eng.Sync(ctx))
				l.refresh(ctx)
			}
			return b.String(), err
		})
}

// startCommand runs fn off the update loop. A confirmation fn asks for
// comes back as a confirmMsg; its end as an opDoneMsg.
func (m *Model) startCommand(o op, fn func(ctx context.Context, confirm func(string) bool) (string, error)) (tea.Model, tea.Cmd) {
	m.busy = &o
	ctx, cancel := context.WithCancel(m.ctx)
	m.cmd.cancel = cancel
	if w, ok := m.drv.(watcher); ok {
		w.setWatches(m.cmd.watches.Clone())
	}
	asks := make(chan confirmMsg)
	done := make(chan opDoneMsg, 1)
	d := m.drv
	go func() {
		confirm := func(q string) bool {
			reply := make(chan bool, 1)
			select {
			case asks <- confirmMsg{q: q, reply: reply}:
			case <-ctx.Done():
				return false
			}
			select {
			case ok := <-reply:
				return ok
			case <-ctx.Done():
				return false
			}
		}
		out, err := fn(ctx, confirm)
		done <- opDoneMsg{op: o, out: out, err: err, snap: d.Snapshot()}
	}()
	var wait tea.Cmd
	wait = func() tea.Msg {
		select {
		case a := <-asks:
			a.wait = wait
			return a
		case r := <-done:
			return r
		}
	}
	return m, wait
}

// askConfirm shows a command's question; y answers yes, anything else no.
func (m *Model) askConfirm(c confirmMsg) (tea.Model, tea.Cmd) {
	if m.quitting {
		c.reply <- false
		return m, c.wait
	}
	m.cmd.reply, m.cmd.wait = c.reply, c.wait
	m.openPrompt(inputConfirm, termtext.Line(c.q)+" [y/N] ", "")
	return m, nil
}

func (m *Model) confirmKey(k tea.KeyPressMsg) (tea.Model, tea.Cmd) {
	yes := k.String() == "y" || k.String() == "Y"
	m.input = inputNone
	m.prompt.Blur()
	reply, wait := m.cmd.reply, m.cmd.wait
	m.cmd.reply, m.cmd.wait = nil, nil
	if yes, then := yes, m.onYes; then != nil {
		m.onYes = nil
		if yes {
			return then()
		}
		m.say("not replaced: w saves the recording")
		return m, nil
	}
	if reply != nil {
		reply <- yes
	}
	return m, wait
}

// commandDone shows what a command printed, and its error on one line.
func (m *Model) commandDone(d opDoneMsg) {
	if d.op.line == "" { // the TUI's own reads: only an error is news
		if d.err != nil {
			m.fail(oneLine(d.err))
		}
		return
	}
	if d.out != "" {
		m.showOutput(":"+d.op.line, d.out)
	}
	switch {
	case errors.Is(d.err, command.ErrNotConfirmed):
		m.say(":%s: not written (not confirmed)", d.op.line)
	case d.err != nil:
		m.fail(oneLine(d.err))
	case d.out != "":
		m.say(":%s: done (esc closes the output, pgup/pgdn scroll it)", d.op.line)
	default:
		m.say(":%s: done", d.op.line)
	}
}

// oneLine makes err one line for the bottom line.
func oneLine(err error) error {
	s := strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
	return errors.New(termtext.Line(s))
}

func (m *Model) showOutput(title, text string) {
	text = termtext.Text(strings.ReplaceAll(strings.TrimRight(text, "\n"), "\t", "  "))
	m.out = &output{title: title, lines: strings.Split(text, "\n")}
}

// outputKey scrolls or closes the output pane; false passes the key on
// (after closing the pane, unless it opens the command line).
func (m *Model) outputKey(k tea.KeyPressMsg) (bool, tea.Model, tea.Cmd) {
	page := max(1, m.outRect().h-3)
	switch k.String() {
	case "pgdown", "J", "space":
		m.out.top += page
	case "pgup", "K":
		m.out.top = max(0, m.out.top-page)
	case "down":
		m.out.top++
	case "up":
		m.out.top = max(0, m.out.top-1)
	case "esc", "enter", "q":
		m.out = nil
	case ":":
		return false, m, nil
	default:
		m.out = nil
		return false, m, nil
	}
	return true, m, nil
}

// watchCmd adds a watch; live, it is evaluated at once.
func (m *Model) watchCmd(text string) (tea.Model, tea.Cmd) {
	if text == "" {
		m.fail(errors.New("watch EXPR: say what to watch: watch $rsp, watch *(u64*)($gs_base+0x6014), watch pt_regs->ip"))
		return m, nil
	}
	if m.busy != nil {
		m.say("busy %s: add the watch when it is done", m.busy.label)
		return m, nil
	}
	w, err := m.cmd.watches.Add(text)
	if err != nil {
		m.fail(oneLine(err))
		return m, nil
	}
	m.say("watch %d: %s (unwatch %d removes it)", w.ID, w.Text, w.ID)
	if !m.layout().wide {
		m.lower = paneWatch
	}
	return m.refreshWatches()
}

func (m *Model) unwatchCmd(arg string) (tea.Model, tea.Cmd) {
	id, err := strconv.Atoi(arg)
	if err != nil {
		m.fail(fmt.Errorf("unwatch N: %q is not a watch number (the watch pane numbers them)", arg))
		return m, nil
	}
	if m.busy != nil {
		m.say("busy %s: remove the watch when it is done", m.busy.label)
		return m, nil
	}
	if err := m.cmd.watches.Remove(id); err != nil {
		m.fail(err)
		return m, nil
	}
	m.say("watch %d removed", id)
	return m.refreshWatches()
}

// refreshWatches evaluates the watches at the live stop.
func (m *Model) refreshWatches() (tea.Model, tea.Cmd) {
	l, ok := m.drv.(*Live)
	if !ok {
		return m, nil
	}
	status, warn := m.status, m.warn
	mdl, cmd := m.startCommand(op{kind: opCommand, label: "reading the watches"},
		func(ctx context.Context, _ func(string) bool) (string, error) {
			l.refresh(ctx)
			return "", nil
		})
	m.status, m.warn = status, warn
	return mdl, cmd
}

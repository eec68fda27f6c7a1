package tui

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"charm.land/bubbles/v2/key"
	"charm.land/bubbles/v2/spinner"
	"charm.land/bubbles/v2/textinput"
	tea "charm.land/bubbletea/v2"
	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/internal/outfile"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// Config sets up the TUI.
type Config struct {
	// Driver is used when set (a replay, or a session already attached).
	Driver Driver
	// Start, used when Driver is nil, attaches to a guest (booting QEMU if
	// need be) while a spinner turns. It must release what it started when
	// it fails.
	Start func(ctx context.Context) (Driver, error)
	// Starting is the spinner's text, e.g. "booting the teaching kernel".
	Starting string
	// BootWait, when set, is offered when Start fails because the guest
	// has not booted yet (trace.ErrNotBooted: QEMU started with -S): it
	// lets the guest run until a 64-bit kernel is running, then attaches
	// as Start does. BootWaitFor says for how long at most.
	BootWait    func(ctx context.Context) (Driver, error)
	BootWaitFor time.Duration
	// Syntax is the initial assembly syntax.
	Syntax trace.Syntax
	// SaveDir is where `w` writes traces ("" is the working directory).
	SaveDir string
	// Now gives the time for saved file names (time.Now when nil).
	Now func() time.Time
	// Lesson, when set, shows a walkthrough in a lesson pane (lesson.go).
	Lesson *LessonConfig
}

// opKind names a guest operation.
type opKind int

const (
	opStep opKind = iota
	opOver
	opRun
	opEntry
	opRoundTrip
	opProbe
	opCommand
	opFind
)

// op is a guest operation to run in a tea.Cmd.
type op struct {
	kind  opKind
	label string                                    // shown while it runs, e.g. "running to the next event"
	cond  trace.Until                               // for opRun
	entry bool                                      // opRoundTrip: go to the next entry first
	count int                                       // opStep: how many steps
	line  string                                    // opCommand: the command line; opFind: the query
	run   func(ctx context.Context) (string, error) // opCommand, opFind: the work
}

// opDoneMsg reports a finished guest operation.
type opDoneMsg struct {
	op      op
	snap    Snapshot
	reason  trace.StopReason
	probed  int    // opProbe: MSRs read
	stepped int    // opStep: steps made
	out     string // opCommand: what the command printed; opFind: the answer
	err     error
}

// startedMsg reports the end of start-up.
type startedMsg struct {
	drv Driver
	err error
}

// savedMsg reports the end of a `w` save.
type savedMsg struct {
	name  string
	steps int
	err   error
}

// wroteMsg reports the end of a file write other than `w`'s (lesson
// progress): its error, if any, is shown.
type wroteMsg struct{ err error }

// forceQuitMsg ends the program when an operation does not return in time
// after being cancelled.
type forceQuitMsg struct{}

// keptMsg reports the end of the write that keeps an unsaved recording
// when the TUI quits.
type keptMsg struct {
	name  string
	steps int
	err   error
}

// progressMsg asks for the progress of guest operation seq, if it still
// runs.
type progressMsg struct{ seq int }

// progressEvery is how often the status shows the progress of a recording.
const progressEvery = 250 * time.Millisecond

// keepAfter is how many steps make a recording worth keeping: an unsaved
// recording longer than this is not replaced without asking (c, R) nor
// thrown away on quitting (it is written to a private temporary file).
// Shorter ones take a moment to record again.
const keepAfter = 1000

// progresser is a Driver that counts the steps the operation in flight has
// recorded so far; it is read while the operation runs.
type progresser interface {
	Recorded() int
}

// inputMode says what the one-line prompt is for.
type inputMode int

const (
	inputNone inputMode = iota
	inputSearch
	inputGoto
	inputSave
	inputCommand
	inputConfirm
)

// pane names the lower-right pane shown on small screens.
type pane int

const (
	paneEffects pane = iota
	paneSystem
	paneStack
	paneWatch
	numPanes
)

// holder lets Run close a driver that start-up produced even when the
// program ended before the model saw it.
type holder struct {
	mu  sync.Mutex
	drv Driver
}

func (h *holder) set(d Driver) {
	h.mu.Lock()
	h.drv = d
	h.mu.Unlock()
}

func (h *holder) get() Driver {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.drv
}

// Model is the bubbletea model of the TUI.
type Model struct {
	cfg    Config
	hold   *holder
	ctx    context.Context
	cancel context.CancelFunc

	drv       Driver
	snap      Snapshot
	pos       int // 0..snap.Len(): the state before step pos
	syn       trace.Syntax
	width     int
	height    int
	spin      spinner.Model
	startErr  error
	bootErr   error // Start found the guest not booted; BootWait is offered
	bootTried bool  // BootWait was started

	busy    *op // the operation in flight
	busySeq int // counts guest operations, for progressMsg
	// stop cancels the recording in flight (esc); stopped says esc did.
	stop    context.CancelFunc
	stopped bool
	// recorded is the progress of the recording in flight (progresser).
	recorded int
	// unsaved says the live recording has steps that w has not saved;
	// kept and keptErr say where quitting wrote them.
	unsaved bool
	kept    string
	keptN   int
	keptErr error
	// onYes runs when the [y/N] question the prompt asks is answered y.
	onYes  func() (tea.Model, tea.Cmd)
	queued *tea.KeyPressMsg
	// queuedSteps counts the s presses made while a step was in flight:
	// they run as one operation when it returns.
	queuedSteps int
	keys        KeyMap
	quitting    bool
	// writing counts the file writes in flight (saves, lesson progress):
	// they run as commands, off the update loop, and quitting waits for
	// them.
	writing int
	// later holds the commands queued while handling a message (file
	// writes); Update returns them with its own.
	later []tea.Cmd

	status  string // the last message
	warn    bool   // status is an error
	help    bool
	helpTop int // first help row shown
	showOld bool
	lower   pane
	input   inputMode
	prompt  textinput.Model
	scroll  int // code pane offset from centred, by mouse wheel
	effTop  int // first effect line shown

	cmd  cmdState // the command line, its history and its engine
	out  *output  // the command output pane, nil when closed
	find findState

	ls *lessonState // the lesson pane, nil without a lesson
}

// New returns a model for cfg. Use it with tea.NewProgram, or call Run.
func New(cfg Config) *Model {
	ctx, cancel := context.WithCancel(context.Background())
	ti := textinput.New()
	ti.CharLimit = 64
	m := &Model{
		cfg: cfg, hold: &holder{}, ctx: ctx, cancel: cancel,
		syn:    cfg.Syntax,
		spin:   spinner.New(spinner.WithSpinner(spinner.Dot)),
		prompt: ti,
		keys:   DefaultKeyMap(),
	}
	if cfg.Lesson != nil && cfg.Lesson.Lesson != nil {
		m.ls = newLessonState(*cfg.Lesson)
	}
	if cfg.Driver != nil {
		m.setDriver(cfg.Driver)
	}
	return m
}

func (m *Model) setDriver(d Driver) {
	m.drv = d
	m.hold.set(d)
	m.snap = d.Snapshot()
	m.pos = 0
	if d.Live() {
		m.pos = m.snap.Len()
		mech := mechanism.Mechanism(m.snap.Header.Mechanism)
		if l, ok := d.(*Live); ok && l.Mechanism != "" {
			mech = l.Mechanism
		}
		m.status = "stopped before " + mech.Entry() + ": s steps, ? shows every key"
	} else if f, ok := d.(*Follow); ok {
		m.status = fmt.Sprintf("following %s: %d steps; it is read again when it changes", filepath.Base(f.Path), m.snap.Len())
	} else {
		m.status = fmt.Sprintf("replay of %d steps: f/b walk, e next event, ? every key", m.snap.Len())
	}
	m.lessonStarted()
}

// Init starts the spinner and start-up when there is no driver yet.
func (m *Model) Init() tea.Cmd {
	if m.drv != nil || m.cfg.Start == nil {
		return m.followTick()
	}
	return m.startWith(m.cfg.Start)
}

// startWith turns the spinner while start attaches, off the update loop;
// a startedMsg reports it.
func (m *Model) startWith(start func(ctx context.Context) (Driver, error)) tea.Cmd {
	ctx, hold := m.ctx, m.hold
	return tea.Batch(m.spin.Tick, func() tea.Msg {
		d, err := start(ctx)
		if d != nil {
			hold.set(d)
		}
		return startedMsg{drv: d, err: err}
	})
}

// Update handles a message. File I/O never runs here: it is returned as
// commands, whose results come back as messages.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	mdl, cmd := m.update(msg)
	if len(m.later) > 0 {
		cmd = tea.Batch(append(m.later, cmd)...)
		m.later = nil
	}
	return mdl, cmd
}

// write queues fn, a file write, to run as a command once the message in
// hand is handled; done turns its error into the message that reports it.
func (m *Model) write(fn func() error, done func(error) tea.Msg) {
	m.writing++
	m.later = append(m.later, func() tea.Msg { return done(fn()) })
}

// idle returns tea.Quit when quitting and nothing is in flight any more.
func (m *Model) idle() tea.Cmd {
	if m.quitting && m.busy == nil && m.writing == 0 {
		return tea.Quit
	}
	return nil
}

func (m *Model) update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		m.scroll = 0 // a new size re-centres the code pane on the current step
		return m, nil
	case spinner.TickMsg:
		if m.drv != nil || m.startErr != nil {
			return m, nil
		}
		var cmd tea.Cmd
		m.spin, cmd = m.spin.Update(msg)
		return m, cmd
	case startedMsg:
		if msg.err != nil && errors.Is(msg.err, trace.ErrNotBooted) && m.cfg.BootWait != nil && !m.bootTried {
			m.bootErr = msg.err
			return m, nil
		}
		if msg.err != nil {
			m.startErr = msg.err
			return m, tea.Quit
		}
		m.setDriver(msg.drv)
		return m, m.idle()
	case opDoneMsg:
		return m.finish(msg)
	case forceQuitMsg:
		if m.busy == nil && m.writing > 0 {
			// A file write always ends: wait for it, the recording
			// it keeps would be lost.
			return m, tea.Tick(time.Second, func(time.Time) tea.Msg { return forceQuitMsg{} })
		}
		return m, tea.Quit
	case progressMsg:
		if m.busy == nil || msg.seq != m.busySeq {
			return m, nil
		}
		if p, ok := m.drv.(progresser); ok {
			m.recorded = p.Recorded()
		}
		return m, m.progressTick()
	case savedMsg:
		m.writing--
		var kept *outfile.KeptError
		if msg.err == nil || errors.As(msg.err, &kept) {
			if msg.steps >= m.snap.Len() {
				m.unsaved = false
			}
		}
		if msg.err != nil {
			m.fail(fmt.Errorf("save: %w", msg.err))
		} else {
			m.say("saved %d steps to %s", msg.steps, msg.name)
		}
		return m, m.idle()
	case keptMsg:
		m.writing--
		m.kept, m.keptN, m.keptErr = msg.name, msg.steps, msg.err
		return m, m.idle()
	case wroteMsg:
		m.writing--
		if msg.err != nil {
			m.fail(msg.err)
		}
		return m, m.idle()
	case tea.MouseWheelMsg:
		m.wheel(msg.Mouse())
		return m, nil
	case tea.KeyPressMsg:
		status, pos := m.status, m.pos
		mdl, cmd := m.key(msg)
		if m.pos != pos && m.status == status && m.busy == nil {
			// What the status said was about the step left behind.
			m.status, m.warn = "", false
		}
		m.lessonSync()
		return mdl, cmd
	case confirmMsg:
		return m.askConfirm(msg)
	case foundMsg:
		m.foundReg(msg)
		return m, nil
	case followMsg:
		return m.followed(msg)
	}
	return m, nil
}

// Err returns the start-up error, if start-up failed.
func (m *Model) Err() error { return m.startErr }

// Driver returns the driver, nil before start-up finished.
func (m *Model) Driver() Driver { return m.hold.get() }

// Pos returns the position shown: the state before step Pos.
func (m *Model) Pos() int { return m.pos }

// Steps returns how many steps have been recorded.
func (m *Model) Steps() int { return m.snap.Len() }

func (m *Model) say(format string, args ...any) {
	m.status, m.warn = fmt.Sprintf(format, args...), false
}

func (m *Model) fail(err error) {
	m.status, m.warn = err.Error(), true
}

func (m *Model) quit() (tea.Model, tea.Cmd) {
	m.quitting = true
	m.cancel()
	if m.busy == nil {
		m.keepUnsaved()
	}
	if reply, wait := m.cmd.reply, m.cmd.wait; reply != nil {
		// A command waits for an answer: no, and wait for its end.
		m.cmd.reply, m.cmd.wait, m.input = nil, nil, inputNone
		reply <- false
		m.say("stopping…")
		return m, tea.Batch(wait, tea.Tick(5*time.Second, func(time.Time) tea.Msg { return forceQuitMsg{} }))
	}
	if m.drv == nil && m.bootErr != nil && !m.bootTried {
		// Nothing runs while the offer to boot waits for an answer.
		m.startErr = m.bootErr
		return m, tea.Quit
	}
	if m.busy != nil || m.writing > 0 || (m.drv == nil && m.startErr == nil && m.cfg.Start != nil) {
		m.say("stopping…")
		return m, tea.Tick(5*time.Second, func(time.Time) tea.Msg { return forceQuitMsg{} })
	}
	return m, tea.Quit
}

func (m *Model) key(k tea.KeyPressMsg) (tea.Model, tea.Cmd) {
	km := &m.keys
	ks := k.String()
	if ks == "ctrl+c" {
		return m.quit()
	}
	if m.input != inputNone {
		return m.inputKey(k)
	}
	if m.help {
		switch ks {
		case "down", "J", "pgdown", "space":
			m.helpTop++
			return m, nil
		case "up", "K", "pgup":
			m.helpTop = max(0, m.helpTop-1)
			return m, nil
		}
		m.help, m.helpTop = false, 0
		if !key.Matches(k, km.Quit) {
			return m, nil
		}
	}
	if m.out != nil {
		if ok, mdl, cmd := m.outputKey(k); ok {
			return mdl, cmd
		}
	}
	if ks == "esc" && m.busy != nil && m.cmd.cancel != nil {
		m.cmd.cancel()
		return m, nil
	}
	if key.Matches(k, km.Stop) && m.busy != nil && m.stop != nil {
		m.stopped = true
		m.stop()
		m.say("stopping the recording…")
		return m, nil
	}
	if key.Matches(k, km.Quit) {
		return m.quit()
	}
	if m.drv == nil {
		return m.bootKey(k)
	}
	if m.busy != nil {
		switch {
		case key.Matches(k, km.Step) && m.busy.kind == opStep:
			// Every press counts: the steps queued behind the one in
			// flight run as one operation, drawn once.
			m.queuedSteps++
			return m, nil
		case key.Matches(k, km.Step, km.Over, km.Forward, km.Event, km.ToUser):
			// At most one other move waits behind the one in flight.
			kk := k
			m.queued = &kk
			return m, nil
		}
	}
	if m.ls != nil {
		if ok, mdl, cmd := m.lessonKey(ks); ok {
			return mdl, cmd
		}
	}
	n := m.snap.Len()
	switch {
	case key.Matches(k, km.Help):
		m.help = true
	case key.Matches(k, km.Step, km.Forward):
		if m.pos < n {
			m.move(m.pos + 1)
			return m, nil
		}
		if key.Matches(k, km.Step) {
			return m.guest(op{kind: opStep, label: "stepping", count: 1})
		}
		m.say("at the last recorded step: s steps the guest")
	case key.Matches(k, km.Back):
		if m.pos == 0 {
			m.say("at the first recorded step")
			return m, nil
		}
		m.move(m.pos - 1)
	case key.Matches(k, km.Over):
		return m.stepOver()
	case key.Matches(k, km.Event):
		return m.toEvent()
	case key.Matches(k, km.PrevEvent):
		m.toPrevEvent()
	case key.Matches(k, km.ToUser):
		return m.toUser()
	case key.Matches(k, km.Continue):
		if m.busy != nil {
			return m, nil
		}
		o := op{kind: opEntry, label: "running to the next " + m.mechanism()}
		return m.replacing(o, "c runs to the next "+m.mechanism())
	case key.Matches(k, km.RoundTrip):
		if m.busy != nil {
			return m, nil
		}
		cur := m.snap.Current
		o := op{kind: opRoundTrip, label: "recording a round trip",
			entry: cur != nil && cur.CPL() == 3 && n > 0}
		if o.entry {
			return m.replacing(o, "R records the next "+m.mechanism())
		}
		return m.guest(o)
	case key.Matches(k, km.Fast):
		return m.recordFast()
	case key.Matches(k, km.Probe):
		if m.busy != nil {
			return m, nil
		}
		if !m.drv.Live() {
			m.say("p runs rdmsr in the guest: it needs a live guest stopped at CPL 0 (sctrace run or attach), not a replay")
			return m, nil
		}
		if m.pos < n {
			m.say("p probes the live guest where it is now, at the last step (end goes there), not a recorded step")
			return m, nil
		}
		if cur := m.snap.Current; cur == nil || cur.CPL() != 0 {
			m.say("p runs rdmsr in the guest, which needs CPL 0: step into the kernel first")
			return m, nil
		}
		return m.guest(op{kind: opProbe, label: "probing the MSRs with rdmsr"})
	case key.Matches(k, km.Search):
		m.openPrompt(inputSearch, "search (/? for the syntax): ", "")
	case key.Matches(k, km.SearchNext):
		return m.repeatSearch(false)
	case key.Matches(k, km.SearchP):
		return m.repeatSearch(true)
	case key.Matches(k, km.Goto):
		m.openPrompt(inputGoto, fmt.Sprintf("go to step (0-%d): ", n), "")
	case key.Matches(k, km.Command):
		m.openCommand()
	case key.Matches(k, km.Save):
		if m.busy != nil {
			m.say("busy %s: save when it is done", m.busy.label)
			return m, nil
		}
		if m.drv.Trace().Len() == 0 {
			m.say("nothing recorded yet: step first")
			return m, nil
		}
		m.openPrompt(inputSave, "save to: ", "")
		m.prompt.SetValue(m.SaveName())
		m.prompt.CursorEnd()
	case key.Matches(k, km.Syntax):
		if m.syn == trace.ATT {
			m.syn = trace.Intel
			m.say("Intel syntax")
		} else {
			m.syn = trace.ATT
			m.say("AT&T syntax")
		}
	case key.Matches(k, km.Old):
		m.showOld = !m.showOld
		if m.showOld {
			m.say("registers show their values before the last step")
		} else {
			m.say("registers show their current values")
		}
	case key.Matches(k, km.Pane):
		m.lower = (m.lower + 1) % numPanes
	case key.Matches(k, km.EffUp):
		m.effTop = max(0, m.effTop-m.effPage())
	case key.Matches(k, km.EffDown):
		m.effTop += m.effPage()
	case key.Matches(k, km.First):
		m.move(0)
	case key.Matches(k, km.Last):
		m.move(n)
	}
	return m, nil
}

// effPage is how far J/K scroll the effects pane: its height less a line.
func (m *Model) effPage() int {
	if r := m.layout().effects; r.h > 3 {
		return r.h - 3
	}
	return 5
}

func (m *Model) mechanism() string {
	if m.snap.Header.Mechanism != "" {
		return m.snap.Header.Mechanism
	}
	return "system call"
}

func (m *Model) move(p int) {
	m.pos = max(0, min(p, m.snap.Len()))
	m.scroll, m.effTop = 0, 0
}

// guest starts a guest operation, or explains why it cannot.
func (m *Model) guest(o op) (tea.Model, tea.Cmd) {
	if !m.drv.Live() && o.kind != opCommand {
		m.say("replay: no guest attached; that key needs `sctrace run` or `sctrace attach`")
		return m, nil
	}
	if m.busy != nil {
		return m, nil
	}
	m.busy = &o
	m.busySeq++
	m.recorded = 0
	if o.kind != opCommand && o.kind != opFind {
		m.move(m.snap.Len())
	}
	if w, ok := m.drv.(watcher); ok {
		w.setWatches(m.cmd.watches.Clone())
	}
	d, ctx := m.drv, m.ctx
	if o.kind == opCommand || o.kind == opFind {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		m.cmd.cancel = cancel
	}
	var tick tea.Cmd
	if o.records() {
		ctx, m.stop = context.WithCancel(ctx)
		tick = m.progressTick()
	}
	return m, tea.Batch(tick, func() tea.Msg {
		done := opDoneMsg{op: o}
		switch o.kind {
		case opStep:
			for done.stepped < max(o.count, 1) && done.err == nil {
				if done.err = d.Step(ctx, false); done.err == nil {
					done.stepped++
				}
			}
		case opOver:
			done.err = d.Step(ctx, true)
		case opCommand, opFind:
			done.out, done.err = o.run(ctx)
		case opRun:
			done.reason, done.err = d.Run(ctx, o.cond)
		case opEntry:
			done.err = d.NextEntry(ctx)
		case opRoundTrip:
			done.reason, done.err = d.RoundTrip(ctx, o.entry)
		case opProbe:
			done.probed, done.err = d.ProbeMSRs(ctx)
		case opFast:
			done.reason, done.err = runFast(ctx, d)
		}
		done.snap = d.Snapshot()
		return done
	})
}

// records reports whether o records steps for as long as the guest takes
// to get where it goes: esc stops it, and the status shows its progress.
func (o op) records() bool {
	return o.kind == opRoundTrip || o.kind == opRun || o.kind == opFast || o.kind == opEntry
}

// progressTick asks for the progress of the operation in flight.
func (m *Model) progressTick() tea.Cmd {
	seq := m.busySeq
	return tea.Tick(progressEvery, func(time.Time) tea.Msg { return progressMsg{seq: seq} })
}

// replacing starts o, which replaces the recording, after asking when the
// recording is worth keeping and has not been saved.
func (m *Model) replacing(o op, what string) (tea.Model, tea.Cmd) {
	if !m.worthKeeping() {
		return m.guest(o)
	}
	m.onYes = func() (tea.Model, tea.Cmd) { return m.guest(o) }
	m.openPrompt(inputConfirm, fmt.Sprintf("%s and replaces the %d unsaved steps (w saves them): go on? [y/N] ", what, m.snap.Len()), "")
	return m, nil
}

// worthKeeping reports whether the live recording has more than keepAfter
// steps that were not saved. A lesson's round trips are not kept: the
// lesson records them again.
func (m *Model) worthKeeping() bool {
	return m.unsaved && m.ls == nil && m.drv != nil && m.drv.Live() && m.drv.Trace().Len() > keepAfter
}

// keepUnsaved writes a recording worth keeping to a new private file in
// the temporary directory as the TUI quits; Run prints its name.
func (m *Model) keepUnsaved() {
	if !m.worthKeeping() {
		return
	}
	m.unsaved = false
	t := m.drv.Trace()
	snap := t.View(t.Len())
	pattern := "sctrace-" + cmp.Or(t.Header.Mechanism, "trace") + "-*" + SaveExt
	var name string
	m.write(func() (err error) { name, err = outfile.Keep(pattern, snap.Write); return err },
		func(err error) tea.Msg { return keptMsg{name: name, steps: snap.Len(), err: err} })
}

// Kept returns the file an unsaved recording was written to on quitting,
// with its number of steps, or why that failed; "" and nil when there was
// none to keep.
func (m *Model) Kept() (name string, steps int, err error) { return m.kept, m.keptN, m.keptErr }

func (m *Model) finish(d opDoneMsg) (tea.Model, tea.Cmd) {
	m.busy = nil
	if m.cmd.cancel != nil {
		m.cmd.cancel()
		m.cmd.cancel = nil
	}
	if m.stop != nil {
		m.stop()
		m.stop = nil
	}
	stopped := m.stopped
	m.stopped = false
	old := m.snap.Len()
	m.snap = d.snap
	n := m.snap.Len()
	if m.drv.Live() && d.op.kind != opFind && (n != old || d.op.kind == opEntry || d.op.entry) {
		m.unsaved = n > 0
	}
	switch {
	case d.op.kind == opFind:
		// Nothing moved: the answer is about the code ahead.
	case d.op.kind == opCommand:
		if n != old || m.pos > n {
			m.move(n)
		}
	case d.op.kind == opEntry || (d.op.kind == opRoundTrip && d.op.entry):
		m.move(0)
	case d.op.kind == opRoundTrip:
		m.move(m.pos)
	default:
		m.move(n)
	}
	if m.quitting {
		m.keepUnsaved()
		return m, m.idle()
	}
	switch {
	case stopped && (d.err == nil || errors.Is(d.err, context.Canceled)):
		m.say("stopped by you at step %d: the steps recorded so far are kept (f/b walk them, w saves them)", n)
	case d.op.kind == opCommand:
		m.commandDone(d)
	case d.op.kind == opFind:
		m.findDone(d)
	case d.err != nil && errors.Is(d.err, context.Canceled):
		m.say("interrupted")
	case d.err != nil:
		m.fail(d.err)
		m.queued, m.queuedSteps = nil, 0
	case d.op.kind == opEntry:
		m.say("stopped before the next %s; the previous recording was replaced", m.mechanism())
	case d.op.kind == opRoundTrip:
		m.say("recorded %d steps (%s): f/b walk them", n-old, d.reason)
		if d.op.entry {
			m.say("recorded a round trip of %d steps (%s): f/b walk it", n, d.reason)
		}
	case d.op.kind == opRun || d.op.kind == opFast:
		m.say("%s: %s after %d steps", d.op.label, d.reason, n-old)
	case d.op.kind == opProbe:
		m.say("read %d MSRs with rdmsr and put everything back: the system pane lists them, the effects pane compares them with what was inferred", d.probed)
	case d.op.kind == opStep && d.stepped > 1:
		m.say("stepped %d instructions", d.stepped)
	default:
		m.status = ""
	}
	if m.ls != nil {
		m.lessonFinish(d)
	}
	if q := m.queuedSteps; q > 0 && m.pos == n {
		m.queuedSteps = 0
		return m.guest(op{kind: opStep, label: fmt.Sprintf("stepping %d", q), count: q})
	}
	m.queuedSteps = 0
	if q := m.queued; q != nil {
		m.queued = nil
		return m.key(*q)
	}
	return m, nil
}

// stepOver is `n`: over a call in the record when its return is there,
// else in the guest. A call is a near call by its decoded operation,
// whatever its prefixes (notrack, bnd) or operand; a far call (lcall
// through a gate) is stepped into, as the recorder does.
func (m *Model) stepOver() (tea.Model, tea.Cmd) {
	n := m.snap.Len()
	if m.pos < n {
		s := m.snap.Step(m.pos)
		if s.Op != x86asm.CALL {
			m.move(m.pos + 1)
			return m, nil
		}
		ret := uint64(s.RIP) + uint64(len(s.Bytes))
		rsp := s.Regs.Val(x86.RSP)
		// The steps at the return address, by the trace's index: a deep
		// recursion aside, the first is the return.
		for k := m.snap.Trace.NextAt(m.pos+1, ret); k >= 0; k = m.snap.Trace.NextAt(k+1, ret) {
			if m.snap.Step(k).Regs.Val(x86.RSP) == rsp {
				m.move(k)
				return m, nil
			}
		}
		if m.snap.Current != nil && m.snap.Current.Val(x86.RIP) == ret && m.snap.Current.Val(x86.RSP) == rsp {
			m.move(n)
			return m, nil
		}
		return m.guest(op{kind: opRun, label: "running to the return of the call", cond: returnTo(ret, rsp)})
	}
	if len(m.snap.Upcoming) > 0 && m.snap.Upcoming[0].Op == x86asm.CALL {
		return m.guest(op{kind: opOver, label: "stepping over the call"})
	}
	return m.guest(op{kind: opStep, label: "stepping"})
}

func returnTo(ret, rsp uint64) trace.Until {
	return func(_ *trace.Step, now *x86.State) trace.StopReason {
		if now.Val(x86.RIP) == ret && now.Val(x86.RSP) == rsp {
			return trace.StopAddress
		}
		return ""
	}
}

// EventKeys are the events `e` runs to.
var EventKeys = []annotate.Event{annotate.EventCPLChange, annotate.EventCR3Write, annotate.EventSwapgs, annotate.EventStackSwitch}

func isEvent(s *trace.Step) bool {
	for _, e := range s.Events {
		for _, k := range EventKeys {
			if e == k {
				return true
			}
		}
	}
	return false
}

// toEvent is `e`: to just after the next step with an event, in the record
// (found by the trace's event index) or, past its end, in the guest.
func (m *Model) toEvent() (tea.Model, tea.Cmd) {
	n := m.snap.Len()
	if k := m.nextEvent(m.pos); k >= 0 {
		m.move(k + 1)
		m.say("after step %d: %s", k, eventNames(m.snap.Step(k).Events))
		return m, nil
	}
	if !m.drv.Live() {
		m.move(n)
		m.say("no further event in the trace")
		return m, nil
	}
	return m.guest(op{kind: opRun, label: "running to the next event", cond: func(s *trace.Step, _ *x86.State) trace.StopReason {
		if isEvent(s) {
			return trace.StopEvent
		}
		return ""
	}})
}

// nextEvent returns the first step at or after from with one of
// EventKeys, -1 for none.
func (m *Model) nextEvent(from int) int {
	if m.snap.Trace == nil {
		return -1
	}
	return m.snap.Trace.NextEvent(from, EventKeys...)
}

// toPrevEvent is `E`: back to just after the previous step with an event.
func (m *Model) toPrevEvent() {
	k := -1
	if m.snap.Trace != nil {
		k = m.snap.Trace.PrevEvent(m.pos-1, EventKeys...)
	}
	if k < 0 {
		m.move(0)
		m.say("no earlier event in the trace")
		return
	}
	m.move(k + 1)
	m.say("after step %d: %s", k, eventNames(m.snap.Step(k).Events))
}

// toUser is `r`: to just after the next return to user mode: a step not
// at CPL 3 whose next state is. The candidates are where the trace's
// index says the privilege level changes, and the last step, whose next
// state is the current one.
func (m *Model) toUser() (tea.Model, tea.Cmd) {
	n := m.snap.Len()
	back := func(k int) (tea.Model, tea.Cmd) {
		m.move(k + 1)
		m.say("back in user mode after step %d", k)
		return m, nil
	}
	if n > 0 {
		for j := m.snap.Trace.NextCPLChange(m.pos + 1); j >= 0; j = m.snap.Trace.NextCPLChange(j + 1) {
			if m.snap.Step(j-1).CPL != 3 && m.snap.Step(j).Regs.CPL() == 3 {
				return back(j - 1)
			}
		}
		if c := m.snap.Current; m.pos < n && m.snap.Step(n-1).CPL != 3 && c != nil && c.CPL() == 3 {
			return back(n - 1)
		}
	}
	if !m.drv.Live() {
		m.move(n)
		m.say("the trace does not return to user mode after this step")
		return m, nil
	}
	if c := m.snap.Current; c != nil && c.CPL() == 3 && m.pos == n && n > 0 {
		m.say("already in user mode: c runs to the next %s, R records it", m.mechanism())
		return m, nil
	}
	return m.guest(op{kind: opRun, label: "running to the return to user mode", cond: func(s *trace.Step, now *x86.State) trace.StopReason {
		if s.CPL != 3 && now.CPL() == 3 {
			return trace.StopUser
		}
		return ""
	}})
}

func eventNames(ev []annotate.Event) string {
	var s []string
	for _, e := range ev {
		s = append(s, string(e))
	}
	return strings.Join(s, ", ")
}

// openPrompt opens the one-line prompt. The hint goes in the prompt
// itself, never as a placeholder: the cursor sits on a placeholder's first
// character, which a terminal that does not show the cursor's style
// shows as if typed.
func (m *Model) openPrompt(mode inputMode, prompt, _ string) {
	m.input = mode
	m.prompt.Prompt = prompt
	m.prompt.Placeholder = ""
	m.prompt.CharLimit = 64
	if mode == inputCommand || mode == inputSave {
		m.prompt.CharLimit = 512
	}
	m.prompt.SetValue("")
	m.prompt.Focus()
}

func (m *Model) inputKey(k tea.KeyPressMsg) (tea.Model, tea.Cmd) {
	if m.input == inputConfirm {
		return m.confirmKey(k)
	}
	if m.input == inputCommand {
		if ok, mdl, cmd := m.commandKey(k); ok {
			return mdl, cmd
		}
	}
	switch k.String() {
	case "esc":
		m.input = inputNone
		m.prompt.Blur()
		m.cmd.completions = nil
		return m, nil
	case "enter":
		v := strings.TrimSpace(m.prompt.Value())
		mode := m.input
		m.input = inputNone
		m.prompt.Blur()
		switch mode {
		case inputGoto:
			m.gotoStep(v)
		case inputAnswer:
			m.lessonAnswer(v)
		case inputSave:
			m.save(v)
		case inputCommand:
			return m.runCommand(v)
		default:
			return m.search(v)
		}
		return m, nil
	}
	var cmd tea.Cmd
	m.prompt, cmd = m.prompt.Update(k)
	return m, cmd
}

func (m *Model) gotoStep(v string) {
	i, err := strconv.Atoi(v)
	if err != nil || i < 0 {
		m.fail(fmt.Errorf("go to step: %q is not a step number", v))
		return
	}
	if i > m.snap.Len() {
		m.fail(fmt.Errorf("step %d has not been recorded (0-%d)", i, m.snap.Len()))
		return
	}
	m.move(i)
	m.say("step %d", i)
}

// SaveName returns the file name `w` writes to.
func (m *Model) SaveName() string {
	now := time.Now
	if m.cfg.Now != nil {
		now = m.cfg.Now
	}
	mech := m.snap.Header.Mechanism
	if mech == "" {
		mech = "trace"
	}
	return filepath.Join(m.cfg.SaveDir, fmt.Sprintf("sctrace-%s-%s%s", mech, now().Format("20060102-150405"), SaveExt))
}

// SaveExt is the extension of the files `w` writes: trace files of
// version 2 (trace.Trace.Write), which `sctrace view` opens.
const SaveExt = ".sctrace"

// save starts writing the trace recorded so far to a new trace file,
// name ("" is SaveName). The write runs as a command; a savedMsg reports
// it.
func (m *Model) save(name string) {
	t := m.drv.Trace()
	if t.Len() == 0 {
		m.say("nothing recorded yet: step first")
		return
	}
	if name == "" {
		name = m.SaveName()
	}
	// A view to write from: the recorder may append steps and probes
	// while the file is written, but never changes one it has recorded.
	snap := t.View(t.Len())
	pattern := "sctrace-" + cmp.Or(t.Header.Mechanism, "trace") + "-*" + SaveExt
	write := snap.Write
	if strings.EqualFold(filepath.Ext(name), ".json") {
		write, pattern = snap.WriteJSON, strings.TrimSuffix(pattern, SaveExt)+".json"
	}
	m.write(func() error { return outfile.Save(name, pattern, write) },
		func(err error) tea.Msg { return savedMsg{name: name, steps: snap.Len(), err: err} })
}

func (m *Model) wheel(ms tea.Mouse) {
	d := 0
	switch ms.Button {
	case tea.MouseWheelUp:
		d = -3
	case tea.MouseWheelDown:
		d = 3
	default:
		return
	}
	if l := m.layout(); l.effects.contains(ms.X, ms.Y) {
		m.effTop = max(0, m.effTop+d)
		return
	}
	m.scroll += d
}

// bootKey answers the offer to let a guest that has not booted run until
// a 64-bit kernel is running: y (or enter) starts Config.BootWait, n (or
// esc) gives up with Start's error.
func (m *Model) bootKey(k tea.KeyPressMsg) (tea.Model, tea.Cmd) {
	if m.bootErr == nil || m.bootTried || m.startErr != nil {
		return m, nil
	}
	switch k.String() {
	case "y", "enter":
		m.bootTried = true
		m.cfg.Starting = "letting the guest boot until a 64-bit kernel runs"
		return m, m.startWith(m.cfg.BootWait)
	case "n", "esc":
		m.startErr = m.bootErr
		return m, tea.Quit
	}
	return m, nil
}

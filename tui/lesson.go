package tui

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"

	tea "charm.land/bubbletea/v2"
	"charm.land/glamour/v2"
	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/sctrace/sctrace/internal/termtext"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/walkthrough"
)

// LessonConfig shows a walkthrough in a lesson pane beside the trace.
type LessonConfig struct {
	Lesson *walkthrough.Lesson
	// Progress, when set, is where the student got to before; the lesson
	// still starts at its first paragraph.
	Progress *walkthrough.Progress
	// OnProgress, when set, is told each time the student reaches a
	// paragraph or answers a question (to remember it); an error is shown.
	OnProgress func(walkthrough.Progress) error
}

// lessonState is the lesson pane's state inside the model.
type lessonState struct {
	cfg    LessonConfig
	l      *walkthrough.Lesson
	segs   []walkthrough.Segment
	seg    int // the segment (round trip) on screen
	bind   walkthrough.Binding
	shown  int // the global index of the paragraph last shown, -1 before the first
	reach  int // paragraphs reached, 1-based
	answer map[string]bool
	// pending is the global index of the paragraph a guest operation is
	// running to, -1 when none.
	pending int
	// feedback is the result of the last answer to the current question.
	feedback   string
	feedbackOK bool
	scroll     int
	hidden     bool
	done       bool
	cache      map[[2]int]string
	// reports numbers the progress reports; reporter makes them in order.
	reports  int
	reporter progressReporter
}

// inputAnswer is the prompt mode for answering a lesson's question.
const inputAnswer inputMode = 100

func newLessonState(cfg LessonConfig) *lessonState {
	ls := &lessonState{cfg: cfg, l: cfg.Lesson, segs: cfg.Lesson.Segments(), shown: -1, pending: -1,
		answer: map[string]bool{}, cache: map[[2]int]string{}}
	if p := cfg.Progress; p != nil {
		for _, id := range p.Answered {
			ls.answer[id] = true
		}
	}
	return ls
}

// SetMechanism changes the mechanism NextEntry runs to, for lessons that
// compare several.
func (d *Live) SetMechanism(m mechanism.Mechanism) { d.Mechanism = m }

// Lesson returns the index of the lesson paragraph on screen, -1 when no
// lesson runs or none is shown yet.
func (m *Model) Lesson() int {
	if m.ls == nil {
		return -1
	}
	return m.lessonCurrent()
}

// lessonTrace is the snapshot as a trace, for binding.
func (m *Model) lessonTrace() *trace.Trace {
	t := trace.New()
	if m.snap.Trace != nil {
		t = m.snap.Trace.View(m.snap.Len())
	}
	t.Header, t.Final = m.snap.Header, m.snap.Current
	return t
}

// lessonRebind binds the current segment to the steps on screen.
func (m *Model) lessonRebind() {
	ls := m.ls
	ls.bind = walkthrough.Bind(ls.l, ls.segs[ls.seg], m.lessonTrace())
}

// lessonCurrent returns the global index of the paragraph for the current
// position, -1 before the first.
func (m *Model) lessonCurrent() int {
	ls := m.ls
	j := ls.bind.Current(m.pos)
	if j < 0 {
		if ls.seg > 0 {
			return ls.segs[ls.seg].First - 1
		}
		return -1
	}
	return ls.segs[ls.seg].Steps[j]
}

// lessonSync runs after every change of position or snapshot: it notes the
// paragraph reached and reports progress.
func (m *Model) lessonSync() {
	ls := m.ls
	if ls == nil {
		return
	}
	cur := m.lessonCurrent()
	if cur == ls.shown {
		return
	}
	ls.shown, ls.scroll, ls.feedback = cur, 0, ""
	if cur < 0 {
		return
	}
	if cur+1 > ls.reach {
		ls.reach = cur + 1
		if ls.reach == len(ls.l.Steps) && ls.l.Steps[cur].Question == nil {
			ls.done = true
		}
		m.lessonReport()
	}
}

// lessonReport hands the progress made so far to OnProgress, as a command
// (it usually writes a file): calls run one at a time, and one that would
// report less than a call already made is skipped, so the last word is
// the furthest progress whatever order the commands run in.
func (m *Model) lessonReport() {
	ls := m.ls
	if ls.cfg.OnProgress == nil {
		return
	}
	p := walkthrough.Progress{Reached: ls.reach, Steps: len(ls.l.Steps), Done: ls.done}
	for _, s := range ls.l.Steps {
		if ls.answer[s.ID] {
			p.Answered = append(p.Answered, s.ID)
		}
	}
	ls.reports++
	seq, rep, fn := ls.reports, &ls.reporter, ls.cfg.OnProgress
	m.write(func() error { return rep.report(seq, p, fn) },
		func(err error) tea.Msg { return wroteMsg{err: err} })
}

// progressReporter orders the calls of LessonConfig.OnProgress made from
// commands.
type progressReporter struct {
	mu   sync.Mutex
	last int // the sequence number of the last report made
}

// report calls fn with p, report number seq, unless a later one was made.
func (r *progressReporter) report(seq int, p walkthrough.Progress, fn func(walkthrough.Progress) error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if seq < r.last {
		return nil
	}
	r.last = seq
	return fn(p)
}

// lessonStarted is called once a driver is attached.
func (m *Model) lessonStarted() {
	if m.ls == nil {
		return
	}
	m.lessonRebind()
	if b := m.ls.bind; len(b.Pos) > 0 && b.Pos[0] >= 0 && b.Pos[0] <= m.snap.Len() && m.drv.Live() {
		m.move(b.Pos[0])
	}
	m.lessonSync()
	m.say("lesson %d: %s — space goes on, a answers, l hides the lesson, ? every key", m.ls.l.Number, m.ls.l.Title)
}

// lessonKey handles the lesson's keys; it reports whether k was one.
func (m *Model) lessonKey(ks string) (bool, tea.Model, tea.Cmd) {
	ls := m.ls
	switch ks {
	case "space":
		if m.busy != nil {
			return true, m, nil
		}
		mdl, cmd := m.lessonGoOn()
		return true, mdl, cmd
	case "a":
		cur := m.lessonCurrent()
		if cur < 0 || ls.l.Steps[cur].Question == nil {
			m.say("no question at this paragraph")
			return true, m, nil
		}
		m.openPrompt(inputAnswer, "answer: ", ls.l.Steps[cur].Question.Ask)
		return true, m, nil
	case "l":
		ls.hidden = !ls.hidden
		return true, m, nil
	case "pgdown":
		ls.scroll += 5
		return true, m, nil
	case "pgup":
		ls.scroll = max(0, ls.scroll-5)
		return true, m, nil
	}
	return false, m, nil
}

// lessonGoOn is `space`: to the next paragraph's event, through the
// record, or by running the guest on until it happens, or by starting the
// next round trip.
func (m *Model) lessonGoOn() (tea.Model, tea.Cmd) {
	ls := m.ls
	cur := m.lessonCurrent()
	if cur >= 0 {
		if q := ls.l.Steps[cur].Question; q != nil && !ls.answer[ls.l.Steps[cur].ID] {
			m.say("answer the question first: press a, type the answer, enter")
			return m, nil
		}
	}
	next := cur + 1
	if next >= len(ls.l.Steps) {
		ls.done = true
		m.lessonReport()
		m.say("that was the last paragraph: lesson %d is done (q quits)", ls.l.Number)
		return m, nil
	}
	seg := ls.l.SegmentOf(next)
	if seg != ls.seg {
		if !m.drv.Live() {
			m.say("the next paragraph needs a new round trip: only `sctrace learn` can run it")
			return m, nil
		}
		mech := ls.segs[seg].Mechanism
		if d, ok := m.drv.(interface{ SetMechanism(mechanism.Mechanism) }); ok {
			d.SetMechanism(mech)
		}
		ls.pending = next
		return m.guest(op{kind: opEntry, label: "running to the next " + cmp.Or(string(mech), "system call")})
	}
	j := indexIn(ls.segs[seg].Steps, next)
	if p := ls.bind.Pos[j]; p != walkthrough.Unbound {
		m.move(p)
		m.lessonSync()
		return m, nil
	}
	if !m.drv.Live() {
		m.say("the trace does not reach %s", ls.l.Steps[next].Match)
		return m, nil
	}
	match := ls.l.Steps[next].Match
	from := ls.bind.From(j)
	ls.pending = next
	return m.guest(op{kind: opRun, label: "running to " + match.String(),
		cond: walkthrough.UntilStep(match, walkthrough.Count(match, m.lessonTrace(), from))})
}

func indexIn(list []int, v int) int {
	for i, x := range list {
		if x == v {
			return i
		}
	}
	return -1
}

// lessonFinish is called when a guest operation ends: it moves to the
// paragraph the operation ran to.
func (m *Model) lessonFinish(d opDoneMsg) {
	ls := m.ls
	if ls == nil {
		return
	}
	next := ls.pending
	ls.pending = -1
	if next >= 0 && d.err == nil {
		if seg := ls.l.SegmentOf(next); d.op.kind == opEntry && seg != ls.seg {
			ls.seg = seg
		}
	}
	m.lessonRebind()
	if next < 0 || d.err != nil {
		m.lessonSync()
		return
	}
	j := indexIn(ls.segs[ls.seg].Steps, next)
	if j >= 0 && ls.bind.Pos[j] != walkthrough.Unbound {
		m.move(ls.bind.Pos[j])
		m.lessonSync()
		m.say("paragraph %d of %d: %s", next+1, len(ls.l.Steps), ls.l.Steps[next].Title)
		return
	}
	m.lessonSync()
	m.fail(fmt.Errorf("the guest went on (%s) without reaching %s: this lesson does not fit this kernel", d.reason, ls.l.Steps[next].Match))
}

// lessonAnswer checks an answer against the state on screen.
func (m *Model) lessonAnswer(v string) {
	ls := m.ls
	cur := m.lessonCurrent()
	if cur < 0 || ls.l.Steps[cur].Question == nil {
		return
	}
	s := &ls.l.Steps[cur]
	st := walkthrough.StateAt(m.lessonTrace(), m.pos)
	ok, why := s.Question.Check(v, st)
	ls.feedbackOK = ok
	if ok {
		ls.feedback = "right: " + why
		ls.answer[s.ID] = true
		if cur == len(ls.l.Steps)-1 {
			ls.done = true
		}
		m.lessonReport()
		m.say("right: space goes on")
		return
	}
	ls.feedback = fmt.Sprintf("not %q: %s", v, why)
	m.say("not quite: read why in the lesson pane, then a to try again")
}

var (
	stLook     = lipgloss.NewStyle().Foreground(lipgloss.Color("0")).Background(colAccent).Bold(true)
	stQuestion = lipgloss.NewStyle().Foreground(colWarn).Bold(true)
)

// looking reports whether the current paragraph says to look at pane.
func (m *Model) looking(pane string) bool {
	if m.ls == nil || m.ls.hidden {
		return false
	}
	cur := m.lessonCurrent()
	return cur >= 0 && m.ls.l.Steps[cur].Look.Pane == pane
}

// lookTitle marks a pane's title when the paragraph points at it.
func (m *Model) lookTitle(pane, title string) string {
	if m.looking(pane) {
		return title + " ◀ look here"
	}
	return title
}

// lookedAt returns the value the current paragraph points at ("cr3",
// "rax"), "" for none. While the paragraph's question waits for its
// answer the value is withheld, since it would give the answer away:
// only the pane is named.
func (m *Model) lookedAt() string {
	if m.ls == nil {
		return ""
	}
	cur := m.lessonCurrent()
	if cur < 0 {
		return ""
	}
	s := &m.ls.l.Steps[cur]
	if s.Question != nil && !m.ls.answer[s.ID] {
		return ""
	}
	return s.Look.Value
}

// lookValue reports whether the paragraph points at a value named name
// in pane.
func (m *Model) lookValue(pane, name string) bool {
	if !m.looking(pane) {
		return false
	}
	v := m.lookedAt()
	return v != "" && strings.EqualFold(v, name)
}

// paneLine is a line of a pane with the names of the values it shows, in
// lower case, by which a paragraph's look.value points at it ("cr3",
// "gs_base").
type paneLine struct {
	text  string
	names []string
}

// lookLines returns the text of a pane's lines, highlighting those that
// show the value the paragraph points at. Lines are found by the names
// they were drawn with, not by their text.
func (m *Model) lookLines(pane string, lines []paneLine) []string {
	v := ""
	if m.looking(pane) {
		v = strings.ToLower(m.lookedAt())
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l.text
		if v != "" && slices.Contains(l.names, v) {
			out[i] = stLook.Render(ansi.Strip(l.text))
		}
	}
	return out
}

// lessonLayout places the panes with a lesson pane: on wide screens
// between the code and the effects, on small ones in the lower right
// (tab switches it with the effects, system and stack panes).
func (m *Model) lessonLayout(l layout) layout {
	if l.wide {
		lessonH := max(10, (l.code.h+l.effects.h)*2/5)
		l.lesson = rect{l.code.x, l.code.y + l.code.h - lessonH, l.code.w, lessonH}
		l.code.h -= lessonH
		return l
	}
	if m.lower == paneEffects && l.effects.w > 0 && !m.ls.hidden {
		// The lesson gets the lower pane the full width of the screen,
		// over the registers: prose needs the width; tab shows the
		// registers with the other panes.
		l.lesson = rect{0, l.lo.y, l.code.w, l.lo.h}
		l.effects, l.regs = rect{}, rect{}
	}
	return l
}

// markdown renders a paragraph for the terminal, cached per width.
func (m *Model) markdown(idx, width int, text string) string {
	key := [2]int{idx, width}
	if s, ok := m.ls.cache[key]; ok {
		return s
	}
	out := text
	r, err := glamour.NewTermRenderer(glamour.WithStandardStyle("dark"), glamour.WithWordWrap(max(20, width-2)))
	if err == nil {
		if s, err := r.Render(text); err == nil {
			out = strings.Trim(s, "\n")
		}
	}
	m.ls.cache[key] = out
	return out
}

// drawLesson draws the lesson pane: the paragraph, where to look, the
// question and what space does next.
func (m *Model) drawLesson(c *canvas, r rect) {
	ls := m.ls
	inner := r.w - 2
	cur := m.lessonCurrent()
	title := fmt.Sprintf("Lesson %d: %s", ls.l.Number, ls.l.Title)
	if !m.layout().wide && cur >= 0 {
		title = fmt.Sprintf("Lesson %d", ls.l.Number)
	}
	var body []string
	text := ""
	switch {
	case cur < 0:
		text = ls.l.Intro
	default:
		s := &ls.l.Steps[cur]
		title += fmt.Sprintf(" — %d of %d: %s", cur+1, len(ls.l.Steps), s.Title)
		text = s.Text
		if cur == 0 && ls.l.Intro != "" && s.At == "start" {
			text = ls.l.Intro + "\n\n---\n\n" + text
		}
	}
	body = strings.Split(m.markdown(cur, inner, text), "\n")
	var foot []string
	if cur >= 0 {
		s := &ls.l.Steps[cur]
		if s.Look.Pane != "" {
			look := "look at: the " + s.Look.Pane + " pane"
			if v := m.lookedAt(); v != "" {
				look += ", " + v
			}
			if l := m.layout(); !l.wide && s.Look.Pane != "code" && s.Look.Pane != "registers" {
				look += " (tab)"
			}
			foot = append(foot, stAccent.Render("◀ "+look))
		}
		if q := s.Question; q != nil {
			for _, w := range termtext.Wrap("? "+q.Ask, inner) {
				foot = append(foot, stQuestion.Render(w))
			}
			switch {
			case ls.answer[s.ID] && ls.feedback == "":
				foot = append(foot, stOK.Render("✓ answered"))
			case ls.feedback != "" && ls.feedbackOK:
				for _, w := range termtext.Wrap("✓ "+ls.feedback, inner) {
					foot = append(foot, stOK.Render(w))
				}
			case ls.feedback != "":
				for _, w := range termtext.Wrap("✗ "+ls.feedback, inner) {
					foot = append(foot, stBad.Render(w))
				}
			default:
				foot = append(foot, stDim.Render("a: answer (checked against the registers on screen)"))
			}
		}
	}
	waiting := cur >= 0 && ls.l.Steps[cur].Question != nil && !ls.answer[ls.l.Steps[cur].ID]
	switch {
	case cur == len(ls.l.Steps)-1:
		foot = append(foot, stDim.Render("— last paragraph: q quits, b/f walk the trace —"))
	case waiting:
		// space is refused until the question is answered.
		foot = append(foot, stDim.Render("a: answer   pgup/pgdn: scroll   l: hide"))
	case cur+1 < len(ls.l.Steps) && ls.l.SegmentOf(cur+1) != ls.seg:
		foot = append(foot, stDim.Render("space: next round trip ("+cmp.Or(string(ls.segs[ls.l.SegmentOf(cur+1)].Mechanism), "system call")+")"))
	default:
		foot = append(foot, stDim.Render("space: go on   a: answer   pgup/pgdn: scroll   l: hide"))
	}
	rows := r.h - 2
	room := max(1, rows-len(foot))
	top := min(ls.scroll, max(0, len(body)-room))
	ls.scroll = top
	lines := body[top:]
	if len(lines) > room {
		lines = append(lines[:room-1:room-1], stDim.Render(fmt.Sprintf("… %d more lines (pgdn)", len(body)-top-room+1)))
	}
	for len(lines) < room {
		lines = append(lines, "")
	}
	c.box(r, title, append(lines, foot...), true)
}

// lessonHelp lists the lesson's keys for the help box.
var lessonHelp = [][2]string{
	{"space", "lesson: go on to the next paragraph's event (runs the guest when needed)"},
	{"a", "lesson: answer the question (checked against the state on screen)"},
	{"l", "lesson: hide or show the lesson pane"},
	{"pgup / pgdn", "lesson: scroll the paragraph"},
}

// helpKeys is the help box's key list: the lesson's keys first when one
// runs.
func (m *Model) helpKeys() [][2]string {
	if m.ls == nil {
		return m.keys.helpRows()
	}
	return append(append([][2]string(nil), lessonHelp...), m.keys.helpRows()...)
}

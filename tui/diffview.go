package tui

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/sctrace/sctrace/diff"
	"github.com/sctrace/sctrace/trace"
)

// The diff view's styles: removed red, added green, changed yellow, as
// diff tools colour them.
var (
	dvRemoved = lipgloss.NewStyle().Foreground(lipgloss.Color("203"))
	dvAdded   = lipgloss.NewStyle().Foreground(lipgloss.Color("42"))
	dvChanged = lipgloss.NewStyle().Foreground(lipgloss.Color("220"))
	dvDim     = lipgloss.NewStyle().Foreground(lipgloss.Color("244"))
	dvCursor  = lipgloss.NewStyle().Reverse(true)
	dvBorder  = lipgloss.NewStyle().Foreground(lipgloss.Color("240"))
	dvTitle   = lipgloss.NewStyle().Foreground(lipgloss.Color("75")).Bold(true)
	dvStatus  = lipgloss.NewStyle().Background(lipgloss.Color("236")).Foreground(lipgloss.Color("252"))
)

// DiffModel shows two aligned traces side by side: A's code on the left,
// B's on the right, one row per pair of the alignment, the two panes
// scrolling together. e and E jump to the next and previous difference.
type DiffModel struct {
	r      *diff.Result
	o      diff.Options
	width  int
	height int
	cur    int // the selected pair
	top    int // the first pair shown
	help   bool
}

// NewDiff returns the side-by-side view of r.
func NewDiff(r *diff.Result, o diff.Options) *DiffModel { return &DiffModel{r: r, o: o} }

// RunDiff shows r side by side until the user quits (or ctx ends). in and
// out default to the terminal.
func RunDiff(ctx context.Context, r *diff.Result, o diff.Options, in io.Reader, out io.Writer) error {
	if in == nil && out == nil && !IsTerminal(os.Stdout) {
		return ErrNoTerminal
	}
	opts := []tea.ProgramOption{tea.WithContext(ctx)}
	if in != nil {
		opts = append(opts, tea.WithInput(in))
	}
	if out != nil {
		opts = append(opts, tea.WithOutput(out))
	}
	_, err := tea.NewProgram(NewDiff(r, o), opts...).Run()
	if errors.Is(err, tea.ErrProgramKilled) && ctx.Err() != nil {
		err = nil
	}
	return err
}

// Cur returns the index of the selected pair in the alignment.
func (m *DiffModel) Cur() int { return m.cur }

// Init does nothing: the view has all it shows.
func (m *DiffModel) Init() tea.Cmd { return nil }

// Update handles keys, the mouse wheel and the window's size.
func (m *DiffModel) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		m.follow()
	case tea.MouseWheelMsg:
		switch msg.Mouse().Button {
		case tea.MouseWheelUp:
			m.move(m.cur - 3)
		case tea.MouseWheelDown:
			m.move(m.cur + 3)
		}
	case tea.KeyPressMsg:
		if m.help {
			m.help = false
			return m, nil
		}
		switch msg.String() {
		case "q", "ctrl+c", "esc":
			return m, tea.Quit
		case "down", "j", "f":
			m.move(m.cur + 1)
		case "up", "k", "b":
			m.move(m.cur - 1)
		case "pgdown", "space":
			m.move(m.cur + m.rows())
		case "pgup":
			m.move(m.cur - m.rows())
		case "home", "g":
			m.move(0)
		case "end", "G":
			m.move(len(m.r.Pairs) - 1)
		case "e":
			m.move(m.nextDiff(m.cur))
		case "E":
			m.move(m.prevDiff(m.cur))
		case "?":
			m.help = true
		}
	}
	return m, nil
}

// nextDiff returns the first pair of the next run of differences after
// the one i is in, or i when there is none.
func (m *DiffModel) nextDiff(i int) int {
	p := m.r.Pairs
	j := i
	for j < len(p) && p[j].Op != diff.Equal {
		j++
	}
	for j < len(p) && p[j].Op == diff.Equal {
		j++
	}
	if j == len(p) {
		return i
	}
	return j
}

// prevDiff returns the first pair of the run of differences before the
// one i is in, or i when there is none.
func (m *DiffModel) prevDiff(i int) int {
	p := m.r.Pairs
	j := i - 1
	for j >= 0 && p[j].Op != diff.Equal && p[i].Op != diff.Equal {
		j-- // leave the run i is in
	}
	for j >= 0 && p[j].Op == diff.Equal {
		j--
	}
	if j < 0 {
		return i
	}
	for j > 0 && p[j-1].Op != diff.Equal {
		j--
	}
	return j
}

func (m *DiffModel) move(i int) {
	m.cur = max(0, min(i, len(m.r.Pairs)-1))
	m.follow()
}

// rows is the number of pairs the panes show.
func (m *DiffModel) rows() int { return max(1, m.height-5) }

// follow scrolls so that the selected pair is shown, a few rows from the
// edge.
func (m *DiffModel) follow() {
	n := m.rows()
	margin := min(3, n/4)
	if m.cur < m.top+margin {
		m.top = m.cur - margin
	}
	if m.cur >= m.top+n-margin {
		m.top = m.cur - n + margin + 1
	}
	m.top = max(0, min(m.top, len(m.r.Pairs)-n))
}

// View renders the screen.
func (m *DiffModel) View() tea.View {
	v := tea.NewView(m.Render())
	v.AltScreen = true
	v.MouseMode = tea.MouseModeCellMotion
	v.WindowTitle = "sctrace diff"
	return v
}

// Render returns the screen as text (with ANSI styles), for View and tests.
func (m *DiffModel) Render() string {
	if m.width < 20 || m.height < 6 {
		return ""
	}
	r := m.r
	t := r.Total
	lines := make([]string, 0, m.height)
	status := fmt.Sprintf(" sctrace diff  = %d  ~ %d  - %d  + %d   pair %d/%d", t.Equal, t.Changed, t.Removed, t.Added, m.cur+1, len(r.Pairs))
	lines = append(lines, dvStatus.Render(pad(status, m.width)))
	note := r.MatchedBy()
	if len(r.Notes) > 0 {
		note = strings.Join(r.Notes, "; ") + "; " + note
	}
	lines = append(lines, dvDim.Render(pad(ansi.Truncate(" "+note, m.width, "…"), m.width)))
	half := m.width / 2
	left, right := m.pane(true, half), m.pane(false, m.width-half)
	for i := range left {
		lines = append(lines, left[i]+right[i])
	}
	keys := " j/k scroll together  e/E next/previous difference  g/G start/end  ? keys  q quit"
	if p := r.Pairs[m.cur]; p.Op != diff.Equal {
		keys = " " + describePair(p) + "  ·" + keys
	}
	lines = append(lines, dvStatus.Render(pad(ansi.Truncate(keys, m.width, "…"), m.width)))
	out := strings.Join(lines, "\n")
	if m.help {
		out = m.helpScreen()
	}
	return out
}

// describePair says in words what a differing pair is.
func describePair(p diff.Pair) string {
	switch p.Op {
	case diff.Changed:
		return "changed in place"
	case diff.Removed:
		return "only in A"
	case diff.Added:
		return "only in B"
	}
	return ""
}

// pane renders one side's box, w columns wide: a title, then one row per
// shown pair, blank where that side has no step.
func (m *DiffModel) pane(a bool, w int) []string {
	r := m.r
	t, name, label := r.A, m.o.NameA, "A"
	if !a {
		t, name, label = r.B, m.o.NameB, "B"
	}
	inner := w - 2
	title := fmt.Sprintf(" %s %s: %d instructions, %s ", label, name, t.Len(), diff.KernelName(t))
	title = ansi.Truncate(title, max(0, inner-1), "…")
	out := []string{dvBorder.Render("╭─") + dvTitle.Render(title) + dvBorder.Render(strings.Repeat("─", max(0, inner-1-ansi.StringWidth(title)))+"╮")}
	for k := range m.rows() {
		i := m.top + k
		row := ""
		if i < len(r.Pairs) {
			row = m.row(r.Pairs[i], a, inner, i == m.cur)
		}
		out = append(out, dvBorder.Render("│")+pad(row, inner)+dvBorder.Render("│"))
	}
	return append(out, dvBorder.Render("╰"+strings.Repeat("─", inner)+"╯"))
}

// row renders one side of pair p in w columns.
func (m *DiffModel) row(p diff.Pair, a bool, w int, cur bool) string {
	idx, t := p.A, m.r.A
	if !a {
		idx, t = p.B, m.r.B
	}
	var text string
	if idx < 0 {
		text = ""
	} else {
		s := t.Step(idx)
		where := trace.FitWhere(s.Where(), max(8, w*2/5))
		text = fmt.Sprintf("%s %5d %-*s %s", p.Op, idx, max(8, w*2/5), where, s.Asm(m.o.Syntax))
	}
	text = pad(ansi.Truncate(text, w, "…"), w)
	st := lipgloss.NewStyle()
	switch p.Op {
	case diff.Changed:
		st = dvChanged
	case diff.Removed:
		st = dvRemoved
	case diff.Added:
		st = dvAdded
	}
	if cur {
		st = st.Inherit(dvCursor)
	}
	return st.Render(text)
}

func (m *DiffModel) helpScreen() string {
	help := []string{
		"sctrace diff: A on the left, B on the right, one row per pair of the alignment",
		"",
		"  =  the same instruction in both      ~  the same place, another instruction",
		"  -  only in A                          +  only in B",
		"",
		"  j, ↓, f      next row               k, ↑, b      previous row",
		"  space, PgDn  next page              PgUp         previous page",
		"  e            next difference        E            previous difference",
		"  g, Home      first row              G, End       last row",
		"  q, Esc       quit                   (any key closes this help)",
	}
	var lines []string
	for _, l := range help {
		lines = append(lines, pad(ansi.Truncate(l, m.width, "…"), m.width))
	}
	for len(lines) < m.height {
		lines = append(lines, strings.Repeat(" ", m.width))
	}
	return strings.Join(lines[:m.height], "\n")
}

// pad fills s with spaces to w columns.
func pad(s string, w int) string {
	return s + strings.Repeat(" ", max(0, w-ansi.StringWidth(s)))
}

package tui

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/expr"
	"github.com/sctrace/sctrace/internal/termtext"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/watch"
	"github.com/sctrace/sctrace/x86"
)

// The colour scheme: kernel mode red/orange, user mode green, findings in
// warning yellow, changes highlighted.
var (
	colKernel  = lipgloss.Color("208")
	colUser    = lipgloss.Color("42")
	colWarn    = lipgloss.Color("220")
	colBad     = lipgloss.Color("196")
	colDim     = lipgloss.Color("244")
	colAccent  = lipgloss.Color("75")
	colBorder  = lipgloss.Color("240")
	stKernel   = lipgloss.NewStyle().Foreground(colKernel).Bold(true)
	stUser     = lipgloss.NewStyle().Foreground(colUser).Bold(true)
	stWarn     = lipgloss.NewStyle().Foreground(colWarn).Bold(true)
	stBad      = lipgloss.NewStyle().Foreground(colBad).Bold(true)
	stOK       = lipgloss.NewStyle().Foreground(colUser)
	stDim      = lipgloss.NewStyle().Foreground(colDim)
	stAccent   = lipgloss.NewStyle().Foreground(colAccent)
	stBold     = lipgloss.NewStyle().Bold(true)
	stCurrent  = lipgloss.NewStyle().Reverse(true).Bold(true)
	stChanged  = lipgloss.NewStyle().Foreground(lipgloss.Color("0")).Background(colWarn)
	stBorder   = lipgloss.NewStyle().Foreground(colBorder)
	stTitle    = lipgloss.NewStyle().Foreground(colAccent).Bold(true)
	stStatusBG = lipgloss.NewStyle().Background(lipgloss.Color("236")).Foreground(lipgloss.Color("252"))
)

// rect is a screen area.
type rect struct{ x, y, w, h int }

func (r rect) contains(x, y int) bool {
	return x >= r.x && x < r.x+r.w && y >= r.y && y < r.y+r.h
}

// layout places the panes. Small screens show the code, the registers and
// one of effects, system and stack (tab switches); wide ones show all.
type layout struct {
	wide                                bool
	code, regs, sys, stack, effects, lo rect
	lesson                              rect // the lesson pane, when a lesson runs
	watch                               rect // the watch pane
}

// wideMin is the smallest screen that gets every pane at once.
const wideMinW, wideMinH = 130, 40

func (m *Model) layout() layout {
	l := m.baseLayout()
	if m.ls != nil && !m.ls.hidden {
		l = m.lessonLayout(l)
	}
	return l
}

// baseLayout places the panes without a lesson.
func (m *Model) baseLayout() layout {
	W, H := max(m.width, 40), max(m.height, 12)
	body := H - 2
	if W >= wideMinW && H >= wideMinH {
		rw := 52
		lw := W - rw
		effH := min(14, body/3)
		regH := 14
		sysH := (body - regH) / 2
		l := layout{
			wide:    true,
			code:    rect{0, 1, lw, body - effH},
			effects: rect{0, 1 + body - effH, lw, effH},
			regs:    rect{lw, 1, rw, regH},
			sys:     rect{lw, 1 + regH, rw, sysH},
			stack:   rect{lw, 1 + regH + sysH, rw, body - regH - sysH},
		}
		if nw := m.cmd.watches.Len(); nw > 0 {
			// The watches take the top of the stack pane.
			wh := min(nw+2, l.stack.h/2)
			l.watch = rect{l.stack.x, l.stack.y, l.stack.w, wh}
			l.stack.y += wh
			l.stack.h -= wh
		}
		return l
	}
	lowH := min(14, max(body-6, 6))
	if body-lowH < 6 {
		lowH = body / 2
	}
	rw := min(44, W-30)
	l := layout{
		code: rect{0, 1, W, body - lowH},
		regs: rect{0, 1 + body - lowH, rw, lowH},
		lo:   rect{rw, 1 + body - lowH, W - rw, lowH},
	}
	switch m.lower {
	case paneSystem:
		l.sys = l.lo
	case paneStack:
		l.stack = l.lo
	case paneWatch:
		l.watch = l.lo
	default:
		l.effects = l.lo
	}
	return l
}

// View renders the screen.
func (m *Model) View() tea.View {
	v := tea.NewView(m.Render())
	v.AltScreen = true
	v.MouseMode = tea.MouseModeCellMotion
	v.WindowTitle = "sctrace"
	return v
}

// Render returns the screen as text (with ANSI styles), for View and tests.
func (m *Model) Render() string {
	if m.width == 0 || m.height == 0 {
		return ""
	}
	if m.drv == nil {
		msg := m.spin.View() + " " + m.cfg.Starting + "…"
		switch {
		case m.startErr != nil:
			msg = stBad.Render("start-up failed: ") + m.startErr.Error()
		case m.bootErr != nil && !m.bootTried:
			msg = m.bootOffer()
		}
		return lipgloss.Place(m.width, m.height, lipgloss.Center, lipgloss.Center, msg)
	}
	l := m.layout()
	screen := newCanvas(m.width, m.height)
	screen.put(0, 0, m.statusLine())
	m.drawCode(screen, l.code)
	m.drawRegs(screen, l.regs)
	if l.sys.w > 0 {
		m.drawSystem(screen, l.sys, !l.wide)
	}
	if l.stack.w > 0 {
		m.drawStack(screen, l.stack, !l.wide)
	}
	if l.effects.w > 0 {
		m.drawEffects(screen, l.effects, !l.wide)
	}
	if l.watch.w > 0 {
		m.drawWatches(screen, l.watch, !l.wide)
	}
	if l.lesson.w > 0 {
		m.drawLesson(screen, l.lesson)
	}
	if m.out != nil {
		m.drawOutput(screen, m.outRect())
	}
	if cs := m.cmd.completions; len(cs) > 0 && m.input == inputCommand {
		line := fmt.Sprintf("%d completions: %s", len(cs), strings.Join(cs, "  "))
		screen.put(0, m.height-2, stStatusBG.Render(ansi.Truncate(line, m.width, "…")+strings.Repeat(" ", max(0, m.width-ansi.StringWidth(line)))))
	}
	screen.put(0, m.height-1, m.bottomLine())
	out := screen.String()
	if m.help {
		out = overlay(out, m.helpBox(), m.width, m.height)
	}
	return out
}

// outRect is where the command output pane goes: over the code pane,
// the full width of the screen.
func (m *Model) outRect() rect {
	H := max(m.height, 12)
	h := min(H-2, max(8, (H-2)*3/5))
	return rect{0, 1, max(m.width, 40), h}
}

// drawOutput draws what the last command printed, scrolled to out.top.
func (m *Model) drawOutput(c *canvas, r rect) {
	o := m.out
	rows := r.h - 2
	o.top = min(o.top, max(0, len(o.lines)-rows))
	lines := o.lines[o.top:]
	title := o.title
	if len(o.lines) > rows {
		title = fmt.Sprintf("%s (lines %d-%d of %d; pgup/pgdn scroll, esc closes)", o.title, o.top+1, min(o.top+rows, len(o.lines)), len(o.lines))
	} else {
		title += " (esc closes)"
	}
	c.box(r, title, lines, true)
}

// drawWatches draws the watch pane: each watch's value at the position
// shown, from the live guest at its current stop, else from the recorded
// state (unknown in replay when the recording did not keep it).
func (m *Model) drawWatches(c *canvas, r rect, tabbed bool) {
	title := "Watches"
	if tabbed {
		title = "Watches (tab: effects)"
	}
	ws := m.cmd.watches.Watches()
	if len(ws) == 0 {
		c.box(r, title, []string{stDim.Render(":watch EXPR adds one: :watch $rsp, :watch pt_regs->ip")}, false)
		return
	}
	live := map[int]watch.Value{}
	if m.drv.Live() && m.pos >= m.snap.Len() {
		for _, v := range m.snap.Watches {
			live[v.ID] = v
		}
	}
	var lines []string
	for _, w := range ws {
		v, ok := live[w.ID]
		switch {
		case ok:
		case m.snap.Trace != nil:
			env := &expr.Replay{Trace: m.snap.Trace, Index: m.pos, Symbols: m.syms()}
			val, err := expr.Eval(w.Expr, env)
			v = watch.Value{Watch: w, Val: val, Err: err}
			if err != nil && !v.Unknown() && m.drv.Live() && m.pos >= m.snap.Len() {
				v.Err = errors.New("not read yet")
			}
		default:
			v = watch.Value{Watch: w, Err: errors.New("nothing recorded yet")}
		}
		s := fmt.Sprintf("%d ", w.ID) + termtext.Line(v.String())
		if v.Unknown() {
			s = stDim.Render(s)
		} else if v.Err != nil {
			s = stWarn.Render(s)
		}
		lines = append(lines, s)
	}
	c.box(r, title, lines, false)
}

// canvas is a screen of styled lines.
//
// It is not lipgloss's Canvas/Layer (v2.1.1) on purpose: that compositor
// renders from a cell buffer, so it trims the trailing blanks of lines
// (the status line of every golden screen loses its padding) and
// re-encodes the styles into merged SGR sequences, and the golden screens
// in testdata would no longer be byte-identical. Composing whole styled
// lines keeps the output exactly as lipgloss rendered each piece.
type canvas struct {
	w     int
	lines []string
}

func newCanvas(w, h int) *canvas {
	c := &canvas{w: w, lines: make([]string, h)}
	for i := range c.lines {
		c.lines[i] = strings.Repeat(" ", w)
	}
	return c
}

// put writes s (one line) at column x of row y, over what was there.
func (c *canvas) put(x, y int, s string) {
	if y < 0 || y >= len(c.lines) || x >= c.w {
		return
	}
	s = ansi.Truncate(s, c.w-x, "")
	sw := ansi.StringWidth(s)
	line := c.lines[y]
	left := ansi.Truncate(line, x, "")
	right := ansi.TruncateLeft(line, x+sw, "")
	c.lines[y] = left + s + right
}

// box draws a bordered pane with a title and content lines, clipped to r.
func (c *canvas) box(r rect, title string, lines []string, accent bool) {
	if r.w < 4 || r.h < 2 {
		return
	}
	bs := stBorder
	if accent {
		bs = stAccent
	}
	inner := r.w - 2
	t := ansi.Truncate(" "+title+" ", inner-1, "…")
	top := bs.Render("╭─") + stTitle.Render(t) + bs.Render(strings.Repeat("─", max(0, inner-1-ansi.StringWidth(t)))+"╮")
	c.put(r.x, r.y, top)
	for i := 0; i < r.h-2; i++ {
		s := ""
		if i < len(lines) {
			s = lines[i]
		}
		s = ansi.Truncate(s, inner, "…")
		s += strings.Repeat(" ", max(0, inner-ansi.StringWidth(s)))
		c.put(r.x, r.y+1+i, bs.Render("│")+s+bs.Render("│"))
	}
	c.put(r.x, r.y+r.h-1, bs.Render("╰"+strings.Repeat("─", inner)+"╯"))
}

func (c *canvas) String() string { return strings.Join(c.lines, "\n") }

// overlay centres box over the screen.
func overlay(screen, box string, w, h int) string {
	c := &canvas{w: w, lines: strings.Split(screen, "\n")}
	bl := strings.Split(box, "\n")
	bw := 0
	for _, l := range bl {
		bw = max(bw, ansi.StringWidth(l))
	}
	x, y := max(0, (w-bw)/2), max(0, (h-len(bl))/2)
	for i, l := range bl {
		c.put(x, y+i, l)
	}
	return c.String()
}

// state returns the CPU state shown at the current position: before step
// pos, or the current state after the last step.
func (m *Model) state() *x86.State {
	if m.pos < m.snap.Len() {
		return m.snap.Step(m.pos).Regs
	}
	if m.snap.Current != nil {
		return m.snap.Current
	}
	if n := m.snap.Len(); n > 0 {
		return m.snap.Step(n - 1).Regs
	}
	return nil
}

// last returns the step that led to the current position, nil at step 0.
func (m *Model) last() *trace.Step {
	if m.pos == 0 || m.pos > m.snap.Len() {
		return nil
	}
	return m.snap.Step(m.pos - 1)
}

func cplBadge(cpl int) string {
	switch cpl {
	case 3:
		return stUser.Render("CPL 3 user")
	case 0:
		return stKernel.Render("CPL 0 kernel")
	case -1:
		return stDim.Render("CPL ?")
	}
	return stKernel.Render(fmt.Sprintf("CPL %d", cpl))
}

func (m *Model) statusLine() string {
	h := m.snap.Header
	sep := stDim.Render(" │ ")
	cpl := -1
	if st := m.state(); st != nil {
		cpl = st.CPL()
	}
	// Most important first: a narrow terminal cuts the end of the line,
	// so the operation in flight comes early and the stub's address last.
	parts := []string{stBold.Render("sctrace"), cplBadge(cpl), fmt.Sprintf("step %d of %d", m.pos, m.snap.Len())}
	if m.drv.Live() {
		parts = append(parts, stUser.Render("live"))
	} else {
		parts = append(parts, stAccent.Render("replay"))
	}
	if m.busy != nil {
		label := m.busy.label + "…"
		if m.busy.records() {
			if m.recorded > 0 {
				label += fmt.Sprintf(" %d steps so far", m.recorded)
			}
			label += " (esc stops)"
		}
		parts = append(parts, stWarn.Render(label))
	}
	if l := m.recorderLabel(); l != "" {
		parts = append(parts, l)
	}
	parts = append(parts, m.mechanism())
	if h.CPU != nil {
		parts = append(parts, fmt.Sprintf("vCPU %d/%d", h.CPU.Index, h.CPU.Count))
		if l := h.OtherCPUsLabel(); l != "" {
			parts = append(parts, l)
		}
	}
	if h.Accel != "" {
		accel, _, _ := strings.Cut(h.Accel, " (")
		parts = append(parts, accel)
	}
	if l := h.SteppingLabel(); l != "" {
		parts = append(parts, l)
	}
	if m.syn == trace.Intel {
		parts = append(parts, "intel")
	} else {
		parts = append(parts, "at&t")
	}
	if h.Target != "" {
		parts = append(parts, strings.TrimPrefix(h.Target, "qemu gdbstub at "))
	}
	s := strings.Join(parts, sep)
	return stStatusBG.Render(s + strings.Repeat(" ", max(0, m.width-ansi.StringWidth(s))))
}

func (m *Model) bottomLine() string {
	if m.input != inputNone {
		return m.prompt.View()
	}
	if m.status == "" {
		return stDim.Render(m.keys.bar(m.width))
	}
	if m.warn {
		return stBad.Render("! ") + m.status
	}
	return stAccent.Render("» ") + m.status
}

// codeItem is one line of the code pane.
type codeItem struct {
	idx      int // step index, -1 for an upcoming line
	cpl      int
	where    string
	bytes    []byte
	asm      string
	upcoming bool
	events   []annotate.Event
}

// codeItems returns the lines of the code pane: the recorded steps, then
// the upcoming instructions.
func (m *Model) codeItems() int { return m.snap.Len() + len(m.snap.Upcoming) }

// codeItem returns line i of the code pane. Only the lines on screen are
// made: a trace of a million steps costs no more to show than a short one.
func (m *Model) codeItem(i int) codeItem {
	if n := m.snap.Len(); i < n {
		s := m.snap.Step(i)
		return codeItem{idx: i, cpl: s.CPL, where: s.Where(), bytes: s.Bytes, asm: s.Asm(m.syn), events: s.Events}
	} else {
		i -= n
	}
	cpl := -1
	if m.snap.Current != nil && i == 0 {
		cpl = m.snap.Current.CPL() // only the first upcoming one is known to run at this CPL
	}
	l := m.snap.Upcoming[i]
	w := l.Symbol
	if w == "" {
		w = fmt.Sprintf("%#x", l.Addr)
	}
	return codeItem{idx: -1, cpl: cpl, where: w, bytes: l.Bytes, asm: l.Asm(m.syn), upcoming: true}
}

func (m *Model) drawCode(c *canvas, r rect) {
	items := m.codeItems()
	inner := r.w - 2
	rows := r.h - 2
	title := "Code"
	if m.drv.Live() {
		title = "Code (recorded, then upcoming from guest memory)"
	}
	cur := m.pos
	top := cur - rows/3 + m.scroll
	top = max(0, min(top, items-rows+1))
	if m.scroll != 0 {
		// Keep a wheel scroll within what can be shown, so that scrolling
		// back takes effect at once; an unscrolled pane stays centred on
		// the current step whatever the size.
		m.scroll = top - (cur - rows/3)
	}
	showBytes := inner >= 96
	whereW := min(34, max(16, inner/3-2))
	var lines []string
	for i := top; i < items && len(lines) < rows; i++ {
		it := m.codeItem(i)
		mark := "  "
		if i == cur {
			mark = "▶ "
		}
		idx := "     "
		if it.idx >= 0 {
			idx = fmt.Sprintf("%5d", it.idx)
		}
		mode := stDim.Render("·")
		switch it.cpl {
		case 3:
			mode = stUser.Render("U")
		case 0, 1, 2:
			mode = stKernel.Render("K")
		}
		where := trace.FitWhere(it.where, whereW)
		where += strings.Repeat(" ", max(0, whereW-ansi.StringWidth(where)))
		line := fmt.Sprintf("%s%s %s %s ", mark, idx, mode, where)
		if showBytes {
			b := fmt.Sprintf("% x", it.bytes)
			b = ansi.Truncate(b, 24, "…")
			line += stDim.Render(b+strings.Repeat(" ", 24-ansi.StringWidth(b))) + " "
		}
		asm := it.asm
		if len(it.events) > 0 && inner-ansi.StringWidth(line)-len(asm) > 12 {
			asm += "  " + stWarn.Render("◆ "+eventNames(it.events))
		}
		line += asm
		switch {
		case i == cur:
			line = stCurrent.Render(ansi.Strip(line) + strings.Repeat(" ", max(0, inner-ansi.StringWidth(ansi.Strip(line)))))
		case it.upcoming:
			line = stDim.Render(ansi.Strip(line))
		}
		lines = append(lines, line)
	}
	if cur >= items && len(lines) < rows {
		end := "— end of the trace"
		if st := m.snap.Header.Stop; st != "" {
			end += ": " + st
		}
		end += " —"
		if m.drv.Live() {
			end = "— the guest's next instruction could not be read —"
		}
		lines = append(lines, stCurrent.Render("▶ "+end))
	}
	c.box(r, m.lookTitle("code", title), lines, true)
}

func (m *Model) drawRegs(c *canvas, r rect) {
	st := m.state()
	title := "Registers"
	var prev *x86.State
	changed := map[string]bool{}
	if l := m.last(); l != nil {
		prev = l.Regs
		for _, ch := range l.Changed {
			changed[ch.Reg] = true
		}
	}
	show := st
	if m.showOld && prev != nil {
		show = prev
		title = "Registers before the last step (O)"
	} else if len(changed) > 0 {
		title = "Registers (changed highlighted; O: old)"
	}
	if show == nil {
		c.box(r, title, []string{"no state"}, false)
		return
	}
	val := func(reg x86.Reg) string {
		v, ok := show.Get(reg)
		s := "????????????????"
		if ok {
			s = fmt.Sprintf("%016x", v)
		}
		if m.lookValue("registers", reg.String()) {
			return stLook.Render(s)
		}
		if changed[reg.String()] {
			return stChanged.Render(s)
		}
		return s
	}
	name := func(reg x86.Reg, w int) string {
		n := reg.String()
		if reg == x86.KernelGSBase {
			n = "kgs"
		}
		return n + strings.Repeat(" ", max(1, w-len(n)))
	}
	var lines []string
	g := x86.GPRs
	for i := 0; i < len(g)/2; i++ {
		lines = append(lines, name(g[i], 4)+val(g[i])+"  "+name(g[i+8], 4)+val(g[i+8]))
	}
	rip := show.Val(x86.RIP)
	lines = append(lines, name(x86.RIP, 4)+val(x86.RIP)+" "+stDim.Render(m.symbolize(rip)))
	lines = append(lines, "rfl "+val(x86.RFLAGS)+" "+x86.Flags(show.Val(x86.RFLAGS)).String())
	lines = append(lines, "gs  "+val(x86.GSBase)+" kgs "+val(x86.KernelGSBase))
	lines = append(lines, "cr3 "+val(x86.CR3)+" cs "+short(val(x86.CS), changed["cs"])+" ss "+short(val(x86.SS), changed["ss"]))
	c.box(r, m.lookTitle("registers", title), lines, m.looking("registers"))
}

// short renders a selector register's value in four hex digits.
func short(s string, changed bool) string {
	p := ansi.Strip(s)
	p = p[len(p)-4:]
	if changed {
		return stChanged.Render(p)
	}
	return p
}

func (m *Model) symbolize(addr uint64) string {
	if m.snap.Trace != nil && m.snap.Trace.NextAt(0, addr) >= 0 {
		return m.snap.Trace.SymbolAt(addr)
	}
	for _, l := range m.snap.Upcoming {
		if l.Addr == addr {
			return l.Symbol
		}
	}
	return ""
}

// stackRegion returns the stack RSP is on.
func (m *Model) stackRegion(rsp uint64) (annotate.Region, bool) {
	c := &annotate.Context{Regions: m.snap.Header.Regions}
	return c.StackOf(rsp)
}

// onExitTrampoline reports whether rsp, at the shown stop, is on an entry
// stack the kernel moved to from a kernel stack at CPL 0: the exit path's
// trampoline, where the words are copies (the user RSP, RDI, an IRET
// frame), not a pt_regs frame, whatever their positions below its top.
func (m *Model) onExitTrampoline(rsp uint64) bool {
	c := &annotate.Context{Regions: m.snap.Header.Regions}
	r, ok := c.StackOf(rsp)
	if !ok || r.Kind != annotate.RegionEntryStack {
		return false
	}
	// Back to the step that moved RSP onto this stack, within a bound: a
	// trampoline runs a few dozen instructions, and the pane must cost
	// the same whatever the trace's length.
	for i := min(m.pos, m.snap.Len()) - 1; i >= max(0, m.pos-maxTrampoline); i-- {
		s := m.snap.Step(i)
		prev := s.Regs.Val(x86.RSP)
		if p, ok := c.StackOf(prev); ok && p == r {
			continue
		}
		// Step i moved RSP onto this entry stack.
		return s.CPL == 0 && c.ExitTrampoline(prev, rsp)
	}
	return false
}

// maxTrampoline is how far back onExitTrampoline looks for the step that
// moved RSP onto the entry stack.
const maxTrampoline = 4096

// kernelFrame is the frame the CPU pushed for an exception taken in kernel
// mode: on the stack the kernel was on, below whatever frame is above it.
type kernelFrame struct {
	addr    uint64 // RSP after the delivery: the first word of the frame
	errCode bool   // the frame starts with an error code
	sp      uint64 // the interrupted RSP, saved in the frame (0 if not read)
	step    int    // the step that took the exception
}

// kernelFrameSlots name the words of a frame without an error code.
var kernelFrameSlots = []string{"ip", "cs", "flags", "sp", "ss"}

// slot names the frame's word at addr.
func (f kernelFrame) slot(addr uint64) (string, bool) {
	names := kernelFrameSlots
	if f.errCode {
		names = append([]string{"error code"}, names...)
	}
	end := f.addr + uint64(8*len(names))
	switch {
	case f.addr == 0 || addr < f.addr || (addr-f.addr)%8 != 0:
		return "", false
	case addr < end:
		return names[(addr-f.addr)/8], true
	case addr < f.sp:
		// Before pushing, the CPU aligned RSP down to 16 bytes.
		return "alignment padding", true
	}
	return "", false
}

// nestedFrame finds the frame of an exception taken at CPL 0 before the
// shown step and not yet returned from (no iret since), so that its words
// are named for what they are rather than by their position below the
// stack's top. Whether it has an error code is read from the frame: the
// saved CS, the kernel's, is the second word without one, the third with.
//
// The steps are found by the trace's event index, not by walking back.
func (m *Model) nestedFrame() (kernelFrame, bool) {
	n := m.snap.Len()
	if n == 0 {
		return kernelFrame{}, false
	}
	t := m.snap.Trace
	end := min(m.pos, n) // the steps before the shown position
	iret := t.PrevEvent(end, annotate.EventIret)
	for i := t.PrevEvent(end, annotate.EventException); i >= 0; i = t.PrevEvent(i, annotate.EventException) {
		if i <= iret {
			// An iret at or after it: returned from, or a step that
			// did both, which the iret settles.
			return kernelFrame{}, false
		}
		s := t.Step(i)
		if s.CPL != 0 {
			continue
		}
		var after *x86.State
		var words []uint64
		if i+1 < n {
			next := t.Step(i + 1)
			after = next.Regs
			for _, w := range next.Stack {
				words = append(words, uint64(w))
			}
		} else {
			after, words = m.snap.Current, m.snap.Stack
		}
		if after == nil || after.CPL() != 0 {
			return kernelFrame{}, false
		}
		cs := s.Regs.Val(x86.CS) & 0xffff
		errCode := len(words) >= 3 && words[1]&0xffff != cs && words[2]&0xffff == cs
		f := kernelFrame{addr: after.Val(x86.RSP), errCode: errCode, step: s.Index}
		if i := 3 + btoi(errCode); i < len(words) {
			f.sp = words[i]
		}
		return f, true
	}
	return kernelFrame{}, false
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func kindName(k annotate.RegionKind) string {
	switch k {
	case annotate.RegionUserStack:
		return "user stack"
	case annotate.RegionKernelStack:
		return "kernel stack"
	case annotate.RegionEntryStack:
		return "entry (trampoline) stack"
	case annotate.RegionISTStack:
		return "IST stack"
	case annotate.RegionPerCPU:
		return "per-CPU area"
	}
	return string(k)
}

// gsRole says what a GS base value points at.
func (m *Model) gsRole(v uint64) string {
	for _, r := range m.snap.Header.Regions {
		if r.Kind == annotate.RegionPerCPU && r.Contains(v) {
			return stKernel.Render("per-CPU area (kernel GS)")
		}
	}
	if v == 0 {
		return stUser.Render("user GS (null)")
	}
	if x86.KernelHalf(v) {
		return stKernel.Render("kernel address")
	}
	return stUser.Render("user GS")
}

func (m *Model) drawSystem(c *canvas, r rect, tabbed bool) {
	st := m.state()
	title := "System"
	if tabbed {
		title = "System (tab: stack)"
	}
	if st == nil {
		c.box(r, title, nil, false)
		return
	}
	var lines []paneLine
	add := func(text string, names ...string) { lines = append(lines, paneLine{text, names}) }
	cpl := st.CPL()
	add(cplBadge(cpl)+" mode", "cpl")
	add("cs "+x86.Selector(st.Val(x86.CS)).String()+"  ss "+x86.Selector(st.Val(x86.SS)).String(), "cs", "ss")
	gs, kgs := st.ActiveGSBase()
	add(fmt.Sprintf("gs_base   %#x %s", gs, m.gsRole(gs)), "gs_base")
	add(fmt.Sprintf("k_gs_base %#x %s", kgs, m.gsRole(kgs)), "k_gs_base")
	cr3 := x86.CR3Fields{Value: st.Val(x86.CR3), PCIDE: x86.CR4Flags(st.Val(x86.CR4))&x86.CR4PCIDE != 0}
	half := stKernel.Render("kernel PGD")
	if cr3.KPTIUser() {
		half = stUser.Render("KPTI user PGD")
	}
	pcid := ""
	if cr3.PCIDE {
		pcid = fmt.Sprintf(" pcid %d", cr3.PCID())
	}
	add(fmt.Sprintf("cr3 %#x: pgd %#x%s %s", cr3.Value, cr3.PGD(), pcid, half), "cr3")
	if e, ok := st.Get(x86.EFER); ok {
		add(fmt.Sprintf("efer %#x %s", e, x86.EFERFlags(e)), "efer")
	}
	var msrs []paneLine
	for _, msr := range m.snap.Header.MSRs {
		if msr.Step >= m.pos && m.pos < m.snap.Len() {
			continue // not learnt yet at this point of the trace
		}
		name := strings.TrimPrefix(msr.Name, "IA32_")
		msrs = append(msrs, paneLine{fmt.Sprintf(" %s %s %s", name, msr.ValueString(), stDim.Render(msr.Provenance())), []string{strings.ToLower(name)}})
	}
	if len(msrs) == 0 {
		add(stDim.Render("MSRs: none learnt yet (the stub exposes none)"), "msrs")
	} else {
		add("MSRs learnt:", "msrs")
		lines = append(lines, msrs...)
	}
	c.box(r, m.lookTitle("system", title), m.lookLines("system", lines), m.looking("system"))
}

func (m *Model) drawStack(c *canvas, r rect, tabbed bool) {
	st := m.state()
	title := "Stack"
	if tabbed {
		title = "Stack (tab: watches)"
	}
	if st == nil {
		c.box(r, title, nil, false)
		return
	}
	rsp := st.Val(x86.RSP)
	var lines []string
	reg, onStack := m.stackRegion(rsp)
	if onStack {
		lines = append(lines, fmt.Sprintf("rsp %#x on the %s", rsp, kindName(reg.Kind)))
		lines = append(lines, stDim.Render(fmt.Sprintf("  %q [%#x, %#x) %d bytes used", reg.Name, reg.Start, reg.End, reg.End-rsp)))
	} else {
		half := "user-half"
		if x86.KernelHalf(rsp) {
			half = "kernel-half"
		}
		lines = append(lines, fmt.Sprintf("rsp %#x (%s, no known stack)", rsp, half))
	}
	var words []uint64
	switch {
	case m.pos < m.snap.Len():
		for _, w := range m.snap.Step(m.pos).Stack {
			words = append(words, uint64(w))
		}
	default:
		words = m.snap.Stack
	}
	if len(words) == 0 {
		lines = append(lines, stDim.Render("no stack words recorded at this step"))
	}
	top := reg.FrameTop
	if m.onExitTrampoline(rsp) {
		top = 0 // copies made on the way out, not a pt_regs frame
		lines = append(lines, stDim.Render("  the exit trampoline: copies, not a pt_regs frame"))
	}
	nested, nestedOK := m.nestedFrame()
	if nestedOK {
		lines = append(lines, stDim.Render(fmt.Sprintf("  a kernel-mode exception's frame at %#x (step %d)", nested.addr, nested.step)))
	}
	for i, w := range words {
		addr := rsp + uint64(8*i)
		if onStack && addr >= reg.End {
			lines = append(lines, stDim.Render(fmt.Sprintf("  — top of the %s —", kindName(reg.Kind))))
			break
		}
		label := ""
		switch f, ok := nested.slot(addr); {
		case nestedOK && ok && f == "alignment padding":
			label = stDim.Render(f)
		case nestedOK && ok:
			label = stWarn.Render("nested frame: " + f)
		case nestedOK && addr < nested.addr:
			// pushed by the nested handler: no pt_regs of the frame above
		default:
			if f, ok := annotate.PtRegsSlot(top, addr); ok && onStack {
				label = stAccent.Render("pt_regs->" + f)
			}
		}
		lines = append(lines, fmt.Sprintf("+%#03x %016x %s", 8*i, w, label))
	}
	c.box(r, m.lookTitle("stack", title), lines, m.looking("stack"))
}

func (m *Model) drawEffects(c *canvas, r rect, tabbed bool) {
	l := m.last()
	title := "Effects"
	var lines []string
	inner := r.w - 2
	if l == nil {
		lines = append(lines, "step 0 has not run yet: the highlighted instruction is next.")
		lines = append(lines, stDim.Render("s steps into it; the effects of each step appear here."))
	}
	effects := trace.ProbeEffects(m.snap.Probes, m.pos) // an MSR probe run at this stop
	if l != nil {
		title = fmt.Sprintf("Effects of step %d: %s", l.Index, l.Asm(m.syn))
		effects = slices.Concat(l.Effects, effects)
	}
	for _, e := range effects {
		tag := fmt.Sprintf("%-9s", e.Kind)
		st := stAccent
		mark := "  "
		switch e.Verdict {
		case annotate.OK:
			mark = stOK.Render("✓ ")
		case annotate.Finding:
			mark = stBad.Render("!!")
			st = stWarn
		}
		if e.Kind == annotate.KindMitigation {
			st = stWarn
		}
		for j, w := range termtext.Wrap(e.Text, inner-12) {
			if j == 0 {
				lines = append(lines, mark+st.Render(tag)+" "+colorize(w, e.Verdict))
			} else {
				lines = append(lines, strings.Repeat(" ", 12)+colorize(w, e.Verdict))
			}
		}
	}
	if t := m.snap.Trace; t != nil {
		// Changes made with :set at this stop: the state after the step
		// above is not only the guest's doing.
		for _, w := range trace.UserWritesBefore(t.UserWrites, m.pos) {
			for j, x := range termtext.Wrap(w.String(), inner-12) {
				if j == 0 {
					lines = append(lines, stBad.Render("!!")+stWarn.Render(fmt.Sprintf("%-9s", "by hand"))+" "+x)
				} else {
					lines = append(lines, strings.Repeat(" ", 12)+x)
				}
			}
		}
	}
	if l != nil && len(l.Events) > 0 {
		lines = append(lines, stWarn.Render("◆ events: "+eventNames(l.Events)))
	}
	if tabbed {
		title += " (tab: system)"
	}
	rows := r.h - 2
	top := min(m.effTop, max(0, len(lines)-rows))
	m.effTop = top
	shown := lines[top:]
	if len(shown) > rows && rows > 1 {
		more := len(shown) - (rows - 1)
		shown = append(shown[:rows-1:rows-1], stDim.Render(fmt.Sprintf("… %d more lines (J/K or pgdn/pgup scroll)", more)))
	}
	c.box(r, m.lookTitle("effects", title), shown, m.looking("effects"))
}

func colorize(s string, v annotate.Verdict) string {
	if v == annotate.Finding {
		return stWarn.Render(s)
	}
	return s
}

func (m *Model) helpBox() string {
	w := min(m.width-4, 90)
	// Each key's description is wrapped to the box, under its column.
	descW := max(10, w-4-12)
	var lines []string
	for _, kv := range m.helpKeys() {
		for j, d := range termtext.Wrap(kv[1], descW) {
			k := ""
			if j == 0 {
				k = kv[0]
			}
			lines = append(lines, stAccent.Render(fmt.Sprintf("%-11s", k))+" "+d)
		}
	}
	// The box holds what the screen does, less its border and title; the
	// rest scrolls.
	fit := max(3, m.height-4)
	if len(lines) > fit {
		m.helpTop = min(m.helpTop, len(lines)-fit+1)
		rest := len(lines) - m.helpTop - (fit - 1)
		lines = lines[m.helpTop : m.helpTop+fit-1]
		more := stAccent.Render(fmt.Sprintf("%-11s", "↑")) + " scrolls back (any other key closes)"
		if rest > 0 {
			more = stAccent.Render(fmt.Sprintf("%-11s", "↓")) + fmt.Sprintf(" %d more lines (↓ ↑ scroll, any other key closes)", rest)
		}
		lines = append(lines, more)
	} else {
		m.helpTop = 0
	}
	return lipgloss.NewStyle().Border(lipgloss.RoundedBorder()).BorderForeground(colAccent).
		Padding(0, 1).Width(w).Render(stTitle.Render("Keys") + "\n" + strings.Join(lines, "\n"))
}

// bootOffer is the screen that offers to let a guest that has not booted
// run until a 64-bit kernel is running: one left-aligned block, so that
// centring it on the screen keeps its lines together.
func (m *Model) bootOffer() string {
	w := max(20, min(m.width-4, 90))
	lines := termtext.Wrap(m.bootErr.Error(), w)
	limit := ""
	if m.cfg.BootWaitFor > 0 {
		limit = fmt.Sprintf(" (at most %s)", m.cfg.BootWaitFor)
	}
	lines = append(lines, "",
		stAccent.Render("y")+" let it run until a 64-bit kernel is running"+limit+", then attach",
		stAccent.Render("n")+" quit (sctrace has detached: the guest runs on, as after any detach)")
	return lipgloss.NewStyle().Width(w).Render(strings.Join(lines, "\n"))
}

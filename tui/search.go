package tui

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	tea "charm.land/bubbletea/v2"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/expr"
	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/x86"
)

// findState is the last search, which n and N repeat.
type findState struct {
	q     string
	seq   int    // numbers register scans, so a stale answer is dropped
	ahead []Line // />: the matches in the code ahead
	at    int    // />: the match shown
}

// foundMsg is the answer of a register scan (/REG=VAL), which runs off
// the update loop: unlike the others it has no index to look in.
type foundMsg struct {
	seq int
	q   string
	k   int
	err error
}

var reRegSearch = regexp.MustCompile(`^\$?([a-z][a-z0-9_]*)\s*==?\s*(\S+)$`)

// search runs a search typed after /; the syntax is in searchHelp.
func (m *Model) search(q string) (tea.Model, tea.Cmd) {
	if q == "" {
		return m, nil
	}
	if q == "?" {
		var b strings.Builder
		for _, r := range searchHelp {
			fmt.Fprintf(&b, "%-10s %s\n", r[0], r[1])
		}
		b.WriteString("n repeats a search forward, N backward; every search wraps around.")
		m.showOutput("search syntax", b.String())
		return m, nil
	}
	m.find.q, m.find.ahead = q, nil
	return m.doSearch(false)
}

// repeatSearch is n and N.
func (m *Model) repeatSearch(back bool) (tea.Model, tea.Cmd) {
	if m.find.q == "" {
		m.say("no search to repeat: / searches")
		return m, nil
	}
	return m.doSearch(back)
}

func (m *Model) doSearch(back bool) (tea.Model, tea.Cmd) {
	q := m.find.q
	if body, ok := strings.CutPrefix(q, ">"); ok {
		return m.searchAhead(strings.TrimSpace(body), back)
	}
	t := m.snap.Trace
	if t == nil || t.Len() == 0 {
		m.fail(fmt.Errorf("/%s: nothing recorded yet", q))
		return m, nil
	}
	n := t.Len()
	from := min(m.pos, n-1)
	k := -1
	switch {
	case strings.HasPrefix(q, "!"):
		ev := annotate.Event(strings.ToLower(strings.TrimSpace(q[1:])))
		if back {
			if k = t.PrevEvent(m.pos, ev); k < 0 {
				k = t.PrevEvent(n, ev)
			}
		} else if k = t.NextEvent(m.pos+1, ev); k < 0 {
			k = t.NextEvent(0, ev)
		}
	case strings.HasPrefix(q, "@"):
		k = t.SearchFunc(from, back, symbolMatch(strings.ToLower(strings.TrimSpace(q[1:]))))
	case reRegSearch.MatchString(q):
		return m.searchReg(q, back)
	default:
		k = t.SearchFunc(from, back, func(s, intel, att string) bool {
			lq := strings.ToLower(q)
			return strings.Contains(s, lq) || strings.Contains(intel, lq) || strings.Contains(att, lq)
		})
	}
	m.found(q, k, back)
	return m, nil
}

// found moves to step k, or says the search found nothing.
func (m *Model) found(q string, k int, back bool) {
	if k < 0 {
		m.fail(fmt.Errorf("/%s: not in the %d recorded steps", q, m.snap.Len()))
		return
	}
	m.move(k)
	dir := "n next, N previous"
	if back {
		dir = "N previous, n next"
	}
	m.say("/%s: step %d (%s)", q, k, dir)
}

// searchReg scans the recorded steps for a register value, off the
// update loop.
func (m *Model) searchReg(q string, back bool) (tea.Model, tea.Cmd) {
	sm := reRegSearch.FindStringSubmatch(q)
	reg, ok := expr.ParseReg(sm[1])
	if !ok {
		m.fail(fmt.Errorf("/%s: no register %q", q, sm[1]))
		return m, nil
	}
	val, err := strconv.ParseUint(sm[2], 0, 64)
	if err != nil {
		m.fail(fmt.Errorf("/%s: %q is not a number (0x1f or 31)", q, sm[2]))
		return m, nil
	}
	t, from, ctx := m.snap.Trace, m.pos, m.ctx
	m.find.seq++
	seq := m.find.seq
	m.say("/%s: searching the %d recorded steps…", q, t.Len())
	return m, func() tea.Msg {
		n := t.Len()
		for i := 1; i <= n; i++ {
			k := (from + i) % n
			if back {
				k = ((from-i)%n + n) % n
			}
			if i%4096 == 0 && ctx.Err() != nil {
				return foundMsg{seq: seq, q: q, k: -1, err: ctx.Err()}
			}
			if v, ok := t.Step(k).Regs.Get(reg); ok && v == val {
				return foundMsg{seq: seq, q: q, k: k}
			}
		}
		return foundMsg{seq: seq, q: q, k: -1}
	}
}

func (m *Model) foundReg(f foundMsg) {
	if f.seq != m.find.seq || f.err != nil {
		return
	}
	m.found(f.q, f.k, false)
}

// searchAhead is />TEXT: the instructions of the current function ahead of
// RIP, read from the live guest, whose text or symbol contains TEXT. The
// matches are kept: n and N walk them without reading again.
func (m *Model) searchAhead(text string, back bool) (tea.Model, tea.Cmd) {
	if len(m.find.ahead) > 0 {
		m.find.at = (m.find.at + 1) % len(m.find.ahead)
		if back {
			m.find.at = (m.find.at + len(m.find.ahead) - 2) % len(m.find.ahead)
		}
		m.sayAhead()
		return m, nil
	}
	l, ok := m.drv.(*Live)
	if !ok {
		m.fail(fmt.Errorf("/>%s: the code ahead is read from a live guest; a replay has only its recorded steps (/%s searches them)", text, text))
		return m, nil
	}
	if text == "" {
		m.fail(errors.New("/>TEXT: say what to look for ahead: />call, />x64_sys_call"))
		return m, nil
	}
	if m.busy != nil {
		m.say("busy %s: search when it is done", m.busy.label)
		return m, nil
	}
	syn := m.syn
	return m.guest(op{kind: opFind, label: "reading the function ahead", line: text,
		run: func(ctx context.Context) (string, error) {
			lines, err := l.functionAhead(ctx)
			if err != nil {
				return "", err
			}
			lq := strings.ToLower(text)
			var hits []Line
			for _, ln := range lines[1:] {
				if strings.Contains(strings.ToLower(ln.Asm(syn)+" "+ln.Symbol), lq) {
					hits = append(hits, ln)
				}
			}
			l.ahead = hits
			return "", nil
		}})
}

// findDone takes the matches of />.
func (m *Model) findDone(d opDoneMsg) {
	l := m.drv.(*Live)
	hits := l.ahead
	l.ahead = nil
	if d.err != nil {
		m.fail(fmt.Errorf("/>%s: %w", d.op.line, d.err))
		return
	}
	if len(hits) == 0 {
		m.fail(fmt.Errorf("/>%s: not in the rest of the current function", d.op.line))
		return
	}
	m.find.ahead, m.find.at = hits, 0
	m.sayAhead()
}

func (m *Model) sayAhead() {
	h := m.find.ahead[m.find.at]
	where := h.Symbol
	if where == "" {
		where = fmt.Sprintf("%#x", h.Addr)
	}
	m.say("%s: %s — match %d of %d ahead; :until %#x runs there (n/N next/previous)",
		where, h.Asm(m.syn), m.find.at+1, len(m.find.ahead), h.Addr)
}

// maxAhead bounds the code />  reads when the symbol's size is unknown or
// large.
const maxAhead = 16 << 10

// functionAhead disassembles the current function from RIP to its end (by
// the symbol's size), at most maxAhead bytes.
func (d *Live) functionAhead(ctx context.Context) ([]Line, error) {
	cur := d.S.Recorder.Current()
	if cur == nil {
		return nil, errors.New("the current state is not known")
	}
	rip := cur.Val(x86.RIP)
	n := uint64(maxAhead)
	if s, off, ok := d.S.Symbols.Lookup(rip); ok && s.Size > off {
		n = min(n, s.Size-off)
	} else if !ok {
		return nil, fmt.Errorf("no symbol covers RIP %#x: where the function ends is not known", rip)
	}
	lines := d.decode(ctx, cur, int(n), false)
	if len(lines) == 0 {
		return nil, fmt.Errorf("the code at %#x could not be read", rip)
	}
	return lines, nil
}

// symbolMatch returns the matcher of /@SYM: the steps in function SYM, or
// at SYM+OFF when the query has an offset. SYM names the function as in
// the source: a symbol with the compiler's suffixes matches too
// (symbols.SameFunction: /@copy_strings finds copy_strings.isra.0).
func symbolMatch(query string) func(sym, intel, att string) bool {
	qfn, qoff, exact := strings.Cut(query, "+")
	return func(sym, _, _ string) bool {
		fn, off, _ := strings.Cut(sym, "+")
		if exact && off != qoff {
			return false
		}
		return symbols.SameFunction(qfn, fn)
	}
}

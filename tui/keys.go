package tui

import (
	"fmt"
	"strings"

	"charm.land/bubbles/v2/key"
	"github.com/charmbracelet/x/ansi"
)

// KeyMap holds every key of the main screen. The help overlay and the key
// bar are made from it, so a key cannot work without being listed.
type KeyMap struct {
	Step, Over, Back, Forward   key.Binding
	Event, PrevEvent, ToUser    key.Binding
	Continue, RoundTrip, Fast   key.Binding
	Probe                       key.Binding
	Search, SearchNext, SearchP key.Binding
	Goto, First, Last           key.Binding
	Command, Save, Syntax, Old  key.Binding
	Pane, EffUp, EffDown        key.Binding
	Stop, Help, Quit            key.Binding
}

// DefaultKeyMap returns the keys of the main screen. The help of each
// binding is its key as listed and the full description; barLabels gives
// the word the key bar uses.
func DefaultKeyMap() KeyMap {
	b := func(keys []string, help, desc string) key.Binding {
		return key.NewBinding(key.WithKeys(keys...), key.WithHelp(help, desc))
	}
	return KeyMap{
		Step:       b([]string{"s"}, "s", "step into (through the record first, then the guest); a burst of s steps that many"),
		Over:       b([]string{"o"}, "o", "step over a call"),
		Back:       b([]string{"b", "up"}, "b ↑", "back one recorded step (never touches the guest)"),
		Forward:    b([]string{"f", "down"}, "f ↓", "forward one recorded step (never touches the guest)"),
		Event:      b([]string{"e"}, "e", "next CPL change, CR3 write, swapgs, stack switch"),
		PrevEvent:  b([]string{"E"}, "E", "previous such event"),
		ToUser:     b([]string{"r"}, "r", "run to the return to user mode"),
		Continue:   b([]string{"c"}, "c", "continue to the next system call (starts a fresh recording)"),
		RoundTrip:  b([]string{"R"}, "R", "record a whole round trip"),
		Fast:       b([]string{"L"}, "L", "record the rest of the round trip fast, from QEMU's instruction log (TCG)"),
		Probe:      b([]string{"p"}, "p", "read the MSRs with rdmsr in the live guest (CPL 0; all put back)"),
		Search:     b([]string{"/"}, "/", "search (see below)"),
		SearchNext: b([]string{"n"}, "n", "repeat the search forward"),
		SearchP:    b([]string{"N"}, "N", "repeat the search backward"),
		Goto:       b([]string{"g"}, "g", "go to step N"),
		First:      b([]string{"home"}, "home", "first step"),
		Last:       b([]string{"end", "G"}, "end G", "last step"),
		Command:    b([]string{":"}, ":", "command line: break, continue, x, info, set, watch… (:help lists them)"),
		Save:       b([]string{"w"}, "w", "save the trace (asks for a file name; .sctrace opens in sctrace view)"),
		Syntax:     b([]string{"t"}, "t", "toggle Intel / AT&T syntax"),
		Old:        b([]string{"O"}, "O", "show register values before the last step"),
		Pane:       b([]string{"tab"}, "tab", "switch the lower pane on small screens (effects, system, stack, watches)"),
		EffUp:      b([]string{"K", "pgup"}, "K pgup", "scroll the effects pane up (pgup scrolls a lesson when one runs)"),
		EffDown:    b([]string{"J", "pgdown"}, "J pgdn", "scroll the effects pane down"),
		Stop:       b([]string{"esc"}, "esc", "stop the recording in flight (R, c, e, r…): the steps recorded so far are kept"),
		Help:       b([]string{"?"}, "?", "this help (any key closes it)"),
		Quit:       b([]string{"q", "ctrl+c"}, "q ctrl-c", fmt.Sprintf("quit: breakpoints removed, QEMU ended if sctrace started it; an unsaved recording of over %d steps is written to a private temporary file, named on exit", keepAfter)),
	}
}

// entries lists the bindings in help order, with the word the key bar
// uses ("" keeps a key out of the bar).
func (k *KeyMap) entries() []struct {
	b   *key.Binding
	bar string
} {
	type e = struct {
		b   *key.Binding
		bar string
	}
	return []e{
		{&k.Step, "step"}, {&k.Over, "over"}, {&k.Back, "back"}, {&k.Forward, "fwd"},
		{&k.Event, "event"}, {&k.PrevEvent, ""}, {&k.ToUser, "to user"}, {&k.Continue, "next call"},
		{&k.RoundTrip, "round trip"}, {&k.Fast, ""}, {&k.Probe, ""}, {&k.Search, "search"}, {&k.SearchNext, ""},
		{&k.SearchP, ""}, {&k.Goto, "goto"}, {&k.First, ""}, {&k.Last, ""}, {&k.Command, "command"},
		{&k.Save, "save"}, {&k.Syntax, "syntax"}, {&k.Old, ""}, {&k.Pane, "pane"},
		{&k.EffUp, ""}, {&k.EffDown, ""}, {&k.Stop, ""}, {&k.Help, "help"}, {&k.Quit, "quit"},
	}
}

// searchHelp documents the search syntax in the help overlay.
var searchHelp = [][2]string{
	{"/TEXT", "recorded steps whose symbol or instruction contains TEXT"},
	{"/@SYM", "recorded steps in symbol SYM (or SYM+0x10)"},
	{"/!KIND", "recorded steps with event KIND: syscall, swapgs, cr3-write…"},
	{"/REG=VAL", "recorded steps where a register holds VAL: /rsp=0x7ffd…"},
	{"/>TEXT", "the code ahead in the current function (live: read from the guest)"},
}

// mouseHelp is the one entry the help lists that is no key.
var mouseHelp = [2]string{"wheel", "scroll the code or effects pane"}

// helpRows returns the help overlay's rows: every binding, then the search
// syntax.
func (k *KeyMap) helpRows() [][2]string {
	var out [][2]string
	for _, e := range k.entries() {
		h := e.b.Help()
		out = append(out, [2]string{h.Key, h.Desc})
	}
	out = append(out, mouseHelp)
	return append(out, searchHelp...)
}

// bar returns the key bar for a screen w columns wide: as many keys as
// fit, always ending with help and quit.
func (k *KeyMap) bar(w int) string {
	var items []string
	for _, e := range k.entries() {
		if e.bar == "" || e.b == &k.Help || e.b == &k.Quit {
			continue
		}
		items = append(items, e.b.Keys()[0]+" "+e.bar)
	}
	tail := k.Help.Keys()[0] + " help  " + k.Quit.Keys()[0] + " quit"
	var b strings.Builder
	for _, it := range items {
		if ansi.StringWidth(b.String())+len(it)+2+len(tail) > w {
			break
		}
		b.WriteString(it + "  ")
	}
	return b.String() + tail
}

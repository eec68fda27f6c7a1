// Package command is sctrace's debugger command language: gdb's words
// (break, until, continue, stepi, x, info, set, print) for a guest stopped
// under QEMU's gdbstub, plus trace (record to the next return to user mode)
// and save. Parse turns a line into a Command; an Engine runs commands
// against a live session and writes what they show. The same engine serves
// the non-interactive front end (sctrace attach -x FILE, --batch) and an
// interactive command line.
//
// Expressions (addresses, values) are package expr's.
package command

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/agnivade/levenshtein"

	"github.com/sctrace/sctrace/expr"
)

// Command is one parsed command line.
type Command struct {
	Verb string // canonical name: "break", "x", "info", ...
	// Expr is the address or value: of break, until, x and print, and
	// the value of set.
	Expr expr.Expr
	// Dest is what set writes: a register (expr.Reg), memory
	// (expr.Deref) or a pt_regs field (expr.Field).
	Dest  expr.Expr
	Count int    // stepi N; x/N
	Fmt   Format // x
	Topic string // info's subject, help's command
	Arg   string // info symbols PATTERN, info registers NAMES, save FILE
	IDs   []int  // delete N...
}

// Format is an examine format, x/NFU: Letter x (hex), d (signed), u
// (unsigned) or i (instructions); Size 1, 2, 4 or 8 bytes (b, h, w, g);
// Physical reads physical rather than virtual addresses.
type Format struct {
	Letter   byte
	Size     int
	Physical bool
}

// String renders the command in canonical form, for tests and logs.
func (c Command) String() string {
	parts := []string{c.Verb}
	if c.Verb == "x" {
		p := ""
		if c.Fmt.Physical {
			p = "p"
		}
		sz := map[int]string{1: "b", 2: "h", 4: "w", 8: "g"}[c.Fmt.Size]
		if c.Fmt.Letter == 'i' {
			sz = ""
		}
		parts[0] = fmt.Sprintf("x/%d%c%s%s", c.Count, c.Fmt.Letter, sz, p)
	}
	if c.Verb == "stepi" {
		parts = append(parts, strconv.Itoa(c.Count))
	}
	if c.Topic != "" {
		parts = append(parts, c.Topic)
	}
	if c.Dest != nil {
		parts = append(parts, c.Dest.String(), "=")
	}
	if c.Expr != nil {
		parts = append(parts, c.Expr.String())
	}
	for _, id := range c.IDs {
		parts = append(parts, strconv.Itoa(id))
	}
	if c.Arg != "" {
		parts = append(parts, c.Arg)
	}
	return strings.Join(parts, " ")
}

// verb describes a command word.
type verb struct {
	name    string
	aliases []string
	usage   string
	summary string
	detail  string
	live    bool // needs a live guest
	parse   func(c *Command, rest string) error
}

// Verbs lists the command names, in help order.
func Verbs() []string {
	out := make([]string, len(verbs))
	for i, v := range verbs {
		out[i] = v.name
	}
	return out
}

// lookupVerb finds a verb by its name, an alias, or an unambiguous prefix
// of its name.
func lookupVerb(word string) (*verb, error) {
	w := strings.ToLower(word)
	for i := range verbs {
		if verbs[i].name == w || slices.Contains(verbs[i].aliases, w) {
			return &verbs[i], nil
		}
	}
	var found []*verb
	for i := range verbs {
		if strings.HasPrefix(verbs[i].name, w) {
			found = append(found, &verbs[i])
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return nil, unknownCommand(word)
	}
	var names []string
	for _, v := range found {
		names = append(names, v.name)
	}
	return nil, fmt.Errorf("%q is ambiguous: %s", word, strings.Join(names, ", "))
}

func unknownCommand(word string) error {
	best, bestD := "", 3
	for _, v := range verbs {
		for _, n := range append([]string{v.name}, v.aliases...) {
			if len(n) < 3 {
				continue
			}
			if d := levenshtein.ComputeDistance(strings.ToLower(word), n); d < bestD {
				best, bestD = v.name, d
			}
		}
	}
	if best != "" {
		return fmt.Errorf("unknown command %q; did you mean %s? (help lists the commands)", word, best)
	}
	return fmt.Errorf("unknown command %q (help lists the commands)", word)
}

// Parse parses one command line. Blank lines and lines starting with #
// are no command: Parse returns a Command with an empty Verb.
func Parse(line string) (Command, error) {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return Command{}, nil
	}
	word, rest, slash := line, "", false
	if i := strings.IndexAny(line, " \t/"); i >= 0 {
		word, rest, slash = line[:i], strings.TrimSpace(line[i:]), line[i] == '/'
	}
	v, err := lookupVerb(word)
	if err != nil {
		return Command{}, err
	}
	c := Command{Verb: v.name}
	switch {
	case slash && v.name != "x":
		return Command{}, fmt.Errorf("%s takes no /FMT (only x does)", v.name)
	case !slash && v.name == "x" && strings.HasPrefix(rest, "/"):
		return Command{}, fmt.Errorf("x: write the format next to it: x/4xg ADDR")
	}
	if err := v.parse(&c, rest); err != nil {
		return Command{}, fmt.Errorf("%s: %w", v.name, err)
	}
	return c, nil
}

func noArgs(c *Command, rest string) error {
	if rest != "" {
		return fmt.Errorf("takes no arguments, got %q", rest)
	}
	return nil
}

func oneExpr(what string) func(c *Command, rest string) error {
	return func(c *Command, rest string) error {
		if rest == "" {
			return fmt.Errorf("needs %s", what)
		}
		e, err := expr.Parse(rest)
		if err != nil {
			return err
		}
		c.Expr = e
		return nil
	}
}

func parseStepi(c *Command, rest string) error {
	c.Count = 1
	if rest == "" {
		return nil
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n <= 0 {
		return fmt.Errorf("count must be a positive number, not %q", rest)
	}
	c.Count = n
	return nil
}

// maxExamine bounds x's count, so that a typo does not read megabytes
// through the stub.
const maxExamine = 4096

func parseExamine(c *Command, rest string) error {
	c.Count, c.Fmt = 1, Format{Letter: 'x', Size: 8}
	if spec, ok := strings.CutPrefix(rest, "/"); ok {
		spec, rest, _ = strings.Cut(spec, " ")
		rest = strings.TrimSpace(rest)
		i := 0
		for i < len(spec) && spec[i] >= '0' && spec[i] <= '9' {
			i++
		}
		if i > 0 {
			n, err := strconv.Atoi(spec[:i])
			if err != nil || n <= 0 || n > maxExamine {
				return fmt.Errorf("count %q: want 1 to %d", spec[:i], maxExamine)
			}
			c.Count = n
		}
		for _, ch := range spec[i:] {
			switch ch {
			case 'x', 'd', 'u', 'i':
				c.Fmt.Letter = byte(ch)
			case 'b':
				c.Fmt.Size = 1
			case 'h':
				c.Fmt.Size = 2
			case 'w':
				c.Fmt.Size = 4
			case 'g':
				c.Fmt.Size = 8
			case 'p':
				c.Fmt.Physical = true
			default:
				return fmt.Errorf("unknown format letter %q in /%s (x d u i, sizes b h w g, p for physical)", ch, spec)
			}
		}
	}
	for {
		word, after, _ := strings.Cut(rest, " ")
		if word != "-phys" && word != "-p" {
			break
		}
		c.Fmt.Physical = true
		rest = strings.TrimSpace(after)
	}
	return oneExpr("an address (x/4xg $rsp, x/5i $rip, x/2xg -phys 0x1000)")(c, rest)
}

// infoTopics are info's subjects.
var infoTopics = []string{"registers", "msrs", "breakpoints", "regions", "symbols"}

func parseInfo(c *Command, rest string) error {
	word, arg, _ := strings.Cut(rest, " ")
	if word == "" {
		return fmt.Errorf("info what? %s", strings.Join(infoTopics, ", "))
	}
	var found []string
	for _, t := range infoTopics {
		if strings.HasPrefix(t, word) {
			found = append(found, t)
		}
	}
	switch {
	case word == "r" || word == "reg":
		found = []string{"registers"}
	case word == "b" || word == "break":
		found = []string{"breakpoints"}
	case len(found) > 1:
		return fmt.Errorf("%q is ambiguous: %s", word, strings.Join(found, ", "))
	case len(found) == 0:
		return fmt.Errorf("no info %q (info %s)", word, strings.Join(infoTopics, ", "))
	}
	c.Topic, c.Arg = found[0], strings.TrimSpace(arg)
	switch c.Topic {
	case "symbols":
		if c.Arg == "" {
			return fmt.Errorf("info symbols needs a PATTERN (a part of the name, or a glob like entry_*)")
		}
	case "registers":
		for _, n := range strings.Fields(c.Arg) {
			if _, ok := expr.ParseReg(strings.TrimPrefix(n, "$")); !ok {
				return fmt.Errorf("unknown register %q (registers: %s)", n, expr.RegisterNames())
			}
		}
	default:
		if c.Arg != "" {
			return fmt.Errorf("info %s takes no arguments, got %q", c.Topic, c.Arg)
		}
	}
	return nil
}

func parseSet(c *Command, rest string) error {
	rest = strings.TrimSpace(strings.TrimPrefix(rest, "var "))
	lhs, rhs, ok := strings.Cut(rest, "=")
	if !ok || strings.HasPrefix(rhs, "=") {
		return fmt.Errorf("want set $REG = VALUE or set *(u64*)ADDR = VALUE")
	}
	dest, err := expr.Parse(lhs)
	if err != nil {
		return err
	}
	switch dest.(type) {
	case expr.Reg, expr.Deref, expr.Field:
	default:
		return fmt.Errorf("cannot assign to %s: write a register ($rax), memory (*(u64*)ADDR) or pt_regs->FIELD", dest)
	}
	val, err := expr.Parse(rhs)
	if err != nil {
		return err
	}
	c.Dest, c.Expr = dest, val
	return nil
}

func parseDelete(c *Command, rest string) error {
	for _, f := range strings.Fields(strings.TrimPrefix(rest, "breakpoints")) {
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return fmt.Errorf("breakpoint numbers are positive integers, not %q", f)
		}
		c.IDs = append(c.IDs, n)
	}
	return nil
}

func parseSave(c *Command, rest string) error {
	if rest == "" {
		return fmt.Errorf("needs a FILE (.json or .sctrace replays in sctrace view; .txt and .md are for reading; - prints text)")
	}
	c.Arg = rest
	return nil
}

func parseHelp(c *Command, rest string) error {
	if rest == "" {
		return nil
	}
	v, err := lookupVerb(strings.Fields(rest)[0])
	if err != nil {
		return err
	}
	c.Topic = v.name
	return nil
}

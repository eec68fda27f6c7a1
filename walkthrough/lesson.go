// Package walkthrough holds sctrace's guided lessons: Markdown files with a
// small YAML front matter that binds each paragraph to an event of a real
// trace (an instruction, a symbol, a CPL or CR3 change, a swapgs), so the
// paragraph appears when the step it talks about is on screen.
//
// The package parses lessons, binds them to recorded steps, checks the
// answers students give against the live CPU state, records the traces a
// lesson needs, exports a lesson with its trace to Markdown or HTML, and
// remembers each user's progress. It draws nothing: the TUI shows lessons.
package walkthrough

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strings"
	"text/template"

	"go.yaml.in/yaml/v3"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/mechanism"
)

// Targets a lesson runs on.
const (
	TargetFixture = "fixture" // the bundled teaching kernel under QEMU
	TargetLinux   = "linux"   // a Linux kernel under QEMU
)

// Lesson is one walkthrough.
type Lesson struct {
	Number int    `yaml:"-"` // from the file name, 1-based
	Slug   string `yaml:"-"` // from the file name, e.g. "getpid"
	Title  string `yaml:"title"`
	// Summary is one line for the lesson list.
	Summary string `yaml:"summary"`
	// Target is TargetFixture (the default) or TargetLinux.
	Target string `yaml:"target"`
	// Mechanism is how the first round trip enters the kernel ("" lets the
	// teaching kernel call every mechanism in turn).
	Mechanism mechanism.Mechanism `yaml:"mechanism"`
	// Kernel are extra words for the kernel's command line, e.g. the
	// teaching kernel's bug=int80-noswapgs or Linux's pti=on.
	Kernel string `yaml:"kernel"`
	// Bench asks for round-trip costs measured on this machine before the
	// lesson starts; the text reads them through template functions.
	Bench bool `yaml:"bench"`
	// Intro is the text before the first step.
	Intro string `yaml:"-"`
	Steps []Step `yaml:"steps"`
}

// Step is one paragraph of a lesson and the trace event it waits for.
type Step struct {
	ID    string `yaml:"id"`
	Title string `yaml:"-"` // the section heading
	Text  string `yaml:"-"` // Markdown, after the template ran
	// Match says which step of the trace the paragraph talks about.
	Match `yaml:",inline"`
	// Mechanism, when set, starts a fresh round trip by this mechanism at
	// this step (the record of the previous one is left behind).
	Mechanism mechanism.Mechanism `yaml:"mechanism"`
	// Look says where on the screen to look.
	Look Look `yaml:"look"`
	// Question, when set, must be answered before the lesson goes on.
	Question *Question `yaml:"question"`
}

// Look points at a pane and, optionally, a value in it.
type Look struct {
	Pane  string `yaml:"pane"`  // code, registers, system, stack, effects
	Value string `yaml:"value"` // a register name, or a line of the pane ("cr3", "gs_base")
}

// Panes a Look may name.
var Panes = []string{"code", "registers", "system", "stack", "effects"}

// Segment is the run of steps that share one round trip.
type Segment struct {
	Mechanism mechanism.Mechanism
	First     int // index of its first step in Lesson.Steps
	Steps     []int
}

// Segments groups the steps by round trip: a step with a Mechanism starts
// a new one.
func (l *Lesson) Segments() []Segment {
	var out []Segment
	for i, s := range l.Steps {
		if i == 0 || s.Mechanism != "" {
			m := s.Mechanism
			if m == "" {
				m = l.Mechanism
			}
			out = append(out, Segment{Mechanism: m, First: i})
		}
		out[len(out)-1].Steps = append(out[len(out)-1].Steps, i)
	}
	return out
}

// SegmentOf returns the index of the segment holding step i.
func (l *Lesson) SegmentOf(i int) int {
	segs := l.Segments()
	for k := len(segs) - 1; k >= 0; k-- {
		if segs[k].First <= i {
			return k
		}
	}
	return 0
}

// Name is "N-slug", the lesson's file name without .md.
func (l *Lesson) Name() string { return fmt.Sprintf("%d-%s", l.Number, l.Slug) }

//go:embed lessons/*.md
var files embed.FS

var fileName = regexp.MustCompile(`^(\d+)-([a-z0-9-]+)\.md$`)

// Source is a lesson file before its template ran.
type Source struct {
	Number int
	Slug   string
	Text   string
}

// Sources returns the bundled lesson files in order.
func Sources() ([]Source, error) {
	ents, err := fs.ReadDir(files, "lessons")
	if err != nil {
		return nil, fmt.Errorf("lessons: %w", err)
	}
	var out []Source
	for _, e := range ents {
		m := fileName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		b, err := files.ReadFile(path.Join("lessons", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("lesson %s: %w", e.Name(), err)
		}
		var n int
		fmt.Sscan(m[1], &n)
		out = append(out, Source{Number: n, Slug: m[2], Text: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Number < out[j].Number })
	return out, nil
}

// All parses every bundled lesson with data for its template.
func All(d *Data) ([]*Lesson, error) {
	srcs, err := Sources()
	if err != nil {
		return nil, err
	}
	var out []*Lesson
	for _, s := range srcs {
		l, err := Parse(s, d)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

// Get parses bundled lesson n (1-based).
func Get(n int, d *Data) (*Lesson, error) {
	srcs, err := Sources()
	if err != nil {
		return nil, err
	}
	for _, s := range srcs {
		if s.Number == n {
			return Parse(s, d)
		}
	}
	return nil, fmt.Errorf("no lesson %d: `sctrace learn` lists them (1-%d)", n, len(srcs))
}

var heading = regexp.MustCompile(`(?m)^## +(.+?) +\{#([a-z0-9-]+)\} *$`)

// ErrFormat is wrapped by every error about a lesson file's contents.
var ErrFormat = errors.New("lesson format")

// Parse reads a lesson: YAML front matter between --- lines, then Markdown
// whose "## Title {#id}" sections are the steps' paragraphs, one per step
// in the front matter, in the same order. The Markdown is a text/template
// run with d (nil gives placeholders for measured values).
func Parse(src Source, d *Data) (*Lesson, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: lesson %d-%s: %s", ErrFormat, src.Number, src.Slug, fmt.Sprintf(format, args...))
	}
	text := strings.ReplaceAll(src.Text, "\r\n", "\n")
	if !strings.HasPrefix(text, "---\n") {
		return nil, fail("no front matter (the file must start with a --- line)")
	}
	fm, body, ok := strings.Cut(text[4:], "\n---\n")
	if !ok {
		return nil, fail("front matter not closed by a --- line")
	}
	l := &Lesson{Number: src.Number, Slug: src.Slug}
	dec := yaml.NewDecoder(strings.NewReader(fm))
	dec.KnownFields(true)
	if err := dec.Decode(l); err != nil {
		return nil, fail("front matter: %v", err)
	}
	if l.Title == "" {
		return nil, fail("no title")
	}
	switch l.Target {
	case "":
		l.Target = TargetFixture
	case TargetFixture, TargetLinux:
	default:
		return nil, fail("target %q: want fixture or linux", l.Target)
	}
	if len(l.Steps) == 0 {
		return nil, fail("no steps")
	}
	var buf bytes.Buffer
	tmpl, err := template.New(l.Name()).Funcs(d.funcs()).Option("missingkey=error").Parse(body)
	if err != nil {
		return nil, fail("template: %v", err)
	}
	if err := tmpl.Execute(&buf, d); err != nil {
		return nil, fail("template: %v", err)
	}
	body = buf.String()
	locs := heading.FindAllStringSubmatchIndex(body, -1)
	if len(locs) != len(l.Steps) {
		return nil, fail("%d steps in the front matter but %d \"## Title {#id}\" sections", len(l.Steps), len(locs))
	}
	l.Intro = strings.TrimSpace(body[:locs[0][0]])
	seen := map[string]bool{}
	for i, loc := range locs {
		s := &l.Steps[i]
		id := body[loc[4]:loc[5]]
		if s.ID != id {
			return nil, fail("step %d is %q in the front matter but section %d is {#%s}", i+1, s.ID, i+1, id)
		}
		if seen[id] {
			return nil, fail("step id %q used twice", id)
		}
		seen[id] = true
		s.Title = body[loc[2]:loc[3]]
		end := len(body)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		s.Text = strings.TrimSpace(body[loc[1]:end])
		if err := s.check(); err != nil {
			return nil, fail("step %q: %v", id, err)
		}
		if i == 0 && s.Mechanism != "" && l.Mechanism == "" {
			l.Mechanism = s.Mechanism
		}
	}
	return l, nil
}

// check validates a step's binding, look and question.
func (s *Step) check() error {
	if err := s.Match.check(); err != nil {
		return err
	}
	if s.Mechanism != "" {
		if _, err := mechanism.Parse(string(s.Mechanism)); err != nil {
			return err
		}
	}
	if s.Look.Pane != "" {
		ok := false
		for _, p := range Panes {
			ok = ok || p == s.Look.Pane
		}
		if !ok {
			return fmt.Errorf("look.pane %q: want one of %s", s.Look.Pane, strings.Join(Panes, ", "))
		}
	}
	if q := s.Question; q != nil {
		return q.check()
	}
	return nil
}

// Events lists the annotate events the lesson names, for documentation.
func (l *Lesson) Events() []annotate.Event {
	var out []annotate.Event
	for _, s := range l.Steps {
		if s.Event != "" {
			out = append(out, s.Event)
		}
	}
	return out
}

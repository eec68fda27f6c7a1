package walkthrough

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/bench"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/trace"
)

// loadTrace reads a recorded round trip of the teaching kernel.
func loadTrace(t *testing.T, path string) *trace.Trace {
	t.Helper()
	tr, err := trace.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func TestBundledLessons(t *testing.T) {
	lessons, err := All(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(lessons) != 7 {
		t.Fatalf("%d lessons, want 7", len(lessons))
	}
	wantSegs := []int{1, 1, 5, 1, 2, 1, 2}
	for i, l := range lessons {
		if l.Number != i+1 {
			t.Errorf("lesson %d is numbered %d", i+1, l.Number)
		}
		if got := len(l.Segments()); got != wantSegs[i] {
			t.Errorf("lesson %s: %d round trips, want %d", l.Name(), got, wantSegs[i])
		}
		for _, s := range l.Steps {
			if s.Title == "" || s.Text == "" {
				t.Errorf("lesson %s step %q has no title or text", l.Name(), s.ID)
			}
			if strings.Contains(s.Text, "{{") {
				t.Errorf("lesson %s step %q: template left in the text", l.Name(), s.ID)
			}
		}
	}
	if lessons[6].Target != TargetLinux || lessons[6].Mechanism != mechanism.Int3 {
		t.Errorf("lesson 7: target %q, mechanism %q; want linux, int3", lessons[6].Target, lessons[6].Mechanism)
	}
	if lessons[3].Target != TargetLinux || lessons[4].Kernel != "bug=int80-noswapgs" || !lessons[2].Bench {
		t.Errorf("targets and kernels: 4 %q, 5 %q, 3 bench %v", lessons[3].Target, lessons[4].Kernel, lessons[2].Bench)
	}
}

func TestParseErrors(t *testing.T) {
	const steps = "steps:\n  - id: a\n    at: start\n"
	tests := []struct {
		name, text, want string
	}{
		{"no front matter", "# hello\n", "no front matter"},
		{"unclosed", "---\ntitle: x\n", "not closed"},
		{"no title", "---\n" + steps + "---\n## A {#a}\ntext\n", "no title"},
		{"unknown field", "---\ntitle: x\ncolour: red\n" + steps + "---\n## A {#a}\ntext\n", "colour"},
		{"bad target", "---\ntitle: x\ntarget: bsd\n" + steps + "---\n## A {#a}\n", "target"},
		{"no steps", "---\ntitle: x\n---\n", "no steps"},
		{"section count", "---\ntitle: x\n" + steps + "---\ntext\n", "0 \"## Title {#id}\" sections"},
		{"id mismatch", "---\ntitle: x\n" + steps + "---\n## A {#b}\n", `section 1 is {#b}`},
		{"no event", "---\ntitle: x\nsteps:\n  - id: a\n---\n## A {#a}\n", "no event"},
		{"unknown event", "---\ntitle: x\nsteps:\n  - id: a\n    event: teleport\n---\n## A {#a}\n", "not an annotate event"},
		{"start with event", "---\ntitle: x\nsteps:\n  - id: a\n    at: start\n    event: swapgs\n---\n## A {#a}\n", "no other event field"},
		{"bad cpl", "---\ntitle: x\nsteps:\n  - id: a\n    cpl: 5\n---\n## A {#a}\n", "cpl 5"},
		{"bad pane", "---\ntitle: x\nsteps:\n  - id: a\n    at: start\n    look: {pane: window}\n---\n## A {#a}\n", "look.pane"},
		{"bad mechanism", "---\ntitle: x\nsteps:\n  - id: a\n    at: start\n    mechanism: teleport\n---\n## A {#a}\n", "unknown mechanism"},
		{"question kind", "---\ntitle: x\nsteps:\n  - id: a\n    at: start\n    question: {ask: q, kind: colour, answer: x}\n---\n## A {#a}\n", "question kind"},
		{"question value", "---\ntitle: x\nsteps:\n  - id: a\n    at: start\n    question: {ask: q, kind: register, value: pc, answer: x}\n---\n## A {#a}\n", "question value"},
		{"question answer", "---\ntitle: x\nsteps:\n  - id: a\n    at: start\n    question: {ask: q, kind: cpl}\n---\n## A {#a}\n", "example answer"},
		{"template", "---\ntitle: x\n" + steps + "---\n## A {#a}\n{{nosuch}}\n", "template"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(Source{Number: 9, Slug: "test", Text: tt.text}, nil)
			if err == nil || !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one wrapping ErrFormat containing %q", err, tt.want)
			}
		})
	}
}

// TestBindRecorded binds lessons 1 and 2 to a recorded syscall round trip
// and checks where each paragraph lands.
func TestBindRecorded(t *testing.T) {
	tr := loadTrace(t, "../tui/testdata/syscall.json")
	tests := []struct {
		lesson int
		pos    map[string]int // step id -> position
	}{
		{1, map[string]int{"abi": 0, "syscall": 1, "kernel": 44, "before-sysret": 86, "back": 87}},
		{2, map[string]int{"entry": 1, "swapgs": 2, "save-rsp": 3, "cr3": 6, "stack": 7, "hwframe": 12,
			"pt-regs": 42, "dispatch": 44, "checks": 55, "restore": 63, "entry-stack": 78, "cr3-back": 83,
			"swapgs-back": 86, "sysret": 87}},
	}
	for _, tt := range tests {
		l, err := Get(tt.lesson, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := Check(l, []*trace.Trace{tr}); err != nil {
			t.Errorf("lesson %d: %v", tt.lesson, err)
		}
		seg := l.Segments()[0]
		b := Bind(l, seg, tr)
		for j, i := range seg.Steps {
			if want := tt.pos[l.Steps[i].ID]; b.Pos[j] != want {
				t.Errorf("lesson %d step %q shown at %d, want %d", tt.lesson, l.Steps[i].ID, b.Pos[j], want)
			}
		}
		// Current follows the position: paragraph j from its position on.
		for j, p := range b.Pos {
			if c := b.Current(p); c != j && b.Pos[min(j+1, len(b.Pos)-1)] != p {
				t.Errorf("lesson %d: at position %d the current paragraph is %d, want %d", tt.lesson, p, c, j)
			}
		}
	}
}

// TestBindBreaks checks that a step that does not occur leaves it and
// every later step unbound, and that Check says which.
func TestBindBreaks(t *testing.T) {
	tr := loadTrace(t, "../tui/testdata/syscall.json")
	cpl := 0
	l := &Lesson{Number: 9, Slug: "t", Steps: []Step{
		{ID: "a", Match: Match{Event: "swapgs"}},
		{ID: "b", Match: Match{Insn: "iretq"}},
		{ID: "c", Match: Match{CPL: &cpl}},
	}}
	b := Bind(l, l.Segments()[0], tr)
	if b.Pos[0] != 2 || b.Pos[1] != Unbound || b.Pos[2] != Unbound {
		t.Errorf("positions %v, want [2 unbound unbound]", b.Pos)
	}
	err := Check(l, []*trace.Trace{tr})
	if err == nil || !strings.Contains(err.Error(), `step "b": `+"`iretq`"+` not found`) {
		t.Errorf("Check: %v", err)
	}
}

func TestMatch(t *testing.T) {
	tr := loadTrace(t, "../tui/testdata/syscall.json")
	zero, three := 0, 3
	tests := []struct {
		m    Match
		want int // first step index, -1 for none
	}{
		{Match{Event: "syscall"}, 0},
		{Match{CPL: &zero}, 0},
		{Match{CPL: &three}, 86},
		{Match{Insn: "swapgs", Nth: 2}, 85},
		{Match{Symbol: "entry_SYSCALL_64"}, 1},
		{Match{Symbol: "entry_SYSCALL_64", Insn: "mov", Nth: 2}, 3},
		{Match{Event: "cr3-write", Symbol: "syscall_return_via_sysret"}, 82},
		{Match{Insn: "callq"}, 42},
		{Match{Insn: "call"}, 42},
		{Match{Insn: "ret"}, 50},
		{Match{Insn: "retq"}, 50},
		{Match{Insn: "jne"}, 54},
		{Match{Insn: "jnz", Nth: 3}, 61},
		{Match{Insn: "sysretq"}, 86},
		{Match{Insn: "SYSRETQ"}, 86},
		{Match{Insn: "sysretl"}, -1},
		{Match{Insn: "sysret"}, -1},
		{Match{Event: "finding"}, -1},
	}
	for _, tt := range tests {
		if got := find(tt.m, tr, 0); got != tt.want {
			t.Errorf("%s: step %d, want %d", tt.m, got, tt.want)
		}
	}
}

// TestMatchInsn: a lesson's insn is compared with the step's canonical
// mnemonic, in any spelling objdump uses, and never with the rendered
// text.
func TestMatchInsn(t *testing.T) {
	tests := []struct {
		insn     string
		mnemonic string // the step's canonical mnemonic
		intel    string // the step's rendered Intel text
		want     bool
	}{
		{"sysretq", "sysretq", "sysretq", true},
		{"sysretq", "sysretl", "sysret", false},
		{"sysretd", "sysretl", "sysret", true},
		{"lretq", "lretq", "retfq", true},
		{"retfq", "lretq", "retfq", true},
		{"lret", "lretq", "retfq", false},
		{"iretq", "iretq", "iretq", true},
		{"iretl", "iret", "iretd", true},
		{"sysexitq", "sysexitq", "sysexitq", true},
		{"sysexit", "sysexitq", "sysexitq", false},
		{"int", "int", "int 0x80", true},
		{"int", "int3", "int3", false},
		{"int3", "int3", "int3", true},
		{"int1", "int1", "int1", true},
		{"icebp", "int1", "int1", true},
		{"lcall", "lcall", "call far ptr [0x401000]", true},
		{"call", "lcall", "call far ptr [0x401000]", false},
		{"call", "call", "bnd call 0x401000", true},
		{"call", "nop", "call 0x401000", false},
		{"ud2", "ud2", "ud2", true},
		{"swapgs", "swapgs", "swapgs", true},
		{"syscall", "syscall", "syscall", true},
		{"sysenter", "sysenter", "sysenter", true},
	}
	for _, tt := range tests {
		s := &trace.Step{Mnemonic: tt.mnemonic, Intel: tt.intel, ATT: tt.intel}
		if got := (Match{Insn: tt.insn}).Matches(s, nil); got != tt.want {
			t.Errorf("insn %q on a step %q (%q): %v, want %v", tt.insn, tt.mnemonic, tt.intel, got, tt.want)
		}
	}
}

func TestUntil(t *testing.T) {
	tr := loadTrace(t, "../tui/testdata/syscall.json")
	l, err := Get(2, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Feeding the recorded steps one by one stops where the last paragraph
	// binds, as a live run would.
	until := UntilSegment(l, l.Segments()[0])
	stop := -1
	for k, s := range tr.All() {
		if r := until(s, tr.After(k)); r != "" {
			stop = k
			if r != StopLesson {
				t.Errorf("stopped at %d for %q", k, r)
			}
			break
		}
	}
	if stop != 86 {
		t.Errorf("the segment stopped at step %d, want 86 (sysretq)", stop)
	}
	// UntilStep counts matches already recorded.
	m := Match{Event: "swapgs", Nth: 2}
	u := UntilStep(m, Count(m, tr.View(10), 0))
	for k := 10; k < tr.Len(); k++ {
		if r := u(tr.Step(k), tr.After(k)); r != "" {
			if k != 85 || r != StopLesson {
				t.Errorf("UntilStep stopped at %d (%q), want 85", k, r)
			}
			break
		}
	}
}

func TestQuestions(t *testing.T) {
	tr := loadTrace(t, "../tui/testdata/syscall.json")
	tests := []struct {
		q      Question
		pos    int
		answer string
		ok     bool
		why    string
	}{
		{Question{Kind: AskRegister, Value: ValueUserRIP}, 1, "rcx", true, "rcx holds 0x400013: the user return address (after the 2-byte syscall at 0x400011)"},
		{Question{Kind: AskRegister, Value: ValueUserRIP}, 1, "%RCX", true, "rcx holds"},
		{Question{Kind: AskRegister, Value: ValueUserRIP}, 1, "r11", false, "r11 holds 0x246, not the user return address"},
		{Question{Kind: AskRegister, Value: ValueUserRIP}, 1, "pc", false, `"pc" is not a register name`},
		{Question{Kind: AskRegister, Value: ValueSyscallNr}, 0, "rax", true, "0x27"},
		{Question{Kind: AskRegister, Value: ValueCurrentRSP}, 42, "rdi", true, "rdi holds"},
		{Question{Kind: AskRegister, Value: ValueCurrentRSP}, 42, "rsp", false, "rsp holds"},
		{Question{Kind: AskCR3}, 1, "user", true, "bit 12 is set"},
		{Question{Kind: AskCR3}, 6, "user", false, "bit 12 is clear"},
		{Question{Kind: AskCR3}, 6, "kernel half", true, "kernel's page tables"},
		{Question{Kind: AskCPL}, 0, "3", true, "CPL, are 3"},
		{Question{Kind: AskCPL}, 1, "3", false, "are 0"},
		{Question{Kind: AskGS}, 2, "kernel", true, "per-CPU area"},
		{Question{Kind: AskGS}, 1, "kernel", false, "the user's"},
		{Question{Kind: AskStack}, 1, "user", true, "on the user stack"},
		{Question{Kind: AskStack}, 7, "kernel stack", true, "on the kernel stack"},
		{Question{Kind: AskStack}, 78, "kernel", false, "on the entry stack"},
	}
	for _, tt := range tests {
		ok, why := tt.q.Check(tt.answer, StateAt(tr, tt.pos))
		if ok != tt.ok || !strings.Contains(why, tt.why) {
			t.Errorf("%s %s at %d, answer %q: %v %q; want %v and %q", tt.q.Kind, tt.q.Value, tt.pos, tt.answer, ok, why, tt.ok, tt.why)
		}
	}
	// Before the first step has run, the entry state is the one on screen.
	st := State{Now: tr.Step(0).Regs}
	q := Question{Kind: AskRegister, Value: ValueSyscallNr}
	if ok, why := q.Check("rax", st); !ok {
		t.Errorf("syscall number before the first step: %s", why)
	}
	if ok, _ := q.Check("rax", State{}); ok {
		t.Error("an answer with no state on screen was accepted")
	}
}

func TestProgressStore(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_STATE_HOME", dir)
	s, err := DefaultStore()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "sctrace", "progress.json"); s.Path != want {
		t.Fatalf("store at %s, want %s", s.Path, want)
	}
	if all, err := s.Load(); err != nil || len(all) != 0 {
		t.Fatalf("a fresh store: %v %v", all, err)
	}
	steps := []struct {
		p    Progress
		want Progress
	}{
		{Progress{Reached: 3, Steps: 5, Answered: []string{"a"}}, Progress{Reached: 3, Answered: []string{"a"}}},
		{Progress{Reached: 1, Steps: 5, Answered: []string{"b"}}, Progress{Reached: 3, Answered: []string{"b", "a"}}},
		{Progress{Reached: 5, Steps: 5, Done: true}, Progress{Reached: 5, Done: true, Answered: []string{"b", "a"}}},
		{Progress{Reached: 2, Steps: 5}, Progress{Reached: 5, Done: true, Answered: []string{"b", "a"}}},
	}
	for i, st := range steps {
		if err := s.Save("1-getpid", st.p); err != nil {
			t.Fatal(err)
		}
		all, err := s.Load()
		if err != nil {
			t.Fatal(err)
		}
		got := all["1-getpid"]
		if got.Reached != st.want.Reached || got.Done != st.want.Done || strings.Join(got.Answered, ",") != strings.Join(st.want.Answered, ",") {
			t.Errorf("save %d: %+v, want %+v", i, got, st.want)
		}
	}
	var b bytes.Buffer
	lessons, _ := All(nil)
	all, _ := s.Load()
	if err := WriteList(&b, lessons, all, s.Path); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"1  What happens when you call getpid", "done", "2  Inside entry_SYSCALL_64", "not started", "Linux"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("list lacks %q:\n%s", want, b.String())
		}
	}
	if err := os.WriteFile(s.Path, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(); err == nil {
		t.Error("a corrupt progress file loaded without error")
	}
}

func TestBenchTemplate(t *testing.T) {
	rep := &bench.Report{Iters: 100, Targets: []*bench.TargetResult{{Name: bench.TargetFixture, Emulated: true, Series: []*bench.Series{
		{Mech: "syscall", Path: "full", Stats: &bench.Summary{Median: 12852}},
		{Mech: "int80", Path: "full", Stats: &bench.Summary{Median: 25704}},
		{Mech: "syscall", Path: "bare", Stats: &bench.Summary{Median: 105}},
	}}}}
	l, err := Get(3, &Data{Bench: rep})
	if err != nil {
		t.Fatal(err)
	}
	all := l.Intro
	for _, s := range l.Steps {
		all += s.Text
	}
	// Series not in the report read as not measured yet.
	for _, want := range []string{"12,852 ticks", "2.0× the `syscall` one", "105 ticks", "median of 100 round trips",
		"under TCG", "A round trip costs\n(measured when the lesson runs), bare"} {
		if !strings.Contains(all, want) {
			t.Errorf("lesson 3 text lacks %q", want)
		}
	}
	l, err = Get(3, &Data{BenchErr: errors.New("qemu not found")})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(l.Steps[1].Text, "(not measured: qemu not found)") {
		t.Errorf("without a report the cost reads %q", l.Steps[1].Text)
	}
}

func TestExport(t *testing.T) {
	tr := loadTrace(t, "../tui/testdata/syscall.json")
	l, err := Get(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	var md, html bytes.Buffer
	if err := WriteMarkdown(&md, l, []*trace.Trace{tr}, trace.ATT); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# Lesson 1: What happens when you call getpid", "## 2. What the CPU did in syscall",
		"| 0 | 3 | `user_syscall_insn` | `syscall` |", "**Question:** Which register holds the user RIP now",
		"rcx: rcx holds 0x400013", "steps not shown", "| 86 | 0 | `entry_SYSRETQ_insn` | `sysretq` |"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("Markdown export lacks %q", want)
		}
	}
	if err := WriteHTML(&html, l, []*trace.Trace{tr}, trace.Intel); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<!DOCTYPE html>", "<title>Lesson 1: What happens when you call getpid</title>", "<table>", "<details><summary>Answer</summary>"} {
		if !strings.Contains(html.String(), want) {
			t.Errorf("HTML export lacks %q", want)
		}
	}
	if err := WriteMarkdown(&md, l, nil, trace.ATT); err == nil {
		t.Error("export with no trace succeeded")
	}
}

// lookFor says where the answer to each kind of question is read: the
// system pane's CPL, CR3 and GS base lines, the stack pane (which names the
// region RSP is on), and for a register question the register that is the
// answer.
var lookFor = map[string]Look{
	AskCPL:   {Pane: "system", Value: "cpl"},
	AskCR3:   {Pane: "system", Value: "cr3"},
	AskGS:    {Pane: "system", Value: "gs_base"},
	AskStack: {Pane: "stack"},
}

// TestLooksPointAtAnswers checks every question's look: target: it must
// point where the answer is read, never at another register (lesson 1
// pointed at r11 for an answer in rcx, lesson 3 at rsp for rcx).
func TestLooksPointAtAnswers(t *testing.T) {
	lessons, err := All(nil)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range lessons {
		for i, s := range l.Steps {
			q := s.Question
			if q == nil {
				continue
			}
			n++
			want, ok := lookFor[q.Kind]
			if q.Kind == AskRegister {
				want, ok = Look{Pane: "registers", Value: q.Answer}, true
			}
			if !ok {
				t.Errorf("lesson %s paragraph %d (%s): no rule for a %s question", l.Name(), i+1, s.ID, q.Kind)
				continue
			}
			if s.Look != want {
				t.Errorf("lesson %s paragraph %d (%s): look %+v, but the answer %q is read at %+v", l.Name(), i+1, s.ID, s.Look, q.Answer, want)
			}
		}
	}
	if n == 0 {
		t.Fatal("no questions found")
	}
}

// TestQuestionsKeepTheirAnswer checks that the paragraph shown with a
// question does not state its answer: the stack a stack question asks
// about, the CPL a CPL question asks about, whose GS base is active.
func TestQuestionsKeepTheirAnswer(t *testing.T) {
	lessons, err := All(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lessons {
		for i, s := range l.Steps {
			q := s.Question
			if q == nil {
				continue
			}
			var giveaways []string
			switch q.Kind {
			case AskStack:
				giveaways = []string{q.Answer + " stack", q.Answer + "'s stack", "the " + q.Answer + " stack"}
			case AskCPL:
				giveaways = []string{"CPL " + q.Answer, "CPL is " + q.Answer, q.Answer + " privilege", "kernel privilege"}
			case AskGS:
				giveaways = []string{"pointing at the " + q.Answer, "gs_base` holds the " + q.Answer, q.Answer + "'s per-CPU area", "per-CPU area as the active GS base"}
			case AskCR3:
				giveaways = []string{"CR3 is the " + q.Answer, "the " + q.Answer + " page tables"}
			case AskRegister:
				a := q.Answer
				giveaways = []string{"into **" + a + "**", "into `" + a + "`", "into " + a + ",", "in **" + a + "**", "in `" + a + "`", "**" + a + "** holds", "`" + a + "` holds", a + " holds the"}
			}
			text := strings.ToLower(strings.ReplaceAll(s.Text, "\n", " "))
			for _, g := range giveaways {
				if strings.Contains(text, strings.ToLower(g)) {
					t.Errorf("lesson %s paragraph %d (%s) asks %q and says %q", l.Name(), i+1, s.ID, q.Ask, g)
				}
			}
		}
	}
}

// TestExportStandsAlone checks what an exported page must carry without
// the TUI: the state a question is answered from (lesson 2's "look at CR3
// in the system pane" on a page with no system pane), no gdbstub address
// (a throwaway port of the recording machine), and symbol names in the
// effects column that survive Markdown's raw-HTML rule.
func TestExportStandsAlone(t *testing.T) {
	tr := loadTrace(t, "../tui/testdata/syscall.json")
	l, err := Get(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	var md bytes.Buffer
	if err := WriteMarkdown(&md, l, []*trace.Trace{tr}, trace.ATT); err != nil {
		t.Fatal(err)
	}
	page := md.String()
	if addr := strings.TrimPrefix(tr.Header.Target, "qemu gdbstub at "); strings.Contains(page, addr) {
		t.Errorf("the page leaks the gdbstub address %s", addr)
	}
	// At sysretq RCX holds the user RIP, 0x400013 in this trace (the
	// address after user_syscall_insn, a two-byte syscall at 0x400011).
	for _, want := range []string{"*On screen at this step, registers pane:* `rcx` = 0x400013", "*On screen at this step, system pane:* CPL 0",
		"&lt;entry_SYSCALL_64&gt;"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	for _, line := range strings.Split(page, "\n") {
		if strings.HasPrefix(line, "| ") && strings.Contains(strings.ReplaceAll(line, "`", "\x00"), "<entry_") {
			// Outside code spans a <name> is raw HTML.
			if cells := strings.Split(line, " | "); len(cells) > 4 && strings.Contains(cells[4], "<entry_") {
				t.Errorf("unescaped symbol in an effects cell: %s", line)
				break
			}
		}
	}
}

// TestMatchStringArticle checks the article before each event a lesson may
// name: "an" before a vowel sound (an interrupt, an iret), "a" otherwise.
func TestMatchStringArticle(t *testing.T) {
	for _, ev := range knownEvents {
		got := Match{Event: ev}.String()
		art := "a "
		if strings.ContainsRune("aeio", rune(string(ev)[0])) {
			art = "an "
		}
		if want := art + string(ev) + " event"; !strings.Contains(got, want) {
			t.Errorf("Match{Event: %s}.String() = %q, want it to say %q", ev, got, want)
		}
	}
	if got := (Match{Event: annotate.EventInterrupt}).String(); !strings.Contains(got, "an interrupt event") {
		t.Errorf("Match{Event: interrupt}.String() = %q", got)
	}
}

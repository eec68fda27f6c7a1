package trace

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/x86"
)

// The trace in testdata was recorded from the teaching kernel with
// `sctrace run --trace -m int80 --format json --out trace/testdata/int80.json`.
func readTestTrace(t testing.TB) *Trace {
	t.Helper()
	tr, err := ReadFile("testdata/int80.json")
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func TestReadRecorded(t *testing.T) {
	tr := readTestTrace(t)
	if tr.Header.Mechanism != "int80" || tr.Len() < 20 || tr.Final == nil {
		t.Fatalf("header %+v, %d steps, final %v", tr.Header, tr.Len(), tr.Final)
	}
	first := tr.Step(0)
	if first.Symbol != "user_int80_insn" || first.ATT != "int $0x80" || first.CPL != 3 {
		t.Errorf("step 0 = %s %q CPL %d", first.Symbol, first.ATT, first.CPL)
	}
	if tr.After(0).CPL() != 0 || tr.After(tr.Len()-1) != tr.Final {
		t.Error("After does not follow the steps to the final state")
	}
	if tr.Header.Sys == nil || tr.Header.Sys.TR().Selector != 0x40 {
		t.Errorf("system registers not kept: %+v", tr.Header.Sys)
	}
}

func TestWriteReadRoundTrip(t *testing.T) {
	tr := readTestTrace(t)
	var a bytes.Buffer
	if err := tr.Write(&a); err != nil {
		t.Fatal(err)
	}
	back, err := Read(bytes.NewReader(a.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := back.Write(&b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("write → read → write changed the trace")
	}
}

func TestReadErrors(t *testing.T) {
	good, err := os.ReadFile("testdata/int80.json")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, in, want string
		notTrace       bool
	}{
		{"empty", "", "empty or cut short", true},
		{"truncated", string(good[:len(good)/2]), "cut short", true},
		{"not JSON", "hello", "syntax error", true},
		{"foreign JSON", `{"name":"x"}`, `format is ""`, true},
		{"newer version", strings.Replace(string(good), `"version": 1`, `"version": 99`, 1), "trace version 99", false},
		{"bad index", strings.Replace(string(good), `"i": 1,`, `"i": 7,`, 1), "step 1 has index 7", false},
		{"bad register", strings.Replace(string(good), `"rax"`, `"xmm9"`, 1), "unknown register", true},
		{"bad hex", strings.Replace(string(good), `"rip": "0x`, `"rip": "zz`, 1), "not a 0x-prefixed", true},
		{"bad bytes", strings.Replace(string(good), `"bytes": "cd80"`, `"bytes": "c"`, 1), "bytes", true},
		{"no bytes", strings.Replace(string(good), `"bytes": "cd80"`, `"bytes": ""`, 1), "0 instruction bytes", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Read(strings.NewReader(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Read = %v, want error containing %q", err, tt.want)
			}
			if tt.notTrace != errors.Is(err, ErrNotTrace) {
				t.Errorf("errors.Is(err, ErrNotTrace) = %v, want %v (%v)", !tt.notTrace, tt.notTrace, err)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	sum := Summarize(readTestTrace(t))
	if sum.SwapGS != 2 || sum.CR3Writes != 2 || len(sum.Findings) != 0 {
		t.Errorf("summary %+v", sum)
	}
	want := "user stack,entry stack,kernel stack,entry stack,user stack"
	if got := strings.Join(sum.Stacks, ","); got != want {
		t.Errorf("stacks %s, want %s", got, want)
	}
	if sum.Kernel != sum.Instructions-1 {
		t.Errorf("%d of %d instructions in the kernel, want all but the int", sum.Kernel, sum.Instructions)
	}
}

func TestSummarizeFinding(t *testing.T) {
	tr := readTestTrace(t)
	tr = edit(tr, 3, func(s *Step) {
		s.Effects = append(s.Effects, annotate.Effect{Kind: annotate.KindCheck, Text: "made up", Verdict: annotate.Finding})
	})
	sum := Summarize(tr)
	if len(sum.Findings) != 1 || !strings.Contains(sum.Findings[0], "step 3") {
		t.Errorf("findings %v", sum.Findings)
	}
	var out bytes.Buffer
	if err := WriteText(&out, tr, ATT); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), " !! check") || !strings.Contains(out.String(), "findings: 1") {
		t.Error("text output does not flag the finding")
	}
}

func TestWriteText(t *testing.T) {
	tr := readTestTrace(t)
	for _, syn := range []Syntax{ATT, Intel} {
		var out bytes.Buffer
		if err := WriteText(&out, tr, syn); err != nil {
			t.Fatal(err)
		}
		s := out.String()
		for _, want := range []string{"mechanism int80", "user_int80_insn", "entry_INT80", "swapgs", "iretq", "Summary", "findings: none"} {
			if !strings.Contains(s, want) {
				t.Errorf("syntax %d: output lacks %q", syn, want)
			}
		}
		for i, line := range strings.Split(s, "\n") {
			if n := len([]rune(line)); n > 100 {
				t.Errorf("line %d is %d columns: %q", i+1, n, line)
			}
		}
	}
}

func TestWriteMarkdown(t *testing.T) {
	var out bytes.Buffer
	if err := WriteMarkdown(&out, readTestTrace(t), Intel); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{"# sctrace: int80 round trip", "| # | CPL |", "`int 0x80`", "## Summary"} {
		if !strings.Contains(s, want) {
			t.Errorf("markdown lacks %q", want)
		}
	}
}

func TestDisasm(t *testing.T) {
	tests := []struct {
		code       []byte
		att, intel string
	}{
		{[]byte{0x48, 0x0f, 0x07}, "sysretq", "sysretq"},
		{[]byte{0x0f, 0x07}, "sysretl", "sysret"},
		{[]byte{0x48, 0x0f, 0x35}, "sysexitq", "sysexitq"},
		{[]byte{0x48, 0xcb}, "lretq", "retfq"},
		{[]byte{0x48, 0xcf}, "iretq", "iretq"},
		{[]byte{0x0f, 0x01, 0xf8}, "swapgs", "swapgs"},
		{[]byte{0x0f, 0x01, 0xca}, "clac", "clac"},
		{[]byte{0xcd, 0x80}, "int $0x80", "int 0x80"},
	}
	for _, tt := range tests {
		inst, _, err := annotate.Decode(tt.code)
		if err != nil {
			t.Errorf("% x: %v", tt.code, err)
			continue
		}
		if got := Disasm(inst, tt.code, 0, nil, ATT); got != tt.att {
			t.Errorf("% x AT&T = %q, want %q", tt.code, got, tt.att)
		}
		if got := Disasm(inst, tt.code, 0, nil, Intel); got != tt.intel {
			t.Errorf("% x Intel = %q, want %q", tt.code, got, tt.intel)
		}
	}
}

// TestReadDerivesOp reads a version 1 file written before steps had a
// mnemonic: Read decodes the operation and the canonical mnemonic from
// each step's bytes.
func TestReadDerivesOp(t *testing.T) {
	raw, err := os.ReadFile("testdata/int80.json")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(`"mnemonic"`)) {
		t.Fatal("testdata/int80.json has mnemonics: it no longer tests a file without them")
	}
	tr := readTestTrace(t)
	want := map[string]x86asm.Op{"int": x86asm.INT, "swapgs": x86asm.SWAPGS, "iretq": x86asm.IRETQ}
	seen := map[string]bool{}
	for _, s := range tr.All() {
		if s.Mnemonic == "" {
			t.Errorf("step %d (%s): no mnemonic", s.Index, s.ATT)
			continue
		}
		inst, _, err := annotate.Decode(s.Bytes)
		if err != nil {
			t.Fatalf("step %d: %v", s.Index, err)
		}
		if s.Op != inst.Op {
			t.Errorf("step %d (%s): Op %v, want %v", s.Index, s.ATT, s.Op, inst.Op)
		}
		if op, ok := want[s.Mnemonic]; ok {
			seen[s.Mnemonic] = true
			if s.Op != op {
				t.Errorf("step %d: %s has Op %v, want %v", s.Index, s.Mnemonic, s.Op, op)
			}
		}
	}
	for m := range want {
		if !seen[m] {
			t.Errorf("no %s step in the int80 trace", m)
		}
	}
	if first := tr.Step(0); first.Mnemonic != "int" || first.Op != x86asm.INT {
		t.Errorf("step 0 = %q, Op %v; want int, INT", first.Mnemonic, first.Op)
	}
}

// TestReadKeepsMnemonic: a file that has a mnemonic keeps it (escaped, as
// every string read), and the operation still comes from the bytes.
func TestReadKeepsMnemonic(t *testing.T) {
	tr := readTestTrace(t)
	s0 := *tr.Step(0)
	s0.Mnemonic, s0.Op = "int\x1b", 0
	tr = withSteps(tr, []Step{s0})
	var buf bytes.Buffer
	if err := tr.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(buf.Bytes(), []byte(`"mnemonic": "int\u001b"`)) {
		t.Fatal("the mnemonic was not written")
	}
	back, err := Read(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if s := back.Step(0); s.Mnemonic != `int\x1b` || s.Op != x86asm.INT {
		t.Errorf("read back %q, Op %v; want the stored mnemonic, escaped, and INT", s.Mnemonic, s.Op)
	}
}

func TestBackInUser(t *testing.T) {
	at := func(cs, rip uint64) *x86.State {
		s := &x86.State{}
		s.Set(x86.CS, cs)
		s.Set(x86.RIP, rip)
		return s
	}
	syscall := &Step{Index: 0, CPL: 3, RIP: 0x400011, Bytes: Bytes{0x0f, 0x05}}
	tests := []struct {
		name  string
		steps []*Step
		nows  []*x86.State
		want  []StopReason
	}{
		{"syscall round trip", []*Step{syscall, {Index: 1, CPL: 0}, {Index: 2, CPL: 0}},
			[]*x86.State{at(0x10, 0xffffffff80202000), at(0x10, 0xffffffff80202003), at(0x33, 0x400013)},
			[]StopReason{"", "", StopUser}},
		{"vdso data read", []*Step{{Index: 0, CPL: 3, RIP: 0x400031, Bytes: make(Bytes, 7)}},
			[]*x86.State{at(0x33, 0x400038)},
			[]StopReason{StopOnce}},
		{"call into the vdso", []*Step{{Index: 0, CPL: 3, RIP: 0x401000, Bytes: make(Bytes, 5)}, {Index: 1, CPL: 3}, {Index: 2, CPL: 3}},
			[]*x86.State{at(0x33, 0x7fff0000), at(0x33, 0x7fff0004), at(0x33, 0x401005)},
			[]StopReason{"", "", StopOnce}},
	}
	for _, tt := range tests {
		until := BackInUser()
		for i, s := range tt.steps {
			if got := until(s, tt.nows[i]); got != tt.want[i] {
				t.Errorf("%s: after step %d: %q, want %q", tt.name, i, got, tt.want[i])
			}
		}
	}
}

func TestReadFile(t *testing.T) {
	if _, err := ReadFile("testdata/none.json"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ReadFile of a missing file = %v", err)
	}
	bad := t.TempDir() + "/bad.json"
	if err := os.WriteFile(bad, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(bad); !errors.Is(err, ErrNotTrace) || !strings.Contains(err.Error(), bad) {
		t.Errorf("ReadFile of a foreign file = %v, want ErrNotTrace naming the file", err)
	}
}

// TestWriteTextMSRColumn checks that the summary's MSR values start in one
// column whatever the length of the names, the longest included
// (IA32_KERNEL_GS_BASE is 19 characters).
func TestWriteTextMSRColumn(t *testing.T) {
	tr := readTestTrace(t)
	tr.Header.MSRs = []annotate.MSR{
		{Index: 0xc0000082, Name: "IA32_LSTAR", Value: 0xffffffff81000000, Known: ^uint64(0), Source: annotate.SourceRead},
		{Index: 0xc0000102, Name: "IA32_KERNEL_GS_BASE", Value: 0x7f0000, Known: ^uint64(0), Source: annotate.SourceInferred},
		{Index: 0x175, Name: "IA32_SYSENTER_ESP", Value: 0xfffffe0000001000, Known: ^uint64(0), Source: annotate.SourceProbed},
		{Index: 0x10, Name: "TSC", Value: 1, Known: ^uint64(0), Source: annotate.SourceRead},
	}
	var out bytes.Buffer
	if err := WriteText(&out, tr, ATT); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out.String(), "\n")
	start := -1
	for i, l := range lines {
		if strings.TrimSpace(l) == "MSRs learnt:" {
			start = i + 1
		}
	}
	if start < 0 || start+len(tr.Header.MSRs) > len(lines) {
		t.Fatalf("no MSR summary in:\n%s", out.String())
	}
	col := -1
	for i, m := range tr.Header.MSRs {
		l := lines[start+i]
		name := strings.Index(l, m.Name)
		val := strings.Index(l, m.ValueString())
		if name < 0 || val < 0 {
			t.Fatalf("line %q lacks %s or its value %s", l, m.Name, m.ValueString())
		}
		if val <= name+len(m.Name) {
			t.Errorf("line %q: the value does not follow the name", l)
		}
		if col < 0 {
			col = val
		} else if val != col {
			t.Errorf("line %q: value at column %d, the first line's at %d", l, val, col)
		}
	}
}

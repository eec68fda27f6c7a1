package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sctrace/sctrace/diff"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/trace"
)

// TestDiffUsage checks diff's refusals that need no trace.
func TestDiffUsage(t *testing.T) {
	a := filepath.Join("..", "..", "trace", "testdata", "int80.json")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"diff"}, "diff needs two trace files, or --linux, --a-append or --b-append"},
		{[]string{"diff", a}, "diff takes two trace files, A and B; got 1"},
		{[]string{"diff", a, a, a}, "got 3"},
		{[]string{"diff", a, a, "--linux", "k"}, "diff takes two trace files or records both round trips (--linux), not both"},
		{[]string{"diff", a, a, "--format", "html"}, `unknown format "html"`},
		{[]string{"diff", a, a, "--syntax", "nasm"}, `unknown syntax "nasm"`},
		{[]string{"diff", "--linux", "a", "--linux", "b", "--linux", "c"}, "--linux given 3 times"},
		{[]string{"diff", "--b-append", "x", "-m", "sysret"}, `unknown mechanism "sysret"`},
		{[]string{"diff", "--b-append", "x", "--budget", "0"}, "--budget must be positive"},
		{[]string{"diff", "--b-append", "x", "--syscall", "read"}, "--syscall goes with --linux"},
		{[]string{"diff", "--linux", "k", "--syscall", "nosuch"}, `unknown system call "nosuch"`},
		{[]string{"diff", filepath.Join(t.TempDir(), "none.json"), a}, "A: "},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, err := run(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("sctrace %v: err = %v, want %q", tt.args, err, tt.want)
			}
		})
	}
}

// TestDiffFiles records a syscall and an int $0x80 round trip of the
// teaching kernel and diffs saved traces the ways a user would, good and
// bad.
func TestDiffFiles(t *testing.T) {
	testenv.NeedQEMU(t)
	dir := t.TempDir()
	sys, i80 := filepath.Join(dir, "syscall.json"), filepath.Join(dir, "int80.json")
	for _, r := range []struct{ m, out string }{{"syscall", sys}, {"int80", i80}} {
		if _, err := run(t, "run", "--trace", "--accel", "tcg", "-m", r.m, "--format", "json", "--out", r.out); err != nil {
			t.Fatal(err)
		}
	}
	ts, err := trace.ReadFile(sys)
	if err != nil {
		t.Fatal(err)
	}
	ti, err := trace.ReadFile(i80)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("itself", func(t *testing.T) {
		out, err := run(t, "diff", sys, sys)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "the two paths are the same instruction for instruction") || !strings.Contains(out, "events in one trace only: none") {
			t.Errorf("a trace against itself:\n%s", out)
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "~") || strings.HasPrefix(l, "-") || strings.HasPrefix(l, "+") {
				t.Errorf("a trace against itself has %q", l)
			}
		}
	})
	t.Run("different mechanisms", func(t *testing.T) {
		out, err := run(t, "diff", sys, i80)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "warning: A traces syscall, B traces int80") {
			t.Errorf("no warning about the mechanisms:\n%s", out)
		}
		for i, l := range strings.Split(out, "\n") {
			if n := utf8.RuneCountInString(l); n > diff.Width {
				t.Errorf("line %d has %d columns: %q", i+1, n, l)
			}
		}
		expanded, err := run(t, "diff", sys, i80, "--expand")
		if err != nil {
			t.Fatal(err)
		}
		// Expanded, every step is on a line of its own (a changed pair
		// on two).
		count := func(s, op string) int { return len(regexp.MustCompile(`(?m)^\`+op+` `).FindAllString(s, -1)) }
		if got := count(expanded, "=") + count(expanded, "~") + count(expanded, "-") + count(expanded, "+"); got < max(ts.Len(), ti.Len()) {
			t.Errorf("--expand lists %d pairs for traces of %d and %d steps", got, ts.Len(), ti.Len())
		}
		if count(out, "-")+count(out, "+") >= count(expanded, "-")+count(expanded, "+") {
			t.Errorf("runs are not collapsed without --expand")
		}
	})
	t.Run("json", func(t *testing.T) {
		out, err := run(t, "diff", sys, i80, "--format", "json")
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Format    string `json:"format"`
			MatchedBy string `json:"matched_by"`
			Alignment []struct {
				Op   string `json:"op"`
				A, B *int
				N    int `json:"n"`
			} `json:"alignment"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatal(err)
		}
		na, nb := 0, 0
		for _, r := range got.Alignment {
			if r.A != nil {
				if *r.A != na {
					t.Fatalf("run %+v: A's step %d expected", r, na)
				}
				na += r.N
			}
			if r.B != nil {
				if *r.B != nb {
					t.Fatalf("run %+v: B's step %d expected", r, nb)
				}
				nb += r.N
			}
		}
		if got.Format != diff.JSONFormat || got.MatchedBy != "function+instruction" || na != ts.Len() || nb != ti.Len() {
			t.Errorf("format %q, matched by %q, runs cover %d and %d steps of %d and %d", got.Format, got.MatchedBy, na, nb, ts.Len(), ti.Len())
		}
	})
	t.Run("markdown", func(t *testing.T) {
		out, err := run(t, "diff", sys, i80, "--format", "markdown")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(out, "# sctrace diff\n") || !strings.Contains(out, "| A | "+sys) || !strings.Contains(out, "## Alignment") {
			t.Errorf("markdown:\n%s", out)
		}
	})
	t.Run("not a trace", func(t *testing.T) {
		other := filepath.Join(dir, "notes.txt")
		if err := os.WriteFile(other, []byte("hello\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := run(t, "diff", sys, other)
		if err == nil || !strings.Contains(err.Error(), "B: "+other+": not an sctrace trace file") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("truncated", func(t *testing.T) {
		b, err := os.ReadFile(i80)
		if err != nil {
			t.Fatal(err)
		}
		cut := filepath.Join(dir, "cut.json")
		if err := os.WriteFile(cut, b[:len(b)/2], 0o600); err != nil {
			t.Fatal(err)
		}
		_, err = run(t, "diff", cut, sys)
		if err == nil || !strings.Contains(err.Error(), "A: "+cut+": not an sctrace trace file: the file is empty or cut short") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("no symbols", func(t *testing.T) {
		var paths []string
		for _, tr := range []*trace.Trace{ts, ti} {
			c := &trace.Trace{Header: tr.Header}
			for i := range tr.Len() {
				s := *tr.Step(i)
				s.Symbol = ""
				c.Append(s)
			}
			p := filepath.Join(dir, "nosym-"+tr.Header.Mechanism+".json")
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.WriteJSON(f); err != nil {
				t.Fatal(err)
			}
			f.Close()
			paths = append(paths, p)
		}
		out, err := run(t, "diff", paths[0], paths[0])
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "no symbols in A and B: steps are matched by the instruction alone") ||
			!strings.Contains(out, "the two paths are the same instruction for instruction") {
			t.Errorf("no symbols:\n%s", out)
		}
		out, err = run(t, "diff", sys, paths[1], "--format", "json")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, `"matched_by": "instruction"`) || !strings.Contains(out, "no symbols in B") {
			t.Errorf("symbols in A only:\n%s", out)
		}
	})
	t.Run("view --diff", func(t *testing.T) {
		// Not on a terminal: the diff is printed, as diff prints it.
		out, err := run(t, "view", sys, "--diff", i80)
		if err != nil {
			t.Fatal(err)
		}
		want, err := run(t, "diff", sys, i80)
		if err != nil {
			t.Fatal(err)
		}
		if out != want {
			t.Errorf("view --diff prints\n%s\ndiff prints\n%s", out, want)
		}
		if _, err := run(t, "view", sys, "--diff", filepath.Join(dir, "none.json")); err == nil || !strings.Contains(err.Error(), "--diff: ") {
			t.Errorf("view --diff of a missing file: %v", err)
		}
	})
	t.Run("out", func(t *testing.T) {
		p := filepath.Join(dir, "d.md")
		if _, err := run(t, "diff", sys, i80, "-f", "md", "-o", p); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(p); err != nil || !strings.HasPrefix(string(b), "# sctrace diff") {
			t.Errorf("--out: %v, %.40q", err, b)
		}
	})
}

// TestDiffRecords records both round trips itself: the teaching kernel's
// int $0x80 path, with the int80-noswapgs bug on B's side, saving both.
func TestDiffRecords(t *testing.T) {
	testenv.NeedQEMU(t)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.json"), filepath.Join(dir, "b.json")
	out, err := run(t, "diff", "-m", "int80", "--accel", "tcg", "--b-append", "bug=int80-noswapgs", "--a-out", a, "--b-out", b, "--format", "json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	// Standard error (the progress lines) shares the buffer: the JSON
	// starts at its "{".
	var got struct {
		B struct {
			Name string `json:"name"`
		} `json:"b"`
		Total struct {
			Changed, Removed, Added int
		} `json:"total"`
		Events []diff.Event `json:"events"`
	}
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &got); err != nil {
		t.Fatal(err)
	}
	if got.B.Name != "teaching kernel + bug=int80-noswapgs" || got.Total.Changed != 1 || got.Total.Removed+got.Total.Added != 0 || len(got.Events) != 2 {
		t.Errorf("B %q, total %+v, events %+v", got.B.Name, got.Total, got.Events)
	}
	for _, p := range []string{a, b} {
		tr, err := trace.ReadFile(p)
		if err != nil || tr.Len() == 0 {
			t.Errorf("saved %s: %v", p, err)
		}
	}
}

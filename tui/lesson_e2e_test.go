package tui

import (
	"encoding/json"
	"fmt"
	"github.com/sctrace/sctrace/internal/testenv"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/walkthrough"
)

var reLessonPos = regexp.MustCompile(`— (\d+) of (\d+):`)

// wrongAnswer returns an answer to q that the state on screen refutes.
func wrongAnswer(q *walkthrough.Question) string {
	switch q.Kind {
	case walkthrough.AskCR3, walkthrough.AskGS:
		if q.Answer == "user" {
			return "kernel"
		}
		return "user"
	case walkthrough.AskStack:
		if q.Answer == "user" {
			return "kernel"
		}
		return "user"
	case walkthrough.AskCPL:
		return "2"
	}
	return "r15"
}

// TestLessonsEndToEnd runs `sctrace learn N` for every lesson in tmux at
// 160x48 against the real QEMU (and Linux for lesson 4), and drives each
// to its last paragraph with the keys a student presses: space to go on,
// a to answer. Each lesson's first question is answered wrongly first, and
// the explanation from the live registers must appear; then every
// question is answered rightly. At the end the lesson must be recorded as
// done in the progress file, and QEMU gone after q.
func TestLessonsEndToEnd(t *testing.T) {
	exe := sctraceBinary(t)
	lessons, err := walkthrough.All(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lessons {
		t.Run(l.Name(), func(t *testing.T) {
			args := ""
			if l.Target == walkthrough.TargetLinux {
				args = " --kernel " + testenv.LinuxKernel(t, "6.1")
			}
			if l.Bench {
				args += " --iters 100"
			}
			lessonEndToEnd(t, exe, l, args)
		})
	}
}

func lessonEndToEnd(t *testing.T, exe string, l *walkthrough.Lesson, args string) {
	s := &tmuxScreen{t: t, name: fmt.Sprintf("sctrace-learn-%d-%d", os.Getpid(), l.Number)}
	state := t.TempDir()
	port := t.TempDir() // sctrace's TMPDIR: QEMU's gdbstub socket is in it
	s.tmux("new-session", "-d", "-s", s.name, "-x", "160", "-y", "48", "-c", t.TempDir(),
		fmt.Sprintf("TMPDIR=%s XDG_STATE_HOME=%s %s learn %d%s; echo sctrace-exited-$?; sleep 60", port, state, exe, l.Number, args))
	t.Cleanup(func() { exec.Command("tmux", "-L", s.name, "kill-server").Run() })

	n := len(l.Steps)
	scr := s.waitText(120*time.Second, fmt.Sprintf("Lesson %d: ", l.Number), "live")
	if !qemuRunning(port) {
		t.Fatalf("no QEMU with its gdbstub socket under %s", port)
	}
	pos := func(scr string) int {
		m := reLessonPos.FindStringSubmatch(scr)
		if m == nil {
			return 0
		}
		var k int
		fmt.Sscan(m[1], &k)
		return k
	}
	triedWrong := false
	for k := pos(scr); ; {
		if k > 0 {
			st := &l.Steps[k-1]
			if q := st.Question; q != nil {
				if !triedWrong {
					triedWrong = true
					s.keys("a")
					s.wait("the answer prompt", 5*time.Second, promptOpen("answer:"))
					s.keys(wrongAnswer(q), "Enter")
					s.waitText(5*time.Second, "✗ not", "not quite")
				}
				s.keys("a")
				s.wait("the answer prompt", 5*time.Second, promptOpen("answer:"))
				s.keys(q.Answer, "Enter")
				s.waitText(5*time.Second, "✓ right", "right: space goes on")
			}
			if k == n {
				break
			}
		}
		s.keys("Space")
		want := k + 1
		scr = s.wait(fmt.Sprintf("paragraph %d of %d (%s)", want, n, l.Steps[want-1].ID), 60*time.Second, func(scr string) bool {
			return pos(scr) == want && !strings.Contains(scr, "running to")
		})
		if l.Number == 2 && l.Steps[want-1].ID == "stack" || l.Number == 5 && l.Steps[want-1].ID == "finding" {
			t.Logf("lesson %d at %q:\n%s", l.Number, l.Steps[want-1].ID, scr)
		}
		k = want
	}
	s.waitText(5*time.Second, "last paragraph")
	s.keys("Space")
	s.waitText(5*time.Second, fmt.Sprintf("lesson %d is done", l.Number))

	s.keys("q")
	s.waitText(15*time.Second, "sctrace-exited-0")
	deadline := time.Now().Add(5 * time.Second)
	for qemuRunning(port) {
		if time.Now().After(deadline) {
			t.Fatalf("QEMU with its gdbstub socket under %s still running after q", port)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, err := os.ReadFile(filepath.Join(state, "sctrace", "progress.json"))
	if err != nil {
		t.Fatalf("no progress file: %v", err)
	}
	var f struct {
		Lessons map[string]walkthrough.Progress `json:"lessons"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	p := f.Lessons[l.Name()]
	if !p.Done || p.Reached != n {
		t.Errorf("progress of %s: %+v, want done with %d paragraphs reached", l.Name(), p, n)
	}
}

// promptOpen accepts a screen whose bottom line is the prompt, with nothing
// typed yet.
func promptOpen(prompt string) func(string) bool {
	return func(scr string) bool {
		lines := strings.Split(strings.TrimRight(scr, "\n"), "\n")
		return strings.TrimSpace(lines[len(lines)-1]) == prompt
	}
}

package tui

import (
	"bytes"
	"fmt"
	"github.com/sctrace/sctrace/fixtures/kernel"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/symbols"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// tmuxScreen is a tmux session running the real sctrace binary.
type tmuxScreen struct {
	t    *testing.T
	name string
}

func (s *tmuxScreen) tmux(args ...string) string {
	s.t.Helper()
	// Each screen has a tmux server of its own (-L): when one test's
	// session ends its server exits, and a shared server could be exiting
	// just as the next test asks it for a session.
	out, err := exec.Command("tmux", append([]string{"-L", s.name}, args...)...).CombinedOutput()
	if err != nil {
		s.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (s *tmuxScreen) capture() string {
	s.t.Helper()
	return s.tmux("capture-pane", "-p", "-t", s.name)
}

func (s *tmuxScreen) keys(k ...string) {
	s.t.Helper()
	s.tmux(append([]string{"send-keys", "-t", s.name}, k...)...)
}

// wait polls the screen until ok accepts it, and returns it.
func (s *tmuxScreen) wait(what string, d time.Duration, ok func(string) bool) string {
	s.t.Helper()
	deadline := time.Now().Add(d)
	var scr string
	for time.Now().Before(deadline) {
		scr = s.capture()
		if ok(scr) {
			return scr
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("waiting for %s: not on the screen after %v:\n%s", what, d, scr)
	return ""
}

func (s *tmuxScreen) waitText(d time.Duration, texts ...string) string {
	s.t.Helper()
	return s.wait(strings.Join(texts, " and "), d, func(scr string) bool {
		for _, x := range texts {
			if !strings.Contains(scr, x) {
				return false
			}
		}
		return true
	})
}

var (
	reGS   = regexp.MustCompile(`gs  ([0-9a-f]{16}) kgs ([0-9a-f]{16})`)
	reCR3  = regexp.MustCompile(`cr3 ([0-9a-f]{16}) cs`)
	reStep = regexp.MustCompile(`step (\d+) of (\d+)`)
)

func field(t *testing.T, re *regexp.Regexp, scr string, i int) string {
	t.Helper()
	m := re.FindStringSubmatch(scr)
	if m == nil {
		t.Fatalf("%s not on the screen:\n%s", re, scr)
	}
	return m[i]
}

// qemuRunning reports whether a QEMU whose command line names tmp (the
// TMPDIR its sctrace ran with, which holds its gdbstub socket) is alive.
func qemuRunning(tmp string) bool {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		c := string(b)
		if strings.Contains(c, "qemu-system") && strings.Contains(c, tmp+"/") {
			return true
		}
	}
	return false
}

// sctraceBinary builds the real sctrace binary for a tmux test, after
// checking tmux and QEMU are there.
func sctraceBinary(t *testing.T) string {
	t.Helper()
	testenv.NeedTools(t, "tmux", "qemu-system-x86_64")
	exe := filepath.Join(t.TempDir(), "sctrace")
	if out, err := exec.Command("go", "build", "-o", exe, "../cmd/sctrace").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return exe
}

// TestEndToEnd runs `sctrace run` in tmux at 80x24 and 160x48 against the
// real QEMU, steps through the syscall path with the keys a user would
// press and checks the screen: CPL 0 after the syscall, the GS bases
// swapped by swapgs, CR3 switched both ways, CPL 3 at the end, and QEMU
// gone after q.
func TestEndToEnd(t *testing.T) {
	exe := sctraceBinary(t)
	for _, size := range [][2]int{{80, 24}, {160, 48}} {
		t.Run(fmt.Sprintf("%dx%d", size[0], size[1]), func(t *testing.T) {
			endToEnd(t, exe, size[0], size[1])
		})
	}
}

func endToEnd(t *testing.T, exe string, w, h int) {
	s := &tmuxScreen{t: t, name: fmt.Sprintf("sctrace-e2e-%d-%d", os.Getpid(), w)}
	dir := t.TempDir()
	port := t.TempDir() // sctrace's TMPDIR: QEMU's gdbstub socket is in it
	s.tmux("new-session", "-d", "-s", s.name, "-x", fmt.Sprint(w), "-y", fmt.Sprint(h), "-c", dir,
		"TMPDIR="+port+" "+exe+" run; echo sctrace-exited-$?; sleep 60")
	t.Cleanup(func() { exec.Command("tmux", "-L", s.name, "kill-server").Run() })

	scr := s.waitText(30*time.Second, "CPL 3 user", "step 0 of 0", "user_syscall_insn", "syscall")
	if !qemuRunning(port) {
		t.Fatalf("no QEMU with its gdbstub socket under %s", port)
	}
	userCR3 := field(t, reCR3, scr, 1)
	gs0, kgs0 := field(t, reGS, scr, 1), field(t, reGS, scr, 2)

	// syscall: CPL 0, GS bases not swapped yet.
	s.keys("s")
	scr = s.waitText(10*time.Second, "CPL 0 kernel", "step 1 of 1", "swapgs")
	if gs, kgs := field(t, reGS, scr, 1), field(t, reGS, scr, 2); gs != gs0 || kgs != kgs0 {
		t.Errorf("syscall changed the GS bases: gs %s kgs %s", gs, kgs)
	}
	// swapgs exchanges them.
	s.keys("s")
	scr = s.waitText(10*time.Second, "step 2 of 2", "swapgs:")
	if gs, kgs := field(t, reGS, scr, 1), field(t, reGS, scr, 2); gs != kgs0 || kgs != gs0 {
		t.Errorf("after swapgs: gs %s kgs %s, want %s %s", gs, kgs, kgs0, gs0)
	}
	// e runs to the next event: the CR3 switch to the kernel page tables.
	s.keys("e")
	scr = s.waitText(10*time.Second, "step 6 of 6", "cr3-write")
	kernCR3 := field(t, reCR3, scr, 1)
	if kernCR3 == userCR3 {
		t.Errorf("CR3 unchanged after the cr3-write: %s", kernCR3)
	}
	// e again: the stack switch.
	s.keys("e")
	scr = s.waitText(10*time.Second, "step 7 of 7", "stack-switch")
	if w >= 160 {
		// p reads the MSRs in the guest and puts everything back: the
		// system pane then shows LSTAR as probed, and stepping goes on.
		s.keys("p")
		tab, err := symbols.FromELF(bytes.NewReader(kernel.ELF))
		if err != nil {
			t.Fatal(err)
		}
		lstar, _ := tab.Addr("entry_SYSCALL_64") // what the kernel writes to LSTAR
		s.waitText(10*time.Second, "read 11 MSRs", fmt.Sprintf("LSTAR %#x probed", lstar))
	}
	if w >= 160 {
		s.keys("f") // a no-op at the end of the record: the screen stays put
		t.Logf("160x48 screen in entry_SYSCALL_64:\n%s", scr)
	}
	// Holding s: keys are coalesced, so the screen settles at once when
	// they stop.
	s.keys("s", "s", "s", "s", "s", "s", "s", "s", "s", "s")
	start := time.Now()
	prev := ""
	scr = s.wait("the screen to settle", 5*time.Second, func(scr string) bool {
		same := scr == prev && !strings.Contains(scr, "stepping…")
		prev = scr
		return same
	})
	if d := time.Since(start); d > time.Second {
		t.Errorf("the screen took %v to settle after the step keys", d)
	}
	n := field(t, reStep, scr, 1)
	// Time travel: b steps back without the guest, f returns.
	s.keys("b", "b")
	s.waitText(5*time.Second, fmt.Sprintf("step %s of %s", atoiMinus(n, 2), n))
	s.keys("f", "f")
	s.waitText(5*time.Second, fmt.Sprintf("step %s of %s", n, n))
	// r runs to the return to user mode: CPL 3 and the user CR3 again.
	s.keys("r")
	scr = s.waitText(20*time.Second, "CPL 3 user", "sysretq")
	if cr3 := field(t, reCR3, scr, 1); cr3 != userCR3 {
		t.Errorf("back in user mode with CR3 %s, want %s", cr3, userCR3)
	}
	if gs, kgs := field(t, reGS, scr, 1), field(t, reGS, scr, 2); gs != gs0 || kgs != kgs0 {
		t.Errorf("back in user mode: gs %s kgs %s, want %s %s", gs, kgs, gs0, kgs0)
	}
	// ? shows the help; any key closes it.
	s.keys("?")
	s.waitText(5*time.Second, "step into")
	s.keys("t")
	// q ends sctrace and QEMU.
	s.keys("q")
	s.waitText(10*time.Second, "sctrace-exited-0")
	deadline := time.Now().Add(5 * time.Second)
	for qemuRunning(port) {
		if time.Now().After(deadline) {
			t.Fatalf("QEMU with its gdbstub socket under %s still running after q", port)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func atoiMinus(s string, d int) string {
	var n int
	fmt.Sscan(s, &n)
	return fmt.Sprint(n - d)
}

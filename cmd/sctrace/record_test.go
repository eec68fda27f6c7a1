package main

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/fixtures/linuxinit"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/qemulog"
	"github.com/sctrace/sctrace/syscalls"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// TestRecordUsageErrors gives --record and --log-after values that make no
// sense: each is refused with a message naming the flag, before QEMU
// starts.
func TestRecordUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"run", "--trace", "--record", "fast"}, `unknown recorder "fast" (want step, log, auto)`},
		{[]string{"trace", "--attach", ":1", "--record", "LOG"}, `unknown recorder "LOG"`},
		{[]string{"run", "--trace", "--record", "step", "--log-after", "10"}, "--log-after hands a round trip over to the log recorder: it goes with --record auto or log, not step"},
		{[]string{"run", "linux", "--kernel", "x", "--trace", "--record", "step", "--log-after", "10"}, "it goes with --record auto or log"},
		{[]string{"run", "--trace", "--log-after", "-1"}, "--log-after must be 0 or more, not -1"},
		{[]string{"run", "--trace", "--record", "log", "--over", "1"}, "--record log records every instruction: --over needs --record step"},
		{[]string{"run", "--trace", "--record", "log", "-m", "pagefault"}, "mechanism pagefault enters by an exception or an interrupt, which the log recorder does not follow: use --record step"},
		{[]string{"run", "linux", "--kernel", "x", "--trace", "--record", "log", "-m", "int3"}, "mechanism int3 enters by an exception or an interrupt, which the log recorder does not follow: use --record step"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, err := run(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want %q\n%s", err, tt.want, out)
			}
		})
	}
}

// runLong executes sctrace in-process, as run does, with a deadline long
// enough for a Linux boot and a long recording on a loaded machine.
func runLong(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

// initELF returns the address of a symbol of the bundled Linux /init and
// its entry point.
func initELF(t *testing.T, name string) (sym, entry uint64) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(linuxinit.ELF))
	if err != nil {
		t.Fatal(err)
	}
	syms, _ := f.Symbols()
	for _, s := range syms {
		if s.Name == name {
			sym = s.Value
		}
	}
	if sym == 0 {
		t.Fatalf("no %s in /init's symbols", name)
	}
	return sym, f.Entry
}

// TestRunLinuxExecveLog records Linux 6.1's whole execve of /init by
// itself twice: with --record log from the first instruction, and with
// --record auto, which single-steps the first --log-after instructions and
// logs the rest. Each trace must start at /init's execve syscall
// instruction with RAX holding execve's number (the x86-64 ABI list), end
// with the kernel's return to user mode at the new image's entry point
// (the ELF's, since /init executes itself), and say which recorder made
// which steps. The stepped prefix of the auto trace must run the same
// instructions as the log trace's first steps, and the two whole traces
// must be about as long (where interrupts fall differs between boots, so
// not equal).
func TestRunLinuxExecveLog(t *testing.T) {
	kernel := testenv.LinuxKernel(t, "6.1")
	site, entry := initELF(t, linuxinit.ExecveInsn)
	execve, _ := syscalls.ABI().ByName("execve")
	const after = 500
	record := func(mode string, extra ...string) *trace.Trace {
		saved := filepath.Join(t.TempDir(), mode+".sctrace")
		args := append([]string{"run", "linux", "--kernel", kernel, "--accel", "tcg", "--init", "execve", "--trace",
			"--record", mode, "--format", "trace", "--out", saved}, extra...)
		out, err := runLong(t, args...)
		if err != nil {
			t.Fatalf("--record %s: %v\n%s", mode, err, out)
		}
		tr, err := trace.ReadFile(saved)
		if err != nil {
			t.Fatal(err)
		}
		if tr.Len() < 2 {
			t.Fatalf("--record %s: %d steps", mode, tr.Len())
		}
		first, last := tr.Step(0), tr.Step(tr.Len()-1)
		if uint64(first.RIP) != site || first.Op != x86asm.SYSCALL || first.CPL != 3 {
			t.Errorf("--record %s: step 0 is %s at %#x (CPL %d), want the syscall at %s (%#x)", mode, first.Mnemonic, uint64(first.RIP), first.CPL, linuxinit.ExecveInsn, site)
		}
		if got := first.Regs.Val(x86.RAX); got != uint64(execve.Nr) {
			t.Errorf("--record %s: RAX = %d at the syscall, want execve's %d", mode, got, execve.Nr)
		}
		if tr.Header.Stop != string(trace.StopUser) {
			t.Errorf("--record %s: stopped: %q, want %q", mode, tr.Header.Stop, trace.StopUser)
		}
		if last.CPL != 0 || (last.Op != x86asm.IRETQ && last.Op != x86asm.SYSRET) {
			t.Errorf("--record %s: last step %s at CPL %d, want the kernel's iretq or sysretq", mode, last.Mnemonic, last.CPL)
		}
		if fin := tr.Final; fin == nil || fin.CPL() != 3 || fin.Val(x86.RIP) != entry {
			t.Errorf("--record %s: final state %v, want CPL 3 at the new image's entry %#x", mode, fin, entry)
		}
		return tr
	}
	lt := record("log")
	if got := lt.Header.Recorders; len(got) != 1 || got[0].Recorder != trace.RecorderLog || got[0].From != 0 || got[0].To != lt.Len() {
		t.Errorf("--record log spans %+v, want one log span over all %d steps", got, lt.Len())
	}
	at := record("auto", "--log-after", "500")
	spans := at.Header.Recorders
	if len(spans) != 2 || spans[0] != (trace.RecorderSpan{From: 0, To: after, Recorder: trace.RecorderStep}) ||
		spans[1].Recorder != trace.RecorderLog || spans[1].From != after || spans[1].To != at.Len() {
		t.Errorf("--record auto spans %+v, want steps 0-%d stepped, the rest logged", spans, after-1)
	}
	for i := range min(after, lt.Len()) {
		if a, b := at.Step(i), lt.Step(i); a.RIP != b.RIP {
			t.Errorf("step %d: %s stepped (auto), %s logged: the stepped prefix differs", i, a.Where(), b.Where())
			break
		}
	}
	// Boots differ in where timer interrupts fall and in what the kernel
	// finds to do then (runs here measured 187k to 204k instructions).
	if d := float64(at.Len()-lt.Len()) / float64(lt.Len()); d > 0.2 || d < -0.2 {
		t.Errorf("the execve took %d steps with --record auto, %d with --record log: more than 20%% apart", at.Len(), lt.Len())
	}
	t.Logf("execve: %d steps logged, %d with auto (%d stepped)", lt.Len(), at.Len(), after)
}

// TestSignalMidLog sends SIGTERM to `sctrace run linux --record log` while
// the guest runs with QEMU's instruction log on: the steps converted so
// far must be saved, the monitor told to switch the log and
// single-instruction blocks off (in the wire log, after switching them
// on), QEMU ended and no temporary file (the log) left behind.
func TestSignalMidLog(t *testing.T) {
	kernel := testenv.LinuxKernel(t, "6.1")
	e := newFaultEnv(t)
	out := filepath.Join(e.work, "t.sctrace")
	wire := filepath.Join(e.work, "wire.log")
	cmd, _, stderr := e.command(nil, "run", "linux", "--kernel", kernel, "--init", "execve", "--trace", "--accel", "tcg",
		"--qemu", e.wrapper, "--record", "log", "--format", "trace", "--out", out, "--wire-log", wire, "--timeout", "30s")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	monitor := func(cmd string) string { return "-> qRcmd," + hex.EncodeToString([]byte(cmd)) + "\n" }
	on, off := monitor("log "+qemulog.Items), monitor("log none")
	deadline := time.Now().Add(3 * time.Minute)
	for {
		b, _ := os.ReadFile(wire)
		if bytes.Contains(b, []byte(on)) {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("the log was not switched on within 3 minutes\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // the guest runs logged: an execve logs for seconds
	cmd.Process.Signal(syscall.SIGTERM)
	err := exitWithin(t, cmd, time.Minute)
	if err == nil {
		t.Fatal("sctrace exited 0 after SIGTERM")
	}
	msg := stderr.String()
	if !strings.Contains(msg, "interrupted ("+signalCause[syscall.SIGTERM]+")") || !strings.Contains(msg, "steps recorded are written to "+out) {
		t.Errorf("message:\n%s", msg)
	}
	if strings.Contains(msg, context.Canceled.Error()) {
		t.Errorf("message names the internal cancellation:\n%s", msg)
	}
	b, _ := os.ReadFile(wire)
	lines := strings.SplitAfter(string(b), "\n")
	onAt := slices.IndexFunc(lines, func(l string) bool { return strings.HasSuffix(l, on) })
	offAt := slices.IndexFunc(lines, func(l string) bool { return strings.HasSuffix(l, off) })
	if offAt < onAt {
		t.Errorf("the wire log has no %q after %q", strings.TrimSpace(off), strings.TrimSpace(on))
	}
	oneOff := slices.ContainsFunc(lines[max(offAt, 0):], func(l string) bool {
		return strings.HasSuffix(l, monitor("singlestep off")) || strings.HasSuffix(l, monitor("one-insn-per-tb off"))
	})
	if !oneOff {
		t.Errorf("single-instruction blocks not switched off after the log")
	}
	tr, rerr := trace.ReadFile(out)
	if rerr != nil {
		t.Fatalf("saved trace: %v", rerr)
	}
	if tr.Len() == 0 || tr.Header.Stop != string(trace.StopCancel) {
		t.Errorf("saved trace: %d steps, stopped %q", tr.Len(), tr.Header.Stop)
	}
	e.checkNothingLeft()
}

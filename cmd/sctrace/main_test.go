package main

import (
	"bytes"
	"context"
	"fmt"
	"github.com/sctrace/sctrace/internal/testenv"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sctrace/sctrace/fixtures/kernel"
	"github.com/sctrace/sctrace/qemu"
	"github.com/sctrace/sctrace/symbols"
	"github.com/sctrace/sctrace/trace"
)

// run executes sctrace in-process with args and returns its output and
// error.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

func TestVersion(t *testing.T) {
	out, err := run(t, "version")
	if err != nil || !strings.HasPrefix(out, "sctrace "+version) {
		t.Fatalf("version = %q, %v", out, err)
	}
}

func TestCompletion(t *testing.T) {
	out, err := run(t, "completion", "bash")
	if err != nil || !strings.Contains(out, "__start_sctrace") {
		t.Fatalf("completion bash: %v, %d bytes", err, len(out))
	}
}

func TestUsageErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(bad, []byte(`{"format":"something-else"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "prog.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"trace"}, "--attach HOST:PORT is required"},
		{[]string{"trace", "--attach", ":1", "-m", "sysret"}, `unknown mechanism "sysret"`},
		{[]string{"trace", "--attach", ":1", "--format", "xml"}, `unknown format "xml"`},
		{[]string{"trace", "--attach", ":1", "--syntax", "nasm"}, `unknown syntax "nasm"`},
		{[]string{"trace", "--attach", ":1", "--budget", "0"}, "--budget must be positive"},
		{[]string{"view", filepath.Join(t.TempDir(), "none.json")}, "no such file"},
		{[]string{"view", bad}, `not an sctrace trace file: format is "something-else"`},
		{[]string{"learn", "1", "--export", filepath.Join(t.TempDir(), "l.pdf")}, "lessons are written as Markdown (.md) or HTML (.html), not .pdf"},
		{[]string{"trace", "--attach", "1234"}, "is a port alone: write :1234"},
		{[]string{"probe"}, "sctrace probe needs the stub's address (HOST:PORT, :PORT or unix:PATH)"},
		{[]string{"view", "a.json", "b.json"}, "sctrace view takes one argument, the trace file to view; got 2"},
		{[]string{"view", "a.json", "--follow", "--format", "text"}, "--follow opens the interactive view: it goes with neither --format nor --diff"},
		{[]string{"view", "a.json", "--follow"}, "--follow opens the interactive view, and standard output is not a terminal"},
		{[]string{"run", "--probe-msrs"}, "--probe-msrs goes with --trace"},
		{[]string{"run", "linux", "--kernel", "x", "--probe-msrs"}, "--probe-msrs goes with --trace"},
		{[]string{"run", "--trace", "--smp", "0"}, "--smp 0: a guest needs at least one vCPU"},
		{[]string{"run", "--smp", "-2"}, "--smp -2: a guest needs at least one vCPU"},
		{[]string{"run", "linux", "--kernel", "x", "--smp", "256"}, "--smp 256: QEMU's pc machine takes at most 255 vCPUs"},
		{[]string{"run", "--smp", "two"}, `invalid argument "two" for "--smp"`},
		{[]string{"run", "--user-cpu", "1"}, "--user-cpu 1 needs a second vCPU: add --smp 2"},
		{[]string{"run", "--smp", "4", "--user-cpu", "3"}, "--user-cpu 3: the teaching kernel runs its program on CPU 0 or CPU 1"},
		{[]string{"run", "--user-cpu", "all"}, `--user-cpu "all": want 0, 1 or both`},
		{[]string{"run", "--user-cpu", "both"}, "--user-cpu both needs a second vCPU: add --smp 2"},
		{[]string{"run", "--smp", "2", "--user-cpu", "both", "-m", "irq"}, "--user-cpu both with -m irq: the teaching kernel has one demand page and one timer, so it runs neither pagefault nor irq on both CPUs at once"},
		{[]string{"run", "--smp", "2", "--user-cpu", "both", "--on-cpu", "2"}, "--on-cpu 2: the guest's vCPUs are 0 to 1 (--smp 2)"},
		{[]string{"run", "--on-cpu", "-1"}, "--on-cpu -1: the guest has one vCPU, 0 (--smp gives it more)"},
		{[]string{"run", "linux", "--kernel", "x", "--smp", "2", "--on-cpu", "3"}, "--on-cpu 3: the guest's vCPUs are 0 to 1 (--smp 2)"},
		{[]string{"run", "linux", "--kernel", "x", "--init", "exe"}, `unknown /init mode "exe" (want syscall, int80, vdso, enosys, execve, fork, read, mmap, nanosleep, int3, gpfault, exec or all)`},
		{[]string{"run", "linux", "--kernel", "x", "--init", "exec"}, "--init exec runs the program --exec gives: give --exec PROGRAM instead"},
		{[]string{"run", "linux", "--kernel", "x", "--syscall", "getpidd"}, `unknown system call "getpidd": the x86-64 ABI list`},
		{[]string{"run", "linux", "--kernel", "x", "--syscall", "1000"}, "system call number 1000 is out of range: the x86-64 ABI list (Linux 6.19's syscall_64.tbl) has numbers 0 to 470"},
		{[]string{"run", "linux", "--kernel", "x", "--syscall", "-1"}, "system call number -1 is out of range"},
		{[]string{"run", "linux", "--kernel", "x", "--syscall", "mount"}, "no built-in /init loop makes mount: give --exec PROGRAM (a static program that makes it), or --init MODE"},
		{[]string{"run", "linux", "--kernel", "x", "--syscall", "read", "-m", "int80"}, "--syscall waits for the syscall instruction; mechanism int80 is not it"},
		{[]string{"run", "linux", "--kernel", "x", "--exec", "/nonexistent/prog"}, "--exec: open /nonexistent/prog: no such file or directory"},
		{[]string{"run", "linux", "--kernel", "x", "--exec", script}, "--exec " + script + `: not an ELF file (it starts with "#!/b"); sctrace runs static x86-64 or i386 ELF programs`},
		{[]string{"run", "linux", "--kernel", "x", "--", "one"}, `unexpected arguments ["one"]: only --exec's program takes arguments, after --`},
		{[]string{"trace", "--attach", ":1", "--syscall", "nosuch"}, `unknown system call "nosuch"`},
		{[]string{"trace", "--attach", ":1", "--syscall", "read", "-m", "int80"}, "--syscall waits for the syscall instruction; mechanism int80 is not it"},
		{[]string{"run", "linux", "--kernel", "x", "--init", "execve", "-m", "int80"}, "mechanism int80: /init in mode execve never uses it (it uses syscall)"},
		{[]string{"run", "linux", "--kernel", "x", "-m", "pagefault", "--init", "read"}, "mechanism pagefault: /init in mode read never uses it (it uses syscall)"},
		{[]string{"run", "linux", "--kernel", "x", "-m", "pagefault", "--syscall", "mmap"}, "--syscall waits for the syscall instruction; mechanism pagefault is not it"},
		{[]string{"run", "linux", "--kernel", "x", "-m", "sysenter"}, "mechanism sysenter: Linux takes sysenter only from 32-bit code"},
		{[]string{"run", "--trace", "-m", "int80-compat", "--record", "log"}, "--record log: mechanism int80-compat starts in 32-bit code, which QEMU's instruction log dumps in its 32-bit layout"},
		{[]string{"run", "--trace", "-m", "syscall-compat", "--log-after", "0"}, "--record auto: mechanism syscall-compat starts in 32-bit code"},
		{[]string{"run", "--trace", "-m", "sysenter-compat", "--cpu", "qemu64"}, "mechanism sysenter-compat with -cpu qemu64: an AMD CPU has no sysenter in long mode"},
		{[]string{"run", "linux", "--kernel", "x", "-m", "int80-compat"}, "mechanism int80-compat is the teaching kernel's 32-bit code; under Linux a 32-bit program is in compatibility mode itself: give --exec with a static i386 program and -m int80"},
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

func TestProbeDeadAddress(t *testing.T) {
	start := time.Now()
	_, err := run(t, "probe", "127.0.0.1:1", "--timeout", "2s")
	if err == nil || !strings.Contains(err.Error(), "attach 127.0.0.1:1") {
		t.Fatalf("probe of a closed port: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v to fail", d)
	}
}

// TestProbeQEMU probes a real QEMU stopped at the reset vector.
func TestProbeQEMU(t *testing.T) {
	testenv.NeedQEMU(t)
	inst, err := qemu.Start(context.Background(), qemu.Config{Accel: "tcg", GDB: true, Stopped: true})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Stop()
	wire := filepath.Join(t.TempDir(), "wire.log")
	out, err := run(t, "probe", inst.GDBAddr, "--wire-log", wire)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"PacketSize=1000",
		"qXfer:features:read=+",
		"Register layout:",
		"org.gnu.gdb.i386.core",
		"rip        0x000000000000fff0",
		"cs         0x000000000000f000",
		"k_gs_base",
		"efer",
		"monitor info registers:",
		"CR0=60000010",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("probe output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(out)
	}
	log, err := os.ReadFile(wire)
	if err != nil || !bytes.Contains(log, []byte("qSupported")) {
		t.Errorf("wire log has no qSupported exchange (%v)", err)
	}
}

// TestRunTrace runs the whole product path: boot the bundled kernel, record
// a syscall round trip and print it, then save and view it as JSON.
func TestRunTrace(t *testing.T) {
	testenv.NeedQEMU(t)
	out, err := run(t, "run", "--trace", "--accel", "tcg")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"user_syscall_insn", "entry_SYSCALL_64", "swapgs", "sysretq", "returned to user mode", "findings: none"} {
		if !strings.Contains(out, want) {
			t.Errorf("run --trace output lacks %q", want)
		}
	}
	saved := filepath.Join(t.TempDir(), "t.json")
	if _, err := run(t, "run", "--trace", "--accel", "tcg", "-m", "callgate", "--format", "json", "--out", saved); err != nil {
		t.Fatal(err)
	}
	view, err := run(t, "view", saved, "--format", "text", "--syntax", "intel")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(view, "mechanism callgate") || !strings.Contains(view, "retfq") {
		t.Errorf("view of the saved trace:\n%s", view)
	}
}

// TestRunCompat traces syscall from the teaching kernel's 32-bit code as
// the README shows: on an AMD vendor, chosen for it, into CSTAR's
// entry_SYSCALL_compat and back by sysretl, explained as an entry from
// compatibility mode, with no finding.
func TestRunCompat(t *testing.T) {
	testenv.NeedQEMU(t)
	out, err := run(t, "run", "--trace", "--accel", "tcg", "-m", "syscall-compat")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"cpu model: qemu64,vendor=AuthenticAMD", "user_syscall_compat_insn", "syscall from compatibility mode",
		"entry_SYSCALL_compat", "from CSTAR", "entry_SYSRETL_compat_insn", "sysretl", "returned to user mode", "findings: none"} {
		if !strings.Contains(out, want) {
			t.Errorf("run --trace -m syscall-compat output lacks %q:\n%s", want, out)
		}
	}
}

// TestRunSMP traces on the teaching kernel's second CPU, as the README
// shows, and checks that the saved trace and its printed header name the
// vCPU followed (1 of 2), its kernel GS base (percpu_cpu1 of the bundled
// ELF) and the other vCPU, halted in the kernel with its own area (percpu).
func TestRunSMP(t *testing.T) {
	testenv.NeedQEMU(t)
	saved := filepath.Join(t.TempDir(), "t.json")
	if _, err := run(t, "run", "--trace", "--accel", "tcg", "--smp", "2", "--user-cpu", "1", "--format", "json", "--out", saved); err != nil {
		t.Fatal(err)
	}
	tr, err := trace.ReadFile(saved)
	if err != nil {
		t.Fatal(err)
	}
	tab, err := symbols.FromELF(bytes.NewReader(kernel.ELF))
	if err != nil {
		t.Fatal(err)
	}
	area, ok := tab.Addr("percpu_cpu1")
	cpu0, ok0 := tab.Addr("percpu")
	if !ok || !ok0 {
		t.Fatal("no percpu or percpu_cpu1 in the bundled kernel")
	}
	h := tr.Header
	if h.CPU == nil || h.CPU.Index != 1 || h.CPU.Count != 2 || uint64(h.CPU.GSBase) != area {
		t.Fatalf("header follows %+v; want vCPU 1 of 2 with GS base %#x", h.CPU, area)
	}
	if len(h.OtherCPUs) != 1 || h.OtherCPUs[0].Index != 0 {
		t.Fatalf("other vCPUs %+v; want vCPU 0", h.OtherCPUs)
	}
	view, err := run(t, "view", saved, "--format", "text")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		fmt.Sprintf("followed: vCPU 1 of 2 (gdbstub thread %s, kernel GS base %#x)", h.CPU.Thread, area),
		fmt.Sprintf("vCPU 0 (thread %s): stopped in the kernel at %s, kernel GS base %#x, and held there from the first step to the last", h.OtherCPUs[0].Thread, h.OtherCPUs[0].Start, cpu0),
	} {
		if !strings.Contains(view, want) {
			t.Errorf("view of the saved trace lacks %q:\n%s", want, view)
		}
	}
}

// TestRunBothCPUs runs the README's command that traces a call on CPU 1
// while CPU 0 runs the same program: the header must follow vCPU 1 with
// its per-CPU area (percpu_cpu1) and say where vCPU 0 was, with its own
// area (percpu), held there to the end.
func TestRunBothCPUs(t *testing.T) {
	testenv.NeedQEMU(t)
	saved := filepath.Join(t.TempDir(), "t.json")
	if _, err := run(t, "run", "--trace", "--accel", "tcg", "--smp", "2", "--user-cpu", "both", "--on-cpu", "1", "--format", "json", "--out", saved); err != nil {
		t.Fatal(err)
	}
	tr, err := trace.ReadFile(saved)
	if err != nil {
		t.Fatal(err)
	}
	tab, err := symbols.FromELF(bytes.NewReader(kernel.ELF))
	if err != nil {
		t.Fatal(err)
	}
	mine, ok1 := tab.Addr("percpu_cpu1")
	other, ok2 := tab.Addr("percpu")
	if !ok1 || !ok2 {
		t.Fatal("no percpu or percpu_cpu1 in the bundled kernel")
	}
	h := tr.Header
	if h.CPU == nil || h.CPU.Index != 1 || uint64(h.CPU.GSBase) != mine {
		t.Fatalf("header follows %+v; want vCPU 1 with GS base %#x", h.CPU, mine)
	}
	if len(h.OtherCPUs) != 1 || h.OtherCPUs[0].Index != 0 || uint64(h.OtherCPUs[0].Start.GSBase) != other || h.OtherCPUs[0].Moved() {
		t.Fatalf("other vCPUs %+v; want vCPU 0 with GS base %#x, held", h.OtherCPUs, other)
	}
	view, err := run(t, "view", saved, "--format", "text")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("kernel GS base %#x, and held there from the first step to the last", other)
	if !strings.Contains(view, want) {
		t.Errorf("view of the saved trace lacks %q:\n%s", want, view)
	}
}

// TestRunAccel runs the README's commands with the accelerator left to its
// default, which must trace under TCG whatever the host's KVM can do, and
// with --accel kvm, which must either trace under KVM with the step flags
// the stub offers there, or, on a host where KVM does not work (no
// /dev/kvm, or one whose selftest fails), stop within 10 s with the reason.
func TestRunAccel(t *testing.T) {
	testenv.NeedQEMU(t)
	out, err := run(t, "run", "--trace")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"accelerator: tcg (auto", "stepping: single-step with interrupts and timers masked (QEMU sstep ENABLE|NOIRQ|NOTIMER)", "findings: none"} {
		if !strings.Contains(out, want) {
			t.Errorf("run --trace with the default accelerator lacks %q:\n%s", want, out)
		}
	}
	start := time.Now()
	out, err = run(t, "run", "--trace", "--accel", "kvm")
	took := time.Since(start)
	switch {
	case err != nil:
		if !strings.Contains(err.Error(), "KVM does not work on this host") || took > 10*time.Second {
			t.Errorf("--accel kvm failed after %v with %v; want the reason within 10s", took, err)
		}
		t.Logf("--accel kvm refused in %v: %v", took, err)
	case !strings.Contains(out, "accelerator: kvm (requested"):
		t.Errorf("--accel kvm ran, but not under KVM:\n%s", out)
	default:
		t.Logf("--accel kvm traced under KVM:\n%s", out)
	}
}

// TestRunEvents runs `run --trace -m pagefault`, `-m irq`, `-m int3` and
// `-m gpfault` on the bundled kernel: the entries that are no system call,
// each traced from the user instruction to the handler's iretq back to it
// (to the one after it, for int3's trap and the #GP the handler steps
// over). The names are the
// kernel's ELF symbols; the error code 0x6 is the SDM's reading of a user
// write to a page that is not present, what the labelled store does.
func TestRunEvents(t *testing.T) {
	testenv.NeedQEMU(t)
	tests := []struct {
		mech string
		want []string
	}{
		{"pagefault", []string{"mechanism pagefault", "user_pagefault_insn", "asm_exc_page_fault", "error code 0x6: not present, write, user",
			"cr2 = 0x700238", "pf_iretq_insn", "returned to user mode", "findings: none"}},
		{"irq", []string{"mechanism irq", "user_irq_", "asm_irq_timer", "vector 0x20 delivered before", "IDT[0x20] has IST 0",
			"EOI: out 0x20 to port 0x20", "irq_iretq_insn", "returned to user mode", "findings: none"}},
		{"int3", []string{"mechanism int3", "user_int3_insn", "asm_exc_int3", "#BP breakpoint delivered", "IDT[3] has DPL 3",
			"#BP is a trap", "bp_iretq_insn", "the popped RIP, where the int3 of step 0 left off", "returned to user mode", "findings: none"}},
		{"gpfault", []string{"mechanism gpfault", "user_gpfault_insn", "asm_exc_general_protection", "the handler in IDT[0xd]",
			"error code 0: the fault did not come from loading", "hlt is a privileged instruction", "gp_iretq_insn", "returned to user mode", "findings: none"}},
	}
	for _, tt := range tests {
		t.Run(tt.mech, func(t *testing.T) {
			out, err := run(t, "run", "--trace", "--accel", "tcg", "-m", tt.mech)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range tt.want {
				if !strings.Contains(out, want) {
					t.Errorf("run --trace -m %s lacks %q", tt.mech, want)
				}
			}
			if tt.mech == "irq" {
				// The note on the interrupted instruction renders it as
				// the step's own line does, symbols included.
				var insn string
				for _, l := range strings.Split(out, "\n") {
					if f := strings.Fields(l); len(f) > 3 && f[0] == "0" && f[1] == "U" {
						insn = strings.Join(f[3:], " ")
						break
					}
				}
				flat := strings.Join(strings.Fields(out), " ")
				if insn == "" || !strings.Contains(flat, "delivered before "+insn+" ran") {
					t.Errorf("step 0 is %q; the note on the interrupt does not name it so", insn)
				}
			}
			if t.Failed() {
				t.Log(out)
			}
		})
	}
}

// TestRunLinuxExecStaticPIE refuses a static-pie program (gcc
// -static-pie) before anything starts: the kernel loads it at a new
// address on every run, so the syscall instructions its ELF holds at link
// addresses are not where the guest runs them, and waiting at the
// kernel's entry would catch other processes' calls (/init's) for it.
func TestRunLinuxExecStaticPIE(t *testing.T) {
	pie := testenv.BuildHelloPIE(t)
	for _, args := range [][]string{
		{"--exec", pie, "--syscall", "getppid", "--trace"},
		{"--exec", pie, "--syscall", "write", "--trace"},
		{"--exec", pie, "--trace"},
	} {
		args := append([]string{"run", "linux", "--kernel", "x"}, args...)
		t.Run(strings.Join(args[4:], " "), func(t *testing.T) {
			_, err := run(t, args...)
			want := "--exec " + pie + ": a position-independent executable (static-pie)"
			if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "build it with -static (-no-pie)") {
				t.Fatalf("sctrace %v: err = %v, want %q … build it with -static (-no-pie)", args, err, want)
			}
		})
	}
}

// TestRunLinuxCompatErrors refuses the 32-bit entries that cannot be
// traced, before anything starts: sysenter from x86-64 code, an
// instruction the program does not have, and a CPU vendor that raises #UD
// on the instruction.
func TestRunLinuxCompatErrors(t *testing.T) {
	compat, hello := testenv.BuildCompat32(t), testenv.BuildHello32(t)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-m", "sysenter"}, "mechanism sysenter: Linux takes sysenter only from 32-bit code"},
		{[]string{"--exec", hello, "-m", "sysenter"}, "mechanism sysenter: the program has no sysenter instruction in its code to break on"},
		{[]string{"--exec", compat, "-m", "syscall", "--cpu", "qemu64,vendor=GenuineIntel"}, "an Intel CPU raises #UD on syscall outside 64-bit mode"},
		{[]string{"--exec", compat, "-m", "sysenter", "--cpu", "qemu64"}, "an AMD CPU raises #UD on sysenter in long mode"},
		{[]string{"--exec", compat, "-m", "callgate"}, "mechanism callgate: an i386 program enters the kernel by int80, sysenter or syscall"},
	}
	for _, tt := range tests {
		args := append([]string{"run", "linux", "--kernel", "x"}, tt.args...)
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, err := run(t, args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("sctrace %v: err = %v, want %q", args, err, tt.want)
			}
		})
	}
}

package session

import (
	"context"
	"debug/elf"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/fixtures/linuxinit"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/trace"
	"github.com/sctrace/sctrace/x86"
)

// TestLinuxRoundTrip boots Debian cloud kernels of two series with
// pti=on, records a getpid round trip by syscall and by int $0x80, checks
// the shape of the path, and counts the same path with gdb's stepi: the
// two counts must be equal.
func TestLinuxRoundTrip(t *testing.T) {
	tests := []struct {
		series string
		m      mechanism.Mechanism
		entry  []string // the kernel entry point, by name (one of)
		exit   string   // the instruction that returns to user mode
		insn   []byte
	}{
		{"6.1", mechanism.Syscall, []string{"entry_SYSCALL_64"}, "sysretq", []byte{0x0f, 0x05}},
		{"6.1", mechanism.Int80, []string{"entry_INT80_compat", "asm_int80_emulation"}, "iretq", []byte{0xcd, 0x80}},
		{"6.12", mechanism.Syscall, []string{"entry_SYSCALL_64"}, "sysretq", []byte{0x0f, 0x05}},
		{"6.12", mechanism.Int80, []string{"entry_INT80_compat", "asm_int80_emulation"}, "iretq", []byte{0xcd, 0x80}},
	}
	for _, tt := range tests {
		t.Run(tt.series+"/"+string(tt.m), func(t *testing.T) {
			testenv.NeedTools(t, "gdb") // it counts the path sctrace records
			kernel := testenv.LinuxKernel(t, tt.series)
			ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
			defer cancel()
			t0 := time.Now()
			s, err := StartLinux(ctx, LinuxOptions{Options: Options{Accel: "tcg", Mechanism: tt.m, Keep: true}, Kernel: kernel})
			if err != nil {
				t.Fatal(err)
			}
			kept(t, s)
			ready := time.Since(t0)
			t1 := time.Now()
			tr, err := s.RoundTrip(ctx, tt.m)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: ready in %.2fs (booted in %.2fs), %d instructions recorded in %.2fs; %d kallsyms symbols (%s)",
				s.Kernel, ready.Seconds(), s.Linux().BootTime.Seconds(), tr.Len(), time.Since(t1).Seconds(),
				s.Linux().Kallsyms.Count, s.Linux().Kallsyms.Encoding)
			checkLinuxTrace(t, tr, tt.entry, tt.exit, tt.insn)

			// The same path counted by gdb on the same guest.
			site := uint64(tr.Step(0).RIP)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			counts, _ := gdbStepiCount(ctx, t, s.QEMU.GDBAddr, site, 1)
			n := counts[0]
			if n != tr.Len() {
				t.Errorf("sctrace recorded %d instructions, gdb's stepi counted %d on the same path", tr.Len(), n)
			}
			t.Logf("gdb stepi count: %d", n)
		})
	}
}

// checkLinuxTrace checks a round trip recorded on Linux with pti=on, back
// at the instruction after the entering one.
func checkLinuxTrace(t *testing.T, tr *trace.Trace, entries []string, exit string, insn []byte) {
	t.Helper()
	checkLinuxPath(t, tr, entries, exit, insn)
	first := tr.Step(0)
	if want := uint64(first.RIP) + uint64(len(insn)); tr.Final.Val(x86.RIP) != want {
		t.Errorf("back in user mode at %#x, want %#x (the instruction after the entering one)", tr.Final.Val(x86.RIP), want)
	}
}

// checkIretqPath checks what every Linux path from user mode back by
// iretq has (an exception, an interrupt, a signal's delivery): it passes
// the task stack, swaps GS and CR3 twice each with no finding, and ends
// with iretq at CPL 0.
func checkIretqPath(t *testing.T, tr *trace.Trace) {
	t.Helper()
	if stacks := trace.Summarize(tr).Stacks; !slices.ContainsFunc(stacks, func(s string) bool { return strings.HasPrefix(s, "task stack") }) {
		t.Errorf("stacks visited %q: the task stack is not among them", stacks)
	}
	ev := countEvents(tr)
	if ev.swapgs != 2 || ev.cr3 != 2 || ev.findings != 0 {
		for _, f := range trace.Summarize(tr).Findings {
			t.Log(f)
		}
		t.Errorf("events: %+v; want 2 swapgs, 2 CR3 writes and no finding", ev)
	}
	if end := tr.Step(tr.Len() - 1); end.Op != x86asm.IRETQ || end.CPL != 0 {
		t.Errorf("last step %s at CPL %d, want iretq at CPL 0", end.ATT, end.CPL)
	}
}

// checkLinuxPath checks the shape of a round trip recorded on Linux with
// pti=on, from the user instruction insn through one of entries to exit and
// back at CPL 3, with no finding.
func checkLinuxPath(t *testing.T, tr *trace.Trace, entries []string, exit string, insn []byte) {
	t.Helper()
	if tr.Header.Stop != string(trace.StopUser) {
		t.Fatalf("stopped: %s", tr.Header.Stop)
	}
	// The C part of a system call runs on the calling task's stack, found
	// from the per-CPU top of stack (pcpu_hot.top_of_stack from 6.2,
	// cpu_current_top_of_stack before), which with pti=on is not mapped
	// where the round trip starts, in user mode.
	if stacks := trace.Summarize(tr).Stacks; !slices.ContainsFunc(stacks, func(s string) bool { return strings.HasPrefix(s, "task stack") }) {
		t.Errorf("stacks visited %q: the task stack is not among them", stacks)
	}
	first := tr.Step(0)
	if first.CPL != 3 || string(first.Bytes[:len(insn)]) != string(insn) {
		t.Errorf("first step %s (% x) at CPL %d: want the user instruction % x", first.Intel, first.Bytes, first.CPL, insn)
	}
	var swapgs, cr3, regs int
	seen := map[string]bool{}
	fields := map[string]bool{}
	last := ""
	for _, st := range tr.All() {
		name, _, _ := strings.Cut(st.Symbol, "+")
		seen[name] = true
		if st.CPL == 0 {
			last = st.Intel
		}
		switch {
		case strings.HasPrefix(st.Intel, "swapgs"):
			swapgs++
		case strings.HasPrefix(st.Intel, "mov cr3,"):
			cr3++
		}
		for _, e := range st.Effects {
			// Every field an effect names: the CPU's frame names five.
			for rest := e.Text; ; {
				i := strings.Index(rest, "(pt_regs->")
				if i < 0 {
					break
				}
				f, after, _ := strings.Cut(rest[i+len("(pt_regs->"):], ")")
				fields[f] = true
				regs++
				rest = after
			}
			if e.Verdict == "finding" {
				t.Errorf("step %d %s: finding: %s", st.Index, st.Intel, e.Text)
			}
		}
	}
	found := false
	for _, e := range entries {
		found = found || seen[e]
	}
	if !found {
		t.Errorf("the trace never passes %v", entries)
	}
	if swapgs != 2 || cr3 != 2 {
		t.Errorf("%d swapgs and %d CR3 writes, want 2 and 2 with pti=on", swapgs, cr3)
	}
	for _, f := range []string{"ss", "sp", "flags", "cs", "ip"} {
		if !fields[f] {
			t.Errorf("pt_regs->%s never named (%d pt_regs stores seen)", f, regs)
		}
	}
	if !strings.HasPrefix(last, exit) {
		t.Errorf("last kernel instruction %q, want %s", last, exit)
	}
	checkLinuxAnnotations(t, tr, exit)
	if tr.Final == nil || tr.Final.CPL() != 3 {
		t.Fatalf("the trace does not end at CPL 3")
	}
}

func TestLinuxCommandLine(t *testing.T) {
	tests := []struct {
		o    LinuxOptions
		want string
	}{
		{LinuxOptions{}, "console=ttyS0 nokaslr pti=on quiet no_timer_check -- syscall"},
		{LinuxOptions{Options: Options{Mechanism: mechanism.Int80}}, "console=ttyS0 nokaslr pti=on quiet no_timer_check -- int80"},
		{LinuxOptions{Options: Options{Mechanism: mechanism.PageFault}}, "console=ttyS0 nokaslr pti=on quiet no_timer_check -- mmap"},
		{LinuxOptions{NoPTI: true, KASLR: true}, "console=ttyS0 pti=off quiet no_timer_check -- syscall"},
		{LinuxOptions{Options: Options{Append: "mitigations=off"}, Mode: "enosys"}, "console=ttyS0 nokaslr pti=on quiet no_timer_check mitigations=off -- enosys"},
	}
	for _, tt := range tests {
		if got := tt.o.CommandLine(); got != tt.want {
			t.Errorf("CommandLine() = %q, want %q", got, tt.want)
		}
	}
}

func TestCheckKernelImage(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := dir + "/" + name
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bz := func(xload byte) []byte {
		b := make([]byte, 0x400)
		b[0x1f1] = 1 // one setup sector: the boot sector and it make up the file
		copy(b[0x202:], "HdrS")
		b[0x236] = xload
		return b
	}
	truncated := bz(1)
	truncated[0x1f4] = 1 // 16 bytes of 32-bit code that the file lacks
	tests := []struct {
		name, path, want string
	}{
		{"64-bit bzImage", write("bz64", bz(1)), ""},
		{"32-bit bzImage", write("bz32", bz(0)), "without a 64-bit entry point"},
		{"truncated bzImage", write("bzcut", truncated), "a truncated bzImage: its boot header says 1040 bytes, the file has 1024"},
		{"text", write("text", []byte("root:x:0:0:root:/root:/bin/bash\n")), "not a Linux bzImage"},
		{"i386 ELF", "../symbols/testdata/i386.elf", "not an x86-64 kernel"},
		{"x86-64 ELF", "../symbols/testdata/tiny.elf", ""},
		{"missing", dir + "/none", "no such file"},
	}
	for _, tt := range tests {
		err := CheckKernelImage(tt.path)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: CheckKernelImage = %v, want %q", tt.name, err, tt.want)
		}
	}
	if k := os.Getenv("SCTRACE_KERNEL_6_1"); k != "" {
		if err := CheckKernelImage(k); err != nil {
			t.Errorf("Debian kernel %s: %v", k, err)
		}
	}
}

// checkLinuxAnnotations checks what the annotations say on a Linux round
// trip against entry_64.S and calling.h:
//   - the exit path (syscall_return_via_sysret,
//     swapgs_restore_regs_and_return_to_usermode) copies the user RSP, RDI
//     and, for iretq, the IRET frame to the entry stack (TSS.sp0) and pops
//     them there: no word on that trampoline is a pt_regs field;
//   - SWITCH_TO_KERNEL_CR3 clears PTI_USER_PGTABLE_AND_PCID_MASK, bits 11
//     and 12;
//   - before sysretq Linux checks RCX == RIP and R11 == RFLAGS (the
//     assembly after do_syscall_64 up to 6.2, do_syscall_64 in C since).
func checkLinuxAnnotations(t *testing.T, tr *trace.Trace, exit string) {
	t.Helper()
	tramp, bits := 0, false
	var sysret string
	for i, st := range tr.All() {
		txt := stepText(st)
		if onEntryStackLeaving(tr, i) {
			tramp++
			if strings.Contains(txt, "(pt_regs->") {
				t.Errorf("step %d %s (%s) on the exit trampoline names a pt_regs field:\n%s", st.Index, st.Intel, st.Symbol, txt)
			}
		}
		if strings.Contains(txt, "clears bit 11 (the user PCID") && strings.Contains(txt, "bit 12 (the user half") {
			bits = true
		}
		if strings.HasPrefix(st.Intel, "sysret") {
			sysret = txt
		}
	}
	// A 32-bit call returned by SYSRETL ("sysret" in Intel syntax, against
	// the 64-bit "sysretq") needs no trampoline:
	// sysret32_from_system_call (entry_64_compat.S) loads the user RSP
	// straight from pt_regs and switches CR3 on the user stack.
	if tramp == 0 && exit != "sysret" {
		t.Errorf("no step ran on the exit trampoline")
	}
	if !bits {
		t.Errorf("no step says SWITCH_TO_KERNEL_CR3 clears bits 11 and 12")
	}
	if exit == "sysretq" {
		for _, want := range []string{"the kernel chose SYSRET after checking, as Linux's do_syscall_64 does, that", "RCX == RIP", "R11 == RFLAGS"} {
			if !strings.Contains(sysret, want) {
				t.Errorf("sysretq step lacks %q:\n%s", want, sysret)
			}
		}
	}
}

// TestLinuxNoPTIAlternatives boots Debian's kernels with pti=off. Linux
// then leaves its KPTI page-table switches out by keeping the jmp that
// each SWITCH_TO_*_CR3 ALTERNATIVE site starts with (entry_64.S,
// calling.h: ALTERNATIVE "jmp .Lend_\@", "", X86_FEATURE_PTI). The round
// trip must write CR3 no time, and the jmp on the way in must be explained
// as skipping a CR3 write; the same kernel with pti=on writes CR3 (checked
// by TestLinuxRoundTrip).
func TestLinuxNoPTIAlternatives(t *testing.T) {
	for _, series := range []string{"6.1", "6.12"} {
		t.Run(series, func(t *testing.T) {
			kernel := testenv.LinuxKernel(t, series)
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			s, err := StartLinux(ctx, LinuxOptions{Options: Options{Accel: "tcg", Mechanism: mechanism.Syscall}, Kernel: kernel, NoPTI: true})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			tr, err := s.RoundTrip(ctx, mechanism.Syscall)
			if err != nil {
				t.Fatal(err)
			}
			var skips []string
			for _, st := range tr.All() {
				if slices.Contains(st.Events, annotate.EventCR3Write) {
					t.Errorf("step %d (%s) writes CR3 with pti=off", st.Index, st.Symbol)
				}
				for _, e := range st.Effects {
					if strings.Contains(e.Text, "ALTERNATIVE site") && strings.Contains(e.Text, "CR3 write") {
						skips = append(skips, st.Symbol)
					}
				}
			}
			if len(skips) == 0 || !strings.HasPrefix(skips[0], "entry_SYSCALL_64") {
				t.Errorf("jmps explained as skipping a CR3 write at %v; want the first in entry_SYSCALL_64", skips)
			}
			t.Logf("CR3 switches skipped at %v", skips)
		})
	}
}

// TestChooseMechanism pairs the traced mechanism with what /init loops on.
func TestChooseMechanism(t *testing.T) {
	tests := []struct {
		m        mechanism.Mechanism
		chosen   bool
		mode     string
		wantM    mechanism.Mechanism
		wantMode string
		wantErr  string
	}{
		{m: mechanism.Syscall, wantM: mechanism.Syscall},
		{m: mechanism.Syscall, chosen: true, wantM: mechanism.Syscall},
		{m: mechanism.Int80, chosen: true, wantM: mechanism.Int80},
		{m: mechanism.Vdso, chosen: true, wantM: mechanism.Vdso, wantMode: linuxinit.Vdso},
		{m: mechanism.Vdso, chosen: true, mode: linuxinit.Enosys, wantErr: "mechanism vdso: /init in mode enosys never uses it (it uses syscall)"},
		{m: mechanism.Vdso, chosen: true, mode: linuxinit.All, wantM: mechanism.Vdso, wantMode: linuxinit.All},
		{m: mechanism.Int80, chosen: true, mode: linuxinit.Execve, wantErr: "/init in mode execve never uses it (it uses syscall)"},
		{m: mechanism.Syscall, mode: linuxinit.Execve, wantM: mechanism.Syscall, wantMode: linuxinit.Execve},
		{m: mechanism.Syscall, mode: "nosuch", wantErr: `unknown /init mode "nosuch"`},
		{m: mechanism.Syscall, mode: linuxinit.Vdso, wantM: mechanism.Vdso, wantMode: linuxinit.Vdso},
		{m: mechanism.Syscall, mode: linuxinit.Int80, wantM: mechanism.Int80, wantMode: linuxinit.Int80},
		{m: mechanism.Syscall, chosen: true, mode: linuxinit.Int80, wantErr: "/init in mode int80 never uses it (it uses int80)"},
		{m: mechanism.Syscall, mode: linuxinit.Enosys, wantM: mechanism.Syscall, wantMode: linuxinit.Enosys},
		{m: "", wantM: ""},
		{m: mechanism.IRQ, chosen: true, wantM: mechanism.IRQ},
		{m: mechanism.IRQ, chosen: true, mode: linuxinit.Int80, wantM: mechanism.IRQ, wantMode: linuxinit.Int80},
		{m: mechanism.PageFault, chosen: true, wantM: mechanism.PageFault, wantMode: linuxinit.Mmap},
		{m: mechanism.PageFault, chosen: true, mode: linuxinit.Mmap, wantM: mechanism.PageFault, wantMode: linuxinit.Mmap},
		{m: mechanism.PageFault, chosen: true, mode: linuxinit.Read, wantErr: "mechanism pagefault: /init in mode read never uses it (it uses syscall)"},
		{m: mechanism.PageFault, chosen: true, mode: linuxinit.All, wantErr: "mechanism pagefault: /init in mode all never uses it"},
		{m: mechanism.Syscall, mode: linuxinit.Mmap, wantM: mechanism.Syscall, wantMode: linuxinit.Mmap},
		{m: mechanism.Int3, chosen: true, wantM: mechanism.Int3, wantMode: linuxinit.Int3},
		{m: mechanism.GPFault, chosen: true, wantM: mechanism.GPFault, wantMode: linuxinit.GPFault},
		{m: mechanism.Syscall, mode: linuxinit.Int3, wantM: mechanism.Int3, wantMode: linuxinit.Int3},
		{m: mechanism.Syscall, mode: linuxinit.GPFault, wantM: mechanism.GPFault, wantMode: linuxinit.GPFault},
		{m: mechanism.Syscall, chosen: true, mode: linuxinit.GPFault, wantM: mechanism.Syscall, wantMode: linuxinit.GPFault},
		{m: mechanism.Int3, chosen: true, mode: linuxinit.GPFault, wantErr: "mechanism int3: /init in mode gpfault never uses it (it uses gpfault and syscall)"},
		{m: mechanism.GPFault, chosen: true, mode: linuxinit.Read, wantErr: "mechanism gpfault: /init in mode read never uses it"},
		{m: mechanism.Sysenter, chosen: true, wantErr: "mechanism sysenter: Linux takes sysenter only from 32-bit code (compatibility mode, on an Intel CPU; in 64-bit mode it is not an entry Linux sets up), and Linux's /init is an x86-64 program"},
		{m: mechanism.CallGate, chosen: true, mode: linuxinit.Int80, wantErr: "Linux's /init uses"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%v/%s", tt.m, tt.chosen, tt.mode), func(t *testing.T) {
			o := LinuxOptions{Mode: tt.mode}
			m, err := o.ChooseMechanism(tt.m, tt.chosen)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m != tt.wantM || o.Mechanism != tt.wantM || o.Mode != tt.wantMode {
				t.Errorf("got mechanism %q (options %q), mode %q; want %q, %q", m, o.Mechanism, o.Mode, tt.wantM, tt.wantMode)
			}
		})
	}
}

// TestChooseMechanismSyscallAndProgram pairs --syscall and --exec with
// the mechanism and /init's mode, and refuses what could never be traced.
func TestChooseMechanismSyscallAndProgram(t *testing.T) {
	prog64, err := linuxinit.NewProgram(linuxinit.ELF, []string{"prog"})
	if err != nil {
		t.Fatal(err)
	}
	prog32 := &linuxinit.Program{Machine: elf.EM_386, Args: []string{"prog32"}, Compat: map[mechanism.Mechanism][]uint64{}}
	// An i386 program with its own sysenter and syscall, as compat32.s.
	prog32c := &linuxinit.Program{Machine: elf.EM_386, Args: []string{"compat32"}, Compat: map[mechanism.Mechanism][]uint64{
		mechanism.Sysenter: {0x8049045}, mechanism.Syscall: {0x804904e},
	}}
	tests := []struct {
		name     string
		o        LinuxOptions
		m        mechanism.Mechanism
		chosen   bool
		wantM    mechanism.Mechanism
		wantMode string
		wantCPU  string
		wantErr  string
	}{
		{name: "a call a loop makes picks the loop", o: LinuxOptions{Options: Options{Syscall: "read"}}, m: mechanism.Syscall, wantM: mechanism.Syscall, wantMode: linuxinit.Read},
		{name: "by number", o: LinuxOptions{Options: Options{Syscall: "59"}}, m: mechanism.Syscall, wantM: mechanism.Syscall, wantMode: linuxinit.Execve},
		{name: "getpid is the default loop's", o: LinuxOptions{Options: Options{Syscall: "getpid"}}, m: mechanism.Syscall, wantM: mechanism.Syscall, wantMode: linuxinit.Syscall},
		{name: "a loop chosen keeps its mode", o: LinuxOptions{Options: Options{Syscall: "lseek"}, Mode: linuxinit.Read}, m: mechanism.Syscall, wantM: mechanism.Syscall, wantMode: linuxinit.Read},
		{name: "a loop that makes no syscall", o: LinuxOptions{Options: Options{Syscall: "read"}, Mode: linuxinit.Vdso}, m: mechanism.Syscall, wantErr: "mechanism syscall: /init in mode vdso never uses it (it uses vdso)"},
		{name: "no loop makes it", o: LinuxOptions{Options: Options{Syscall: "mount"}}, m: mechanism.Syscall, wantErr: "no built-in /init loop makes mount: give --exec PROGRAM"},
		{name: "unknown name", o: LinuxOptions{Options: Options{Syscall: "getpidd"}}, m: mechanism.Syscall, wantErr: `unknown system call "getpidd"`},
		{name: "number out of range", o: LinuxOptions{Options: Options{Syscall: "1000"}}, m: mechanism.Syscall, wantErr: "system call number 1000 is out of range"},
		{name: "with pagefault", o: LinuxOptions{Options: Options{Syscall: "mmap"}}, m: mechanism.PageFault, chosen: true, wantErr: "--syscall waits for the syscall instruction; mechanism pagefault is not it"},
		{name: "a program's page faults", o: LinuxOptions{Program: prog64}, m: mechanism.PageFault, chosen: true, wantErr: "mechanism pagefault: the page fault traced is the one /init's mmap loop makes"},
		{name: "a signal handler's return picks the int3 loop", o: LinuxOptions{Options: Options{Syscall: "rt_sigreturn"}}, m: mechanism.Syscall, wantM: mechanism.Syscall, wantMode: linuxinit.Int3},
		{name: "rt_sigreturn by number in the gpfault loop", o: LinuxOptions{Options: Options{Syscall: "15"}, Mode: linuxinit.GPFault}, m: mechanism.Syscall, wantM: mechanism.Syscall, wantMode: linuxinit.GPFault},
		{name: "with int3", o: LinuxOptions{Options: Options{Syscall: "rt_sigreturn"}}, m: mechanism.Int3, chosen: true, wantErr: "--syscall waits for the syscall instruction; mechanism int3 is not it"},
		{name: "a program's #GP", o: LinuxOptions{Program: prog64}, m: mechanism.GPFault, chosen: true, wantErr: "mechanism gpfault: the exception traced is the one /init's gpfault loop raises"},
		{name: "with int80", o: LinuxOptions{Options: Options{Syscall: "read"}}, m: mechanism.Int80, chosen: true, wantErr: "--syscall waits for the syscall instruction; mechanism int80 is not it"},
		{name: "a program", o: LinuxOptions{Options: Options{Syscall: "mount"}, Program: prog64}, m: mechanism.Syscall, wantM: mechanism.Syscall, wantMode: linuxinit.Exec},
		{name: "a program without --syscall", o: LinuxOptions{Program: prog64}, m: mechanism.Syscall, wantM: mechanism.Syscall, wantMode: linuxinit.Exec},
		{name: "a program with no known site", o: LinuxOptions{Program: &linuxinit.Program{Machine: elf.EM_X86_64, Type: elf.ET_DYN}}, m: mechanism.Syscall, wantErr: "--exec: no syscall instruction of the program is known"},
		{name: "a program with no known site, with --syscall", o: LinuxOptions{Options: Options{Syscall: "write"}, Program: &linuxinit.Program{Machine: elf.EM_X86_64, Type: elf.ET_DYN}}, m: mechanism.Syscall, wantErr: "--exec: no syscall instruction of the program is known"},
		{name: "a program and a loop", o: LinuxOptions{Program: prog64, Mode: linuxinit.Read}, m: mechanism.Syscall, wantErr: "--exec runs your program, --init read a built-in loop: give one of them"},
		{name: "exec without a program", o: LinuxOptions{Mode: linuxinit.Exec}, m: mechanism.Syscall, wantErr: "--init exec runs the program --exec gives"},
		{name: "an i386 program is traced at int80", o: LinuxOptions{Program: prog32}, m: mechanism.Syscall, wantM: mechanism.Int80, wantMode: linuxinit.Exec},
		{name: "an i386 program without a syscall instruction", o: LinuxOptions{Program: prog32}, m: mechanism.Syscall, chosen: true, wantErr: "mechanism syscall: the program has no syscall instruction in its code to break on"},
		{name: "an i386 program by sysenter runs on Intel", o: LinuxOptions{Program: prog32c}, m: mechanism.Sysenter, chosen: true, wantM: mechanism.Sysenter, wantMode: linuxinit.Exec, wantCPU: IntelCPU},
		{name: "an i386 program by syscall runs on AMD", o: LinuxOptions{Program: prog32c}, m: mechanism.Syscall, chosen: true, wantM: mechanism.Syscall, wantMode: linuxinit.Exec, wantCPU: AMDCPU},
		{name: "an i386 program by int80 keeps the default CPU", o: LinuxOptions{Program: prog32c}, m: mechanism.Int80, chosen: true, wantM: mechanism.Int80, wantMode: linuxinit.Exec},
		{name: "sysenter on a CPU of the user's", o: LinuxOptions{Program: prog32c, Options: Options{CPU: "Skylake-Client,vendor=GenuineIntel"}}, m: mechanism.Sysenter, chosen: true, wantM: mechanism.Sysenter, wantMode: linuxinit.Exec, wantCPU: "Skylake-Client,vendor=GenuineIntel"},
		{name: "compat syscall on Intel", o: LinuxOptions{Program: prog32c, Options: Options{CPU: "qemu64,vendor=GenuineIntel"}}, m: mechanism.Syscall, chosen: true, wantErr: "an Intel CPU raises #UD on syscall outside 64-bit mode"},
		{name: "sysenter on AMD", o: LinuxOptions{Program: prog32c, Options: Options{CPU: "qemu64"}}, m: mechanism.Sysenter, chosen: true, wantErr: "an AMD CPU raises #UD on sysenter in long mode"},
		{name: "sysenter from an x86-64 program", o: LinuxOptions{Program: prog64}, m: mechanism.Sysenter, chosen: true, wantErr: "mechanism sysenter: Linux takes sysenter only from 32-bit code (compatibility mode, on an Intel CPU; in 64-bit mode it is not an entry Linux sets up), and the program is an x86-64 one"},
		{name: "an i386 program by callgate", o: LinuxOptions{Program: prog32c}, m: mechanism.CallGate, chosen: true, wantErr: "mechanism callgate: an i386 program enters the kernel by int80, sysenter or syscall"},
		{name: "an i386 program with --syscall", o: LinuxOptions{Options: Options{Syscall: "read"}, Program: prog32}, m: mechanism.Syscall, wantErr: "--syscall names x86-64 system calls; an i386 program's calls use the i386 numbers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.o
			m, err := o.ChooseMechanism(tt.m, tt.chosen)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m != tt.wantM || o.Mode != tt.wantMode || o.CPU != tt.wantCPU {
				t.Errorf("got mechanism %q, mode %q, -cpu %q; want %q, %q, %q", m, o.Mode, o.CPU, tt.wantM, tt.wantMode, tt.wantCPU)
			}
		})
	}
}

// TestBootHint checks what a boot that timed out tells the user to try: a
// longer --boot-timeout always, and, where the console stayed empty
// because the command line has "quiet", how to see how far the boot got.
func TestBootHint(t *testing.T) {
	tests := []struct {
		o       LinuxOptions
		console string
		quiet   bool
	}{
		{LinuxOptions{}, "", true},
		{LinuxOptions{}, "[    0.36] smp: Bringing up secondary CPUs ...\n", false},
		{LinuxOptions{Options: Options{Append: "loglevel=8 ignore_loglevel"}}, "", false},
	}
	for _, tt := range tests {
		s := &Session{Serial: &SerialLog{}, linux: &linuxState{cmdline: tt.o.CommandLine()}}
		s.Serial.Write([]byte(tt.console))
		hint := s.bootHint()
		if !strings.Contains(hint, "--boot-timeout") {
			t.Errorf("console %q: hint %q does not name --boot-timeout", tt.console, hint)
		}
		if got := strings.Contains(hint, `"quiet"`); got != tt.quiet {
			t.Errorf("console %q, command line %q: hint %q names quiet: %v, want %v", tt.console, tt.o.CommandLine(), hint, got, tt.quiet)
		}
	}
	// Without "quiet" on the command line an empty console is not its doing.
	s := &Session{Serial: &SerialLog{}, linux: &linuxState{cmdline: "console=ttyS0 -- syscall"}}
	if hint := s.bootHint(); strings.Contains(hint, "quiet") {
		t.Errorf("hint %q names quiet, which the command line lacks", hint)
	}
}

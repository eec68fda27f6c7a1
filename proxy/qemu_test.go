package proxy

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sctrace/sctrace/annotate"
	"github.com/sctrace/sctrace/fixtures/kernel"
	"github.com/sctrace/sctrace/fixtures/linuxinit"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/qemu"
	"github.com/sctrace/sctrace/session"
)

// elfSymbol returns a symbol's address in the bundled teaching kernel.
func elfSymbol(t *testing.T, name string) uint64 {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(kernel.ELF))
	if err != nil {
		t.Fatal(err)
	}
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range syms {
		if s.Name == name {
			return s.Value
		}
	}
	t.Fatalf("no %s in the teaching kernel", name)
	return 0
}

// startKernel boots the teaching kernel under QEMU, stopped at the reset
// vector with its gdbstub on a private socket, as a user's -s -S does.
func startKernel(t *testing.T, ctx context.Context, bin string) *qemu.Instance {
	t.Helper()
	path, err := kernel.WriteTemp(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	inst, err := qemu.Start(ctx, qemu.Config{Binary: bin, Kernel: path, Append: "trace", Accel: "tcg", GDB: true, Stopped: true, ExitDevice: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Stop() })
	return inst
}

// gdbBatch runs gdb in batch mode with one -ex per command against a
// remote target.
func gdbBatch(t *testing.T, ctx context.Context, remote string, cmds []string) string {
	t.Helper()
	args := []string{"-batch", "-nx", "-ex", "set pagination off", "-ex", "set confirm off", "-ex", "target remote " + remote}
	for _, c := range cmds {
		args = append(args, "-ex", c)
	}
	out, err := exec.CommandContext(ctx, "gdb", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("gdb: %v\n%s", err, out)
	}
	return string(out)
}

var displayedPC = regexp.MustCompile(`(?m)^=> 0x([0-9a-f]+)`)

// TestGDBSameAsDirect runs one gdb session (a hardware breakpoint at the
// user syscall, 20 stepi, registers, memory at RSP, a monitor command, a
// continue to a second breakpoint, more stepi, a detach) against two
// identical teaching kernel QEMUs, one directly and one through the proxy:
// gdb's output must be the same, byte for byte, and the trace must hold one
// step per stepi, at the addresses gdb displayed before each. It runs on
// QEMU 7.2 and 10.0. Neither offers QStartNoAckMode, so acks stay on with
// both; TestSameAsDirect covers a stub that turns them off.
func TestGDBSameAsDirect(t *testing.T) {
	testenv.NeedQEMU(t)
	testenv.NeedTools(t, "gdb")
	for _, tt := range []struct {
		name string
		bin  func(t *testing.T) string
	}{
		{"qemu 7.2", func(*testing.T) string { return "" }},
		{"qemu 10.0", func(t *testing.T) string { return testenv.QEMU10(t) }},
	} {
		t.Run(tt.name, func(t *testing.T) { gdbSameAsDirect(t, tt.bin(t)) })
	}
}

func gdbSameAsDirect(t *testing.T, bin string) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	sys, int80 := elfSymbol(t, "user_syscall_insn"), elfSymbol(t, "user_int80_insn")
	cmds := []string{"display/i $pc", fmt.Sprintf("hbreak *%#x", sys), "continue"}
	stepi := func(n int) {
		for range n {
			cmds = append(cmds, "stepi")
		}
	}
	stepi(20)
	cmds = append(cmds, "info registers", "x/4gx $rsp", "monitor info registers", fmt.Sprintf("hbreak *%#x", int80), "continue")
	stepi(5)
	cmds = append(cmds, "x/2i $pc", "delete", "detach")

	direct := gdbBatch(t, ctx, strings.TrimPrefix(startKernel(t, ctx, bin).GDBAddr, "unix:"), cmds)

	inst := startKernel(t, ctx, bin)
	ln, err := Listen("")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var listing bytes.Buffer
	done := make(chan served, 1)
	go func() {
		tr, err := Serve(ctx, ln, Config{To: inst.GDBAddr, Listing: &listing})
		done <- served{tr, err}
	}()
	proxied := gdbBatch(t, ctx, ln.Target, cmds)
	r := wait(t, done)
	if r.err != nil {
		t.Fatalf("proxy: %v", r.err)
	}
	if direct != proxied {
		t.Fatalf("gdb's output differs through the proxy:\n--- direct\n%s\n--- proxied\n%s", direct, proxied)
	}
	if !strings.Contains(direct, "Breakpoint 2,") || strings.Count(direct, "=> 0x") != 20+5+3 {
		t.Fatalf("gdb's session did not go as planned:\n%s", direct)
	}

	// The pc gdb displayed before each stepi: at the first breakpoint
	// (then after each of the 20 steps but the last), and at the second
	// (then after each of the 5 but the last). The last is x/2i's. (gdb
	// displays nothing while the CPU is at the reset vector.)
	var pcs []uint64
	for _, m := range displayedPC.FindAllStringSubmatch(proxied, -1) {
		v, _ := strconv.ParseUint(m[1], 16, 64)
		pcs = append(pcs, v)
	}
	want := append(append([]uint64{}, pcs[0:20]...), pcs[21:26]...)
	if pcs[0] != sys || pcs[21] != int80 {
		t.Fatalf("gdb stopped at %#x and %#x, the breakpoints are at %#x and %#x", pcs[0], pcs[21], sys, int80)
	}
	tr := r.t
	if tr == nil || tr.Len() != len(want)-int(tr.Header.SpuriousStops) {
		t.Fatalf("trace has %v steps, gdb made %d stepi:\n%s", tr, len(want), listing.String())
	}
	if tr.Header.SpuriousStops > 0 {
		t.Skipf("QEMU reported %d single steps that ran nothing; the RIPs cannot be matched one to one", tr.Header.SpuriousStops)
	}
	for i, w := range want {
		if got := uint64(tr.Step(i).RIP); got != w {
			t.Errorf("step %d at %#x, gdb stepped from %#x", i, got, w)
		}
	}
	if got := tr.Step(1).Symbol; got != "entry_SYSCALL_64" {
		t.Errorf("step 1 is %q, want entry_SYSCALL_64 (symbols: %s)", got, tr.Header.Symbols)
	}
	if g, ok := tr.GapAt(20); !ok || !strings.Contains(g.What, fmt.Sprintf("%#x", int80)) {
		t.Errorf("gap before step 20: %+v, want the continue to %#x", g, int80)
	}
	if !strings.Contains(listing.String(), "swapgs") {
		t.Errorf("the listing lacks the kernel entry:\n%s", listing.String())
	}
}

// TestGDBOnLinux steps a Debian Linux 6.1 guest (page table isolation on)
// with gdb through the proxy, from the user syscall of sctrace's /init
// (a hardware breakpoint at the address its symbols give) into the
// kernel, with no symbol file: the proxy finds the kernel's kallsyms in
// guest memory at the first stop, so the kernel steps are named.
func TestGDBOnLinux(t *testing.T) {
	testenv.NeedTools(t, "gdb")
	bz := testenv.LinuxKernel(t, "6.1")
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	img, err := linuxinit.Initramfs()
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(t.TempDir(), "initramfs.cpio")
	if err := os.WriteFile(initrd, img, 0o600); err != nil {
		t.Fatal(err)
	}
	lo := session.LinuxOptions{Mode: linuxinit.Syscall}
	var console qemu.Output
	inst, err := qemu.Start(ctx, qemu.Config{Kernel: bz, Initrd: initrd, Append: lo.CommandLine(), Memory: "256M", Accel: "tcg", GDB: true, Serial: &console})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Stop()
	testenv.WaitOutput(t, console.String, linuxinit.Banner, 120*time.Second) // /init loops
	init, err := linuxinit.Symbols(linuxinit.Syscall)
	if err != nil {
		t.Fatal(err)
	}
	label, ok := init.Addr(mechanism.Syscall.UserLabel())
	if !ok {
		t.Fatalf("/init has no %s", mechanism.Syscall.UserLabel())
	}
	ln, err := Listen("")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var listing bytes.Buffer
	done := make(chan served, 1)
	go func() {
		tr, err := Serve(ctx, ln, Config{To: inst.GDBAddr, Listing: &listing})
		done <- served{tr, err}
	}()
	const n = 12
	cmds := []string{"display/i $pc", fmt.Sprintf("hbreak *%#x", label), "continue"}
	for range n {
		cmds = append(cmds, "stepi")
	}
	out := gdbBatch(t, ctx, ln.Target, append(cmds, "delete", "detach"))
	r := wait(t, done)
	if r.err != nil {
		t.Fatalf("proxy: %v", r.err)
	}
	var pcs []uint64
	for _, m := range displayedPC.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseUint(m[1], 16, 64)
		pcs = append(pcs, v)
	}
	if len(pcs) != n+1 || pcs[0] != label {
		t.Fatalf("gdb displayed %d pcs from %#x, want %d from %#x:\n%s", len(pcs), pcs, n+1, label, out)
	}
	tr := r.t
	if tr == nil || tr.Len()+tr.Header.SpuriousStops != n {
		t.Fatalf("trace %v, gdb made %d stepi:\n%s", tr, n, listing.String())
	}
	if tr.Header.SpuriousStops == 0 {
		for i := range n {
			if got := uint64(tr.Step(i).RIP); got != pcs[i] {
				t.Errorf("step %d at %#x, gdb stepped from %#x", i, got, pcs[i])
			}
		}
	}
	if s := tr.Step(1); s.Symbol != "entry_SYSCALL_64" || !strings.Contains(tr.Header.Symbols, "kallsyms") {
		t.Errorf("step 1 named %q with symbols from %q; want entry_SYSCALL_64 from kallsyms", s.Symbol, tr.Header.Symbols)
	}
	if !strings.HasPrefix(tr.Header.Kernel, "Linux version 6.1") {
		t.Errorf("kernel %q", tr.Header.Kernel)
	}
}

// TestGDBStepiOverPause has gdb, through the proxy, write `pause; nop` at
// the teaching kernel's user syscall and stepi once: under TCG that one
// step runs both instructions. The trace records the pause as a step of
// its own that moved only RIP, and says in a gap that the rest ran
// unrecorded, rather than taking the RIP past the nop for an exception.
func TestGDBStepiOverPause(t *testing.T) {
	testenv.NeedQEMU(t)
	testenv.NeedTools(t, "gdb")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	sys := elfSymbol(t, "user_syscall_insn")
	inst := startKernel(t, ctx, "")
	ln, err := Listen("")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan served, 1)
	go func() {
		tr, err := Serve(ctx, ln, Config{To: inst.GDBAddr})
		done <- served{tr, err}
	}()
	out := gdbBatch(t, ctx, ln.Target, []string{fmt.Sprintf("hbreak *%#x", sys), "continue",
		"set {unsigned char[3]}$pc = {0xf3, 0x90, 0x90}", "stepi", "p/x $pc", "delete", "detach"})
	r := wait(t, done)
	if r.err != nil {
		t.Fatalf("proxy: %v", r.err)
	}
	if !strings.Contains(out, fmt.Sprintf("$1 = %#x", sys+3)) {
		t.Logf("gdb's stepi over the pause did not end past the nop (QEMU no longer runs on?):\n%s", out)
	}
	tr := r.t
	if tr == nil || tr.Len() != 1 {
		t.Fatalf("trace %v, want the one pause step", tr)
	}
	s := tr.Step(0)
	if s.Op != x86asm.PAUSE || uint64(s.RIP) != sys || len(s.Changed) != 0 {
		t.Errorf("step 0: %v at %#x changing %v, want a pause at %#x changing nothing", s.Op, uint64(s.RIP), s.Changed, sys)
	}
	for _, e := range s.Effects {
		if e.Verdict == annotate.Finding || e.Event == annotate.EventException {
			t.Errorf("step 0: %s", e.Text)
		}
	}
	if strings.Contains(out, fmt.Sprintf("$1 = %#x", sys+3)) {
		if g, ok := tr.GapAt(1); !ok || !strings.Contains(g.What, "pause") {
			t.Errorf("gap after the pause: %+v, want one saying the step ran on", g)
		}
	}
}

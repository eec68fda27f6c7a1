package session

import (
	"context"
	"errors"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/qemu"
	"github.com/sctrace/sctrace/x86"
)

// TestQEMUReleases runs the teaching kernel's five ways in and a Linux
// getpid round trip on each QEMU release sctrace is tested on: the
// system's (Debian 12's 7.2) and QEMU 10.0 fetched by scripts/fetch-qemu.sh.
// Each round trip must pass the same checks as on the default QEMU, the
// monitor must answer `info registers` with the GDT, IDT and TSS where the
// kernel's ELF symbols put them, and the release's own name for the
// instruction-per-block monitor command must work while the other name is
// refused. The teaching kernel's paths must be the same instructions on
// both releases.
func TestQEMUReleases(t *testing.T) {
	testenv.NeedQEMU(t)
	sys, err := exec.LookPath(qemu.BinaryName)
	if err != nil {
		t.Fatal(err)
	}
	releases := []struct {
		name string
		bin  func(testing.TB) string
	}{
		{"system", func(testing.TB) string { return sys }},
		{"10.0", testenv.QEMU10},
	}
	paths := map[string]map[mechanism.Mechanism][]uint64{} // release -> mechanism -> RIPs
	for _, rel := range releases {
		t.Run(rel.name, func(t *testing.T) {
			bin := rel.bin(t)
			r, err := qemu.Check(context.Background(), bin)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %s", bin, r.Banner)
			paths[rel.name] = map[mechanism.Mechanism][]uint64{}
			for _, m := range fixtureMechanisms {
				t.Run(string(m.mech), func(t *testing.T) {
					s := startFixture(t, Options{QEMU: bin, Mechanism: m.mech})
					ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
					defer cancel()
					tr, err := s.RoundTrip(ctx, m.mech)
					if err != nil {
						t.Fatal(err)
					}
					checkFixtureRoundTrip(t, s, tr, m.mech, m.first, m.entry, m.last)
					var rips []uint64
					for _, st := range tr.All() {
						rips = append(rips, uint64(st.RIP))
					}
					paths[rel.name][m.mech] = rips
					t.Logf("%s on %s: %d instructions", m.mech, r, tr.Len())
				})
			}
			t.Run("monitor", func(t *testing.T) {
				s := startFixture(t, Options{QEMU: bin, Mechanism: mechanism.Syscall})
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := s.ToEntry(ctx, mechanism.Syscall); err != nil {
					t.Fatal(err)
				}
				checkMonitor(ctx, t, s, r)
			})
			t.Run("linux", func(t *testing.T) {
				kernel := testenv.LinuxKernel(t, "6.1")
				ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
				defer cancel()
				s, err := StartLinux(ctx, LinuxOptions{Options: Options{QEMU: bin, Accel: "tcg", Mechanism: mechanism.Syscall}, Kernel: kernel})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				tr, err := s.RoundTrip(ctx, mechanism.Syscall)
				if err != nil {
					t.Fatal(err)
				}
				checkLinuxTrace(t, tr, []string{"entry_SYSCALL_64"}, "sysretq", []byte{0x0f, 0x05})
				t.Logf("%s getpid on %s: %d instructions", s.Kernel, r, tr.Len())
			})
		})
	}
	a, b := paths[releases[0].name], paths[releases[1].name]
	if len(a) == 0 || len(b) == 0 {
		return // one release did not run: nothing to compare
	}
	for _, m := range fixtureMechanisms {
		if pa, pb := a[m.mech], b[m.mech]; pa != nil && pb != nil && !slices.Equal(pa, pb) {
			t.Errorf("%s: %d instructions on the system QEMU, %d on QEMU 10.0: the releases trace different paths", m.mech, len(pa), len(pb))
		}
	}
}

// checkMonitor checks the monitor commands sctrace relies on at a stop in
// the teaching kernel: `info registers` parses, and its GDT, IDT and TR
// bases are the kernel's gdt, idt and tss symbols; and r's
// instruction-per-block command is accepted while the other release's
// name is refused with ErrUnknownCommand.
func checkMonitor(ctx context.Context, t *testing.T, s *Session, r qemu.Release) {
	t.Helper()
	text, err := s.Conn.Monitor(ctx, "info registers")
	if err != nil {
		t.Fatal(err)
	}
	sr, err := x86.ParseInfoRegisters(text)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		got  uint64
	}{{"gdt", sr.GDTBase}, {"idt", sr.IDTBase}, {"tss", sr.TR().Base}} {
		if want, ok := s.Symbols.Addr(c.name); !ok || c.got != want {
			t.Errorf("info registers: %s base %#x, want the symbol %s %#x", c.name, c.got, c.name, want)
		}
	}
	if sr.CPL != 3 {
		t.Errorf("info registers at the user syscall: CPL %d, want 3", sr.CPL)
	}
	other := qemu.Release{Major: 8, Minor: 1}
	if !r.Less(other) {
		other = qemu.Release{Major: 7, Minor: 2}
	}
	if _, err := s.Conn.Monitor(ctx, r.OneInsnPerTBCommand(false)); err != nil {
		t.Errorf("QEMU %s: %v", r, err)
	}
	if _, err := s.Conn.Monitor(ctx, other.OneInsnPerTBCommand(false)); !errors.Is(err, gdbremote.ErrUnknownCommand) {
		t.Errorf("QEMU %s: %q = %v, want ErrUnknownCommand", r, other.OneInsnPerTBCommand(false), err)
	}
}

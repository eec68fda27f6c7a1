package target

import (
	"errors"
	"strings"
	"testing"

	"github.com/sctrace/sctrace/gdbremote/gdbstubtest"
	"github.com/sctrace/sctrace/internal/testenv"
)

// TestFollowMissingCPU checks the errors for a vCPU thread the stub does
// not list and for one it listed but then refuses. The thread list and the
// E22 refusal copy QEMU 7.2 and 10.0.2 with -smp 2 ("mp01.01,p01.02",
// then "l"; "Hgp01.05" answered E22).
func TestFollowMissingCPU(t *testing.T) {
	stub := gdbstubtest.New(t)
	stub.Inject(gdbstubtest.Fault{Kind: gdbstubtest.Reply, Match: "qfThreadInfo", Reply: "mp01.01,p01.02"})
	ctx, conn := testenv.DialStub(t, stub)
	tg := New(conn)
	cpus, err := tg.ListCPUs(ctx)
	if err != nil || len(cpus) != 2 || cpus[1].Index != 1 || cpus[1].Thread != "p01.02" {
		t.Fatalf("ListCPUs = %v, %v; want vCPUs 0 and 1", cpus, err)
	}
	if err := tg.Follow(ctx, "p01.01"); err != nil {
		t.Fatal(err)
	}
	if c, ok := tg.Followed(); !ok || c.Index != 0 {
		t.Errorf("Followed = %v, %v; want vCPU 0", c, ok)
	}

	err = tg.Follow(ctx, "p01.05")
	if !errors.Is(err, ErrNoCPU) || !strings.Contains(err.Error(), "the stub has no thread p01.05 (its vCPUs are p01.01, p01.02)") {
		t.Errorf("Follow of an unlisted thread: %v", err)
	}
	stub.Inject(gdbstubtest.Fault{Kind: gdbstubtest.Reply, Match: "Hgp01.02", Reply: "E22"})
	err = tg.Follow(ctx, "p01.02")
	if !errors.Is(err, ErrNoCPU) || !strings.Contains(err.Error(), "the vCPU went away") {
		t.Errorf("Follow of a thread the stub refuses: %v", err)
	}
	if c, _ := tg.Followed(); c.Thread != "p01.01" {
		t.Errorf("after a failed Follow the target follows %v; want p01.01 still", c)
	}
	stub.Inject(gdbstubtest.Fault{Kind: gdbstubtest.Reply, Match: "Hgp01.02", Reply: "E22"})
	if _, err := tg.Peek(ctx, "p01.02"); !errors.Is(err, ErrNoCPU) {
		t.Errorf("Peek of a thread the stub refuses: %v", err)
	}
}

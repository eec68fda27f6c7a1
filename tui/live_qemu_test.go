package tui

import (
	"context"
	"testing"
	"time"

	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/mechanism"
	"github.com/sctrace/sctrace/session"
	"github.com/sctrace/sctrace/trace"
)

// TestLiveRoundTripCounts records a round trip of the teaching kernel with
// the live driver, as R does: the progress it reported counts every step
// the recording holds, and the round trip still ends back in user mode.
func TestLiveRoundTripCounts(t *testing.T) {
	testenv.NeedQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := session.StartFixture(ctx, session.Options{Accel: "tcg", Mechanism: mechanism.Syscall, StackWords: StackWords})
	if err != nil {
		t.Fatal(err)
	}
	d := NewLive(ctx, s, mechanism.Syscall)
	defer d.Close()
	why, err := d.RoundTrip(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if why != trace.StopUser {
		t.Errorf("round trip stopped with %q, want %q", why, trace.StopUser)
	}
	n := d.Trace().Len()
	if n == 0 || d.Recorded() != n {
		t.Errorf("progress counted %d steps, the recording holds %d", d.Recorded(), n)
	}
	t.Logf("round trip of %d steps, %d counted", n, d.Recorded())
}

package session

import (
	"context"
	"testing"
	"time"

	"github.com/sctrace/sctrace/internal/testenv"
	"github.com/sctrace/sctrace/mechanism"
)

func TestDbgLinuxLog(t *testing.T) {
	kernel := testenv.LinuxKernel(t, "6.1")
	ctx, cancel := context.WithTimeout(context.Background(), 250*time.Second)
	defer cancel()
	s, err := StartLinux(ctx, LinuxOptions{Options: Options{Accel: "tcg", Mechanism: mechanism.Syscall, Budget: 1000000}, Kernel: kernel})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	useLog(s)
	for k := 0; k < 15; k++ {
		t0 := time.Now()
		tr, err := s.RoundTrip(ctx, mechanism.Syscall)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%d steps stop %s irqs %d; %.3fs (%.3f busy), %.0f/s", tr.Len(), tr.Header.Stop, tr.Header.IRQs, time.Since(t0).Seconds(), tr.Header.Seconds, tr.Header.StepRate)
		if tr.Len() > 500000 {
			break
		}
	}
}

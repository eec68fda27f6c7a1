package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sctrace/sctrace/internal/scratch"
	"github.com/sctrace/sctrace/qemu"
)

// MaxGuestIters is the most samples per series the teaching kernel takes.
const MaxGuestIters = 20000

// GuestConfig describes one bench run of the teaching kernel under QEMU.
type GuestConfig struct {
	// Kernel is the teaching kernel's ELF image; KernelPath names a file
	// holding it instead. One of them is required.
	Kernel     []byte
	KernelPath string
	QEMU       string // QEMU binary; "" finds it on $PATH
	Accel      string // "tcg" (also "") or "kvm"
	AccelNote  string // why that accelerator
	CPU        string // -cpu; "" means qemu.DefaultCPU
	Iters      int    // samples per series, 1..MaxGuestIters
	// Serial, when set, receives a copy of the guest's serial output.
	Serial io.Writer
	// OnSeries, when set, is called as each series completes.
	OnSeries func(*GuestSeries)
}

// GuestRun is the outcome of RunGuest.
type GuestRun struct {
	Output      *GuestOutput
	Accel       string // the accelerator used
	AccelNote   string // why
	CPU         string // the -cpu model
	CommandLine string
	Exit        qemu.Exit
	Elapsed     time.Duration
	// Interrupted is true when ctx ended the run before the guest finished;
	// Output then holds what had been measured.
	Interrupted bool
}

// RunGuest boots the teaching kernel with "bench iters=N" on its command
// line, parses its serial output as it arrives and waits for the guest to
// end QEMU through isa-debug-exit. When ctx ends first, QEMU is stopped
// and the partial output returned with Interrupted set.
func RunGuest(ctx context.Context, cfg GuestConfig) (*GuestRun, error) {
	if cfg.Iters < 1 || cfg.Iters > MaxGuestIters {
		return nil, fmt.Errorf("guest iterations %d out of range 1..%d", cfg.Iters, MaxGuestIters)
	}
	path := cfg.KernelPath
	if path == "" {
		if len(cfg.Kernel) == 0 {
			return nil, errors.New("no teaching kernel image given")
		}
		dir, err := scratch.Dir("bench-")
		if err != nil {
			return nil, fmt.Errorf("temporary directory for the kernel image: %w", err)
		}
		defer os.RemoveAll(dir)
		path = filepath.Join(dir, "sctrace-kernel.elf")
		if err := os.WriteFile(path, cfg.Kernel, 0o644); err != nil {
			return nil, fmt.Errorf("write kernel image: %w", err)
		}
	}

	pr, pw := io.Pipe()
	var serial io.Writer = pw
	if cfg.Serial != nil {
		serial = io.MultiWriter(pw, cfg.Serial)
	}
	cpu := cfg.CPU
	if cpu == "" {
		cpu = qemu.DefaultCPU
	}
	start := time.Now()
	inst, err := qemu.Start(ctx, qemu.Config{
		Binary:     cfg.QEMU,
		Kernel:     path,
		Append:     fmt.Sprintf("bench iters=%d", cfg.Iters),
		Accel:      cfg.Accel,
		AccelNote:  cfg.AccelNote,
		CPU:        cpu,
		ExitDevice: true,
		Serial:     serial,
	})
	if err != nil {
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	defer inst.Stop()

	p := Parser{OnSeries: cfg.OnSeries}
	var (
		parseErr error
		wg       sync.WaitGroup
	)
	wg.Go(func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if parseErr == nil {
				parseErr = p.Line(sc.Text())
			}
		}
		// Drain whatever is left so QEMU never blocks on a full pipe.
		_, _ = io.Copy(io.Discard, pr)
	})

	run := &GuestRun{Accel: inst.Accel, AccelNote: inst.Note, CPU: cpu, CommandLine: inst.CommandLine()}
	// A generous bound: a TCG run of MaxGuestIters takes well under a
	// minute on a slow machine.
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	exit, werr := inst.WaitContext(wctx)
	// Waiting for QEMU to exit means its stdout writer is done: exec
	// copies the child's output until EOF before Wait returns.
	pw.Close()
	wg.Wait()
	run.Exit, run.Elapsed, run.Output = exit, time.Since(start), p.Output()

	switch {
	case werr != nil && ctx.Err() != nil:
		run.Interrupted = true
		return run, nil
	case werr != nil:
		return run, fmt.Errorf("teaching kernel bench: %w (qemu: %s)", werr, inst.StderrTail())
	case parseErr != nil:
		return run, parseErr
	case !exit.DebugExit || exit.Code != 0:
		return run, fmt.Errorf("teaching kernel bench ended with %s, want guest exit code 0 (qemu: %s)", exit, inst.StderrTail())
	case !run.Output.Done:
		return run, errors.New("teaching kernel exited without printing \"bench done\"")
	}
	return run, nil
}

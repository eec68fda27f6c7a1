package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/sctrace/sctrace/bench"
	"github.com/sctrace/sctrace/fixtures/kernel"
	"github.com/sctrace/sctrace/internal/outfile"
)

func newBenchCmd() *cobra.Command {
	var (
		target  string
		accel   string
		iters   int
		asJSON  bool
		svgFile string
		qbin    string
		cpu     string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Time the round trip of each way into the kernel",
		Long: `bench measures how many TSC ticks a round trip into the kernel costs, per
entry mechanism.

In the teaching kernel under QEMU: int 0x80 + iretq, a call gate + lretq,
sysenter + sysexitq, syscall + sysretq, ud2 (#UD) + iretq and a vDSO-style
read that enters no kernel; each as the bare hardware round trip and as the
full entry path, plus the syscall path built up one part at a time.

On the host, natively (Linux on x86-64): syscall getpid, an invalid system
call number, int $0x80 getpid where the kernel allows it, and the vDSO's
clock_gettime.

Each series reports N, min, median with a bootstrap 95% interval, mean, p90,
p99 and MAD, in TSC ticks and ns, beside figures from the literature. The
environment block says where the numbers come from; numbers taken under
QEMU's TCG are emulation cost, not hardware. ctrl-c stops and prints what
was measured.`,
		Example: `  sctrace bench
  sctrace bench --target host --iters 20000
  sctrace bench --json > bench.json --svg bench.svg`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := bench.Config{Iters: iters, Kernel: kernel.ELF, QEMU: qbin, Accel: accel, CPU: cpu}
			switch target {
			case "all":
			case bench.TargetFixture, bench.TargetHost:
				cfg.Targets = []string{target}
			default:
				return fmt.Errorf("--target %q: want fixture, host or all", target)
			}
			if svgFile != "" {
				if err := outfile.Check(svgFile); err != nil {
					return fmt.Errorf("--svg %w", err)
				}
			}
			progress, clear := bench.ProgressBar(cmd.ErrOrStderr())
			cfg.Progress = progress
			rep, err := bench.Run(cmd.Context(), cfg)
			clear()
			if rep == nil {
				return err
			}
			if asJSON {
				if werr := bench.WriteJSON(cmd.OutOrStdout(), rep); werr != nil {
					return werr
				}
			} else if werr := bench.WriteText(cmd.OutOrStdout(), rep); werr != nil {
				return werr
			}
			if svgFile != "" {
				if werr := outfile.Save(svgFile, "sctrace-bench-*.svg", func(w io.Writer) error { return bench.WriteSVG(w, rep) }); werr != nil {
					return fmt.Errorf("--svg: %w", werr)
				}
			}
			if err != nil {
				return err
			}
			if rep.Interrupted {
				return errors.New("interrupted; the report holds what was measured")
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&target, "target", "all", "what to measure: fixture (the teaching kernel under QEMU), host, or all")
	accelFlag(fl, &accel)
	fl.IntVar(&iters, "iters", bench.DefaultIters, fmt.Sprintf("samples per series (the teaching kernel takes at most %d)", bench.MaxGuestIters))
	fl.BoolVar(&asJSON, "json", false, "print the report as JSON, raw samples included")
	fl.StringVar(&svgFile, "svg", "", "also write a plot of the distributions to this SVG file")
	fl.StringVar(&qbin, "qemu", "", "QEMU binary to run (default: qemu-system-x86_64 on $PATH)")
	fl.StringVar(&cpu, "cpu", "", "guest CPU model (default qemu64,vendor=GenuineIntel)")
	return cmd
}

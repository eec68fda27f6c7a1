package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/sctrace/sctrace/session"
	"github.com/sctrace/sctrace/target"
)

// stubFlags are the flags every command that talks to a gdbstub shares.
type stubFlags struct {
	wireLog string
	timeout time.Duration
}

func (f *stubFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.wireLog, "wire-log", "", "record every RSP packet sent and received to `FILE`")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 5*time.Second, "deadline for each exchange with the stub")
}

// openWireLog opens --wire-log, if given, into o. The returned function
// closes it; a failed close is a failed write of the log.
func (f *stubFlags) openWireLog(o *session.Options) (closeLog func() error, err error) {
	if f.wireLog == "" {
		return func() error { return nil }, nil
	}
	logf, err := os.Create(f.wireLog)
	if err != nil {
		return nil, fmt.Errorf("wire log: %w", err)
	}
	o.WireLog = logf
	return func() error {
		if err := logf.Close(); err != nil {
			return fmt.Errorf("wire log: %w", err)
		}
		return nil
	}, nil
}

// closeInto runs closeFn and joins its error to *errp: deferred, it makes
// a failed close the command's failure.
func closeInto(errp *error, closeFn func() error) {
	*errp = errors.Join(*errp, closeFn())
}

func newProbeCmd() *cobra.Command {
	var sf stubFlags
	var resume bool
	cmd := &cobra.Command{
		Use:   "probe HOST:PORT",
		Short: "Check the connection to a gdbstub and print what it exposes",
		Long: `probe attaches to a gdbstub (QEMU started with -s or -gdb tcp::PORT), and
prints the stub's features, a summary of its register layout, the current
rip, cs, cr3, gs_base, k_gs_base and efer, and the text of
'monitor info registers'. It sets no breakpoint and writes nothing.

Attaching stops the guest, as it does for gdb. probe closes the connection
and leaves the guest stopped; with --resume it detaches instead, which lets
the guest run on.

The address may be HOST:PORT, :PORT (loopback) or unix:/path/to/socket.`,
		Example: "  qemu-system-x86_64 -s -S -display none &\n  sctrace probe :1234",
		Args:    oneArg("the stub's address (HOST:PORT, :PORT or unix:PATH)"),
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			o := session.Options{Timeout: sf.timeout}
			closeLog, err := sf.openWireLog(&o)
			if err != nil {
				return err
			}
			defer closeInto(&err, closeLog)
			conn, err := session.Dial(cmd.Context(), args[0], o)
			if err != nil {
				return err
			}
			defer conn.Close()
			if err := target.New(conn).WriteReport(cmd.Context(), cmd.OutOrStdout()); err != nil {
				return err
			}
			if resume {
				return conn.Detach(cmd.Context())
			}
			return nil
		},
	}
	sf.register(cmd)
	cmd.Flags().BoolVar(&resume, "resume", false, "detach at the end so the guest runs on")
	return cmd
}

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sctrace/sctrace/gdbremote"
	"github.com/sctrace/sctrace/internal/termtext"
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

// openWireLog opens --wire-log, if given, into o; the returned function
// closes it.
func (f *stubFlags) openWireLog(o *session.Options) (func(), error) {
	if f.wireLog == "" {
		return func() {}, nil
	}
	logf, err := os.Create(f.wireLog)
	if err != nil {
		return nil, fmt.Errorf("wire log: %w", err)
	}
	o.WireLog = logf
	return func() { logf.Close() }, nil
}

// dial connects to a gdbstub at addr ("host:port", ":port" or
// "unix:/path"). The returned closer closes the connection and the wire log.
func (f *stubFlags) dial(ctx context.Context, addr string) (*gdbremote.Conn, func(), error) {
	opts := []gdbremote.Option{gdbremote.WithTimeout(f.timeout)}
	var logf *os.File
	if f.wireLog != "" {
		var err error
		logf, err = os.Create(f.wireLog)
		if err != nil {
			return nil, nil, fmt.Errorf("wire log: %w", err)
		}
		opts = append(opts, gdbremote.WithWireLog(logf))
	}
	dctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	conn, err := gdbremote.Dial(dctx, addr, opts...)
	if err != nil {
		if logf != nil {
			logf.Close()
		}
		return nil, nil, fmt.Errorf("attach %s: %w", addr, err)
	}
	return conn, func() {
		conn.Close()
		if logf != nil {
			logf.Close()
		}
	}, nil
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
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, closeConn, err := sf.dial(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer closeConn()
			if err := probe(cmd.Context(), cmd.OutOrStdout(), conn); err != nil {
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

// probe prints what the stub exposes. Every string the stub sent (feature
// names, register names, monitor output) goes through termtext: a stub is
// not trusted to send text that is safe on a terminal.
func probe(ctx context.Context, w io.Writer, conn *gdbremote.Conn) error {
	fmt.Fprintln(w, "Stub features:")
	feats := conn.Features()
	keys := make([]string, 0, len(feats))
	for k := range feats {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %s=%s\n", termtext.Line(k), termtext.Line(feats[k]))
	}

	layout := conn.Layout()
	byFeature := map[string][]string{}
	var order []string
	total := 0
	for _, r := range layout {
		if _, ok := byFeature[r.Feature]; !ok {
			order = append(order, r.Feature)
		}
		byFeature[r.Feature] = append(byFeature[r.Feature], termtext.Line(r.Name))
		total += r.Bitsize / 8
	}
	fmt.Fprintf(w, "\nRegister layout: %d registers, %d bytes in a 'g' reply\n", len(layout), total)
	for _, f := range order {
		names := byFeature[f]
		shown := names
		if len(shown) > 12 {
			shown = append(append([]string{}, shown[:12]...), fmt.Sprintf("... (%d more)", len(names)-12))
		}
		fmt.Fprintf(w, "  %s: %s\n", termtext.Line(f), strings.Join(shown, " "))
	}

	tg := target.New(conn)
	st, err := tg.State(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "\nCurrent state:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	show := func(r target.Reg, decode func(uint64) string) {
		v, ok := st.Get(r)
		if !ok {
			fmt.Fprintf(tw, "  %s\tunknown (not sent by the stub)\t\n", r)
			return
		}
		d := ""
		if decode != nil {
			d = decode(v)
		}
		fmt.Fprintf(tw, "  %s\t0x%016x\t%s\n", r, v, d)
	}
	show(target.RIP, nil)
	show(target.CS, func(v uint64) string {
		if st.Val(target.CR0)&1 == 0 {
			return "real mode (CR0.PE clear): a segment, not a selector"
		}
		return target.Selector(v).String() + fmt.Sprintf(", CPL %d", st.CPL())
	})
	show(target.CR3, func(v uint64) string {
		return target.CR3Fields{Value: v, PCIDE: st.Val(target.CR4)&target.CR4PCIDE != 0}.String()
	})
	show(target.GSBase, nil)
	show(target.KernelGSBase, nil)
	show(target.EFER, func(v uint64) string { return target.EFERFlags(v).String() })
	tw.Flush()

	text, err := conn.Monitor(ctx, "info registers")
	if err != nil {
		return fmt.Errorf("monitor info registers: %w", err)
	}
	text = termtext.Text(text)
	fmt.Fprintf(w, "\nmonitor info registers:\n%s", text)
	if !strings.HasSuffix(text, "\n") {
		fmt.Fprintln(w)
	}
	return nil
}

package target

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/sctrace/sctrace/internal/termtext"
	"github.com/sctrace/sctrace/x86"
)

// maxNamesShown is how many register names WriteReport lists per target
// description feature before it gives the count of the rest.
const maxNamesShown = 12

// WriteReport writes to w what the stub exposes: its qSupported features,
// a summary of its register layout by target description feature, the
// current RIP, CS, CR3, GS bases and EFER with their decodings, and the
// text of "monitor info registers". It sets no breakpoint and writes
// nothing to the guest.
//
// Every string the stub sent (feature names, register names, monitor
// output) goes through termtext: a stub is not trusted to send text that
// is safe on a terminal.
func (t *Target) WriteReport(ctx context.Context, w io.Writer) error {
	fmt.Fprintln(w, "Stub features:")
	feats := t.Conn.Features()
	for _, k := range slices.Sorted(maps.Keys(feats)) {
		fmt.Fprintf(w, "  %s=%s\n", termtext.Line(k), termtext.Line(feats[k]))
	}

	layout := t.Conn.Layout()
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
		if len(shown) > maxNamesShown {
			shown = append(slices.Clone(shown[:maxNamesShown]), fmt.Sprintf("... (%d more)", len(names)-maxNamesShown))
		}
		fmt.Fprintf(w, "  %s: %s\n", termtext.Line(f), strings.Join(shown, " "))
	}

	st, err := t.State(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "\nCurrent state:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	show := func(r x86.Reg, decode func(uint64) string) {
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
	show(x86.RIP, nil)
	show(x86.CS, func(v uint64) string {
		if st.Val(x86.CR0)&1 == 0 {
			return "real mode (CR0.PE clear): a segment, not a selector"
		}
		return x86.Selector(v).String() + fmt.Sprintf(", CPL %d", st.CPL())
	})
	show(x86.CR3, func(v uint64) string {
		return x86.CR3Fields{Value: v, PCIDE: x86.CR4Flags(st.Val(x86.CR4))&x86.CR4PCIDE != 0}.String()
	})
	show(x86.GSBase, nil)
	show(x86.KernelGSBase, nil)
	show(x86.EFER, func(v uint64) string { return x86.EFERFlags(v).String() })
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write report: %w", err)
	}

	text, err := t.Conn.Monitor(ctx, "info registers")
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

package bench

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// ProgressBar returns a Progress function that redraws one status line on
// w, with a bar per target, when w is a terminal, and nil otherwise (so a
// redirected run prints nothing extra). Call the returned clear function
// before printing anything else to w.
func ProgressBar(w io.Writer) (progress func(Progress), clear func()) {
	f, ok := w.(*os.File)
	if !ok {
		return nil, func() {}
	}
	if st, err := f.Stat(); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return nil, func() {}
	}
	const width = 30
	drawn := false
	progress = func(p Progress) {
		n := 0
		if p.Total > 0 {
			n = p.Done * width / p.Total
		}
		fmt.Fprintf(f, "\r\x1b[K%-7s [%s%s] %d/%d %s", p.Target,
			strings.Repeat("█", n), strings.Repeat("░", width-n), p.Done, p.Total, p.Label)
		drawn = true
	}
	clear = func() {
		if drawn {
			fmt.Fprint(f, "\r\x1b[K")
			drawn = false
		}
	}
	return progress, clear
}

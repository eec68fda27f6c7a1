package bench

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
)

// svg layout, in pixels.
const (
	svgWidth   = 960
	svgLabelW  = 190
	svgRight   = 40
	svgRowH    = 26
	svgTitleH  = 28
	svgAxisH   = 34
	svgMaxDots = 400 // per series, drawn as a jittered strip
)

// WriteSVG draws the distribution of every measured series, one panel per
// target: a strip of samples (at most svgMaxDots, chosen at random with a
// fixed seed), a box from the 25th to the 75th percentile, the median as a
// bar, whiskers to the 1st and 99th percentiles, and a diamond for the
// literature anchor where there is one. The x axis is logarithmic when
// the values span more than a decade and a half.
func WriteSVG(w io.Writer, rep *Report) error {
	bw := bufio.NewWriter(w)
	var panels []*TargetResult
	height := 40
	for _, t := range rep.Targets {
		if n := countMeasured(t); n > 0 {
			panels = append(panels, t)
			height += svgTitleH + n*svgRowH + svgAxisH + 16
		}
	}
	fmt.Fprintf(bw, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		svgWidth, height, svgWidth, height)
	fmt.Fprintf(bw, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	text(bw, 10, 22, "start", "font-size=\"15\" font-weight=\"bold\"", "sctrace bench: round-trip cost per mechanism, TSC ticks")
	y := 40
	for _, t := range panels {
		y = svgPanel(bw, t, y)
	}
	fmt.Fprintln(bw, "</svg>")
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write bench SVG: %w", err)
	}
	return nil
}

func countMeasured(t *TargetResult) int {
	n := 0
	for _, s := range t.Series {
		if s.Measured() {
			n++
		}
	}
	return n
}

func svgPanel(bw *bufio.Writer, t *TargetResult, y int) int {
	title := t.Title
	if t.Emulated {
		title += ": emulation cost (TCG), not hardware"
	}
	text(bw, 10, y+18, "start", `font-weight="bold"`, title)
	y += svgTitleH
	var lo, hi int64 = math.MaxInt64, 1
	for _, s := range t.Series {
		if s.Measured() {
			hi = max(hi, s.Stats.Max)
			lo = min(lo, max(s.Stats.Min, 1))
			if s.Anchor != nil {
				hi = max(hi, int64(s.Anchor.Ticks))
			}
		}
	}
	plotW := svgWidth - svgLabelW - svgRight
	sc := newScale(lo, hi, plotW)
	if !sc.log {
		sc.hi = float64(hi) * 1.05
	}
	x := func(v float64) float64 {
		return float64(svgLabelW) + float64(sc.pos(int64(math.Round(v))))
	}
	top := y
	rng := rand.New(rand.NewPCG(1, 2))
	for _, s := range t.Series {
		if !s.Measured() {
			continue
		}
		cy := float64(y) + svgRowH/2
		text(bw, svgLabelW-8, int(cy)+4, "end", "", s.Mech+" "+s.Path)
		sorted := slices.Clone(s.Samples)
		slices.Sort(sorted)
		// Strip of samples.
		dots := sorted
		if len(dots) > svgMaxDots {
			dots = make([]int64, svgMaxDots)
			for i := range dots {
				dots[i] = sorted[rng.IntN(len(sorted))]
			}
		}
		for _, v := range dots {
			fmt.Fprintf(bw, `<circle cx="%.1f" cy="%.1f" r="1.5" fill="#4878a8" fill-opacity="0.35"/>`+"\n",
				x(float64(v)), cy+(rng.Float64()-0.5)*(svgRowH-8))
		}
		p := func(q float64) float64 { return x(float64(Percentile(sorted, q))) }
		// Whiskers p1..p99, box p25..p75, median bar.
		fmt.Fprintf(bw, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`+"\n", p(1), cy, p(99), cy)
		fmt.Fprintf(bw, `<rect x="%.1f" y="%.1f" width="%.1f" height="%d" fill="none" stroke="#333"/>`+"\n",
			p(25), cy-7, math.Max(p(75)-p(25), 1), 14)
		fmt.Fprintf(bw, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#c03020" stroke-width="3"/>`+"\n",
			p(50), cy-9, p(50), cy+9)
		if s.Anchor != nil {
			ax := x(s.Anchor.Ticks)
			fmt.Fprintf(bw, `<path d="M%.1f %.1f l5 5 l-5 5 l-5 -5 z" fill="#e0a000"><title>%s</title></path>`+"\n",
				ax, cy-5, escape(fmt.Sprintf("anchor %g ticks: %s", s.Anchor.Ticks, s.Anchor.Source)))
		}
		y += svgRowH
	}
	// Axis.
	fmt.Fprintf(bw, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>`+"\n", svgLabelW, y+2, svgLabelW+plotW, y+2)
	var ticks []float64
	if sc.log {
		for v := sc.lo; v <= sc.hi*1.0001; v *= 10 {
			ticks = append(ticks, v)
		}
	} else {
		for i := 0; i <= 4; i++ {
			ticks = append(ticks, sc.hi*float64(i)/4)
		}
	}
	for _, v := range ticks {
		tx := x(v)
		fmt.Fprintf(bw, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ccc"/>`+"\n", tx, top, tx, y+6)
		text(bw, int(tx), y+18, "middle", "", humanTicks(math.Round(v)))
	}
	text(bw, svgLabelW+plotW, y+32, "end", `fill="#555"`,
		fmt.Sprintf("%s scale; box p25-p75, red bar median, whiskers p1-p99, diamond: literature anchor", sc.kind()))
	return y + svgAxisH + 16
}

func text(bw *bufio.Writer, x, y int, anchor, attrs, s string) {
	fmt.Fprintf(bw, `<text x="%d" y="%d" text-anchor="%s" %s>%s</text>`+"\n", x, y, anchor, attrs, escape(s))
}

func escape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

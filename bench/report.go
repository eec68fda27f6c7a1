package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/sctrace/sctrace/internal/termtext"
)

// WriteJSON writes rep as indented JSON, raw samples included.
func WriteJSON(w io.Writer, rep *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return fmt.Errorf("write bench report as JSON: %w", err)
	}
	return nil
}

// WriteText writes rep for a terminal: the environment, then per target a
// table, the syscall breakdown where there is one, and a bar chart of the
// medians.
func WriteText(w io.Writer, rep *Report) error {
	tw := &textWriter{w: w}
	tw.line("sctrace bench: round-trip cost of each way into the kernel, in TSC ticks")
	if rep.Interrupted {
		tw.line("INTERRUPTED: what follows is what was measured before the interrupt.")
	}
	tw.line("")
	writeEnv(tw, rep.Env)
	for _, t := range rep.Targets {
		tw.line("")
		writeTarget(tw, t, rep.Env)
	}
	return tw.err
}

type textWriter struct {
	w   io.Writer
	err error
}

func (t *textWriter) line(format string, args ...any) {
	if t.err != nil {
		return
	}
	if len(args) == 0 {
		_, t.err = io.WriteString(t.w, format+"\n")
		return
	}
	_, t.err = fmt.Fprintf(t.w, format+"\n", args...)
}

func writeEnv(tw *textWriter, e *Environment) {
	if e == nil {
		return
	}
	kv := func(k, v string) { tw.line("  %-14s %s", k, v) }
	tw.line("Environment")
	cpu := fmt.Sprintf("%s, %d CPUs", e.HostCPU, e.HostCPUs)
	if e.HostHypervisor {
		cpu += "; CPUID hypervisor bit set: the host is itself a virtual machine"
	}
	kv("host CPU", cpu)
	kv("host kernel", e.HostKernel)
	kv("PTI", e.PTI)
	var notAffected int
	first := true
	for _, v := range e.Mitigations {
		if v.Status == "Not affected" {
			notAffected++
			continue
		}
		k := ""
		if first {
			k, first = "mitigations", false
		}
		kv(k, v.Name+": "+v.Status)
	}
	if notAffected > 0 {
		k := ""
		if first {
			k = "mitigations"
		}
		kv(k, fmt.Sprintf("(%d more: Not affected)", notAffected))
	}
	kv("int $0x80", e.IA32Emulation)
	t := e.TSC
	if t.MHz > 0 {
		s := fmt.Sprintf("%.1f MHz, %s", t.MHz, t.Source)
		if t.CPUInfoMHz > 0 {
			s += fmt.Sprintf(" (/proc/cpuinfo: %.3f MHz)", t.CPUInfoMHz)
		}
		kv("TSC", s)
	} else {
		kv("TSC", "frequency unknown ("+t.Source+"): ns are not shown")
	}
	inv := "no"
	if t.Invariant {
		inv = "yes"
	}
	rd := "no (windows close with lfence;rdtsc)"
	if t.RDTSCP {
		rd = "yes"
	}
	kv("", fmt.Sprintf("invariant: %s (%s); RDTSCP: %s", inv, t.InvariantSource, rd))
	if t.Granularity > 1 {
		kv("", fmt.Sprintf("every TSC difference seen was a multiple of %d ticks", t.Granularity))
	}
	if g := e.GuestTSCGranularity; g > 1 {
		s := fmt.Sprintf("every guest TSC difference was a multiple of %d ticks", g)
		if g == t.Granularity {
			s += ", as on the host: the guest reads the host's counter"
		}
		kv("", s)
	}
	kv("QEMU", e.QEMU)
	if e.Accel != "" {
		kv("accelerator", e.AccelNote)
	}
	kv("KVM", e.KVM)
	if e.GuestCPUModel != "" {
		kv("guest -cpu", e.GuestCPUModel)
	}
	if g := e.Guest; g != nil {
		s := fmt.Sprintf("vendor %s, hypervisor signature %s, timer %s", g.Vendor, g.Hypervisor, g.Timer)
		if g.TCG() {
			s += ": TCG, so guest numbers are emulation cost, not hardware"
		}
		kv("guest CPUID", s)
	}
	kv("Go", e.GoVersion)
}

func writeTarget(tw *textWriter, t *TargetResult, env *Environment) {
	title := t.Title
	if t.Emulated {
		title += ": EMULATION COST (TCG), NOT HARDWARE"
	}
	tw.line("%s", title)
	tw.line("%s", strings.Repeat("=", utf8.RuneCountInString(title)))
	if t.Error != "" {
		tw.line("  error: %s", t.Error)
	}
	mhz := 0.0
	if env != nil {
		mhz = env.TSC.MHz
	}
	writeTable(tw, t, mhz)
	if t.Name == TargetFixture {
		writeBreakdown(tw, t)
	}
	writeChart(tw, t)
	writeNotes(tw, t)
}

// ratioBase returns the series a ratio "×syscall" is taken against: on
// the host the syscall getpid; in the guest the syscall series of the same
// path (bare against bare, each breakdown step against itself), and the
// full syscall path for a path syscall has not.
func ratioBase(t *TargetResult, s *Series) *Series {
	if t.Name == TargetHost {
		return t.Find("syscall", "getpid")
	}
	if b := t.Find("syscall", s.Path); b != nil {
		return b
	}
	return t.Find("syscall", "full")
}

func writeTable(tw *textWriter, t *TargetResult, mhz float64) {
	header := []string{"series", "N", "min", "median", "95% CI", "mean", "p90", "p99", "MAD", "base", "median ns", "×syscall", "anchor"}
	rows := [][]string{header}
	var missing []string
	sources := anchorSources(t)
	for _, s := range t.Series {
		name := s.Mech + " " + s.Path
		if !s.Measured() {
			missing = append(missing, fmt.Sprintf("  %-18s not measured: %s", name, s.Reason))
			continue
		}
		st := s.Stats
		ns := "-"
		if mhz > 0 {
			ns = fmt.Sprintf("%.1f", float64(st.Median)*1000/mhz)
		}
		ratio := "-"
		if b := ratioBase(t, s); b != nil && b.Measured() && b.Stats.Median > 0 {
			ratio = formatRatio(float64(st.Median) / float64(b.Stats.Median))
		}
		anchor := ""
		if s.Anchor != nil {
			anchor = fmt.Sprintf("%g [%d]", s.Anchor.Ticks, sources[s.Anchor.Source])
		}
		if s.Status == StatusPartial {
			name += " (partial)"
		}
		rows = append(rows, []string{
			name, fmt.Sprint(st.N), fmt.Sprint(st.Min), fmt.Sprint(st.Median),
			fmt.Sprintf("%d..%d", st.CILow, st.CIHigh), fmt.Sprintf("%.1f", st.Mean),
			fmt.Sprint(st.P90), fmt.Sprint(st.P99), fmt.Sprint(st.MAD), fmt.Sprint(s.Baseline),
			ns, ratio, anchor,
		})
	}
	if len(rows) > 1 {
		for _, r := range formatColumns(rows) {
			tw.line("  %s", r)
		}
	}
	for _, m := range missing {
		tw.line("%s", m)
	}
	if len(sources) > 0 {
		list := make([]string, len(sources))
		for src, i := range sources {
			list[i-1] = fmt.Sprintf("  [%d] %s", i, src)
		}
		tw.line("  anchors (TSC ticks, from the literature):")
		for _, l := range list {
			tw.line("  %s", l)
		}
	}
}

// anchorSources numbers the distinct anchor sources of t from 1.
func anchorSources(t *TargetResult) map[string]int {
	m := map[string]int{}
	for _, s := range t.Series {
		if s.Anchor != nil && s.Measured() {
			if _, ok := m[s.Anchor.Source]; !ok {
				m[s.Anchor.Source] = len(m) + 1
			}
		}
	}
	return m
}

// formatColumns pads rows into aligned columns: the first left-aligned,
// the rest right-aligned.
func formatColumns(rows [][]string) []string {
	var width []int
	for _, r := range rows {
		for i, c := range r {
			if i >= len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	out := make([]string, len(rows))
	for j, r := range rows {
		var b strings.Builder
		for i, c := range r {
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
			switch {
			case i == 0:
				b.WriteString(c + pad)
			default:
				b.WriteString("  " + pad + c)
			}
		}
		out[j] = strings.TrimRight(b.String(), " ")
	}
	return out
}

func writeBreakdown(tw *textWriter, t *TargetResult) {
	rows := [][]string{{"syscall path", "median", "95% CI", "added by this part"}}
	var prev *Series
	for _, p := range BreakdownPaths {
		s := t.Find("syscall", p)
		if s == nil || !s.Measured() {
			rows = append(rows, []string{p, "-", "-", "not measured"})
			prev = nil
			continue
		}
		added := ""
		if prev != nil {
			added = fmt.Sprintf("%+d", s.Stats.Median-prev.Stats.Median)
		}
		rows = append(rows, []string{p, fmt.Sprint(s.Stats.Median), fmt.Sprintf("%d..%d", s.Stats.CILow, s.Stats.CIHigh), added})
		prev = s
	}
	tw.line("")
	tw.line("  Breakdown: the syscall round trip, adding one part of the entry path at a time")
	tw.line("  (bare: sysretq at once; +swapgs; +cr3: switch to the kernel page tables and back;")
	tw.line("  +stack: kernel stack via the trampoline; +regs: save and restore pt_regs; full: + C dispatch)")
	for _, r := range formatColumns(rows) {
		tw.line("    %s", r)
	}
	tw.line("  (series run one after another: when the load on the machine changes between them, a part can")
	tw.line("  come out negative; compare the intervals)")
}

const chartWidth = 48

// writeChart draws each median as a bar, and the p90..p99 range as a line
// after it, on a log scale when the values span more than a decade and a
// half.
func writeChart(tw *textWriter, t *TargetResult) {
	var ms []*Series
	hi := int64(1)
	lo := int64(math.MaxInt64)
	for _, s := range t.Series {
		if s.Measured() {
			ms = append(ms, s)
			hi = max(hi, s.Stats.P99)
			if s.Stats.Median > 0 {
				lo = min(lo, s.Stats.Median)
			}
		}
	}
	if len(ms) == 0 {
		return
	}
	if lo == math.MaxInt64 {
		lo = 1
	}
	sc := newScale(lo, hi, chartWidth)
	tw.line("")
	tw.line("  Medians (█) and the p90..p99 range (─), %s scale, TSC ticks", sc.kind())
	labelW := 0
	for _, s := range ms {
		labelW = max(labelW, len(s.Mech+" "+s.Path))
	}
	for _, s := range ms {
		st := s.Stats
		m, a, b := sc.pos(st.Median), sc.pos(st.P90), sc.pos(st.P99)
		var bar strings.Builder
		for i := range chartWidth {
			switch {
			case i < m:
				bar.WriteRune('█')
			case i >= a && i <= b && i >= m:
				bar.WriteRune('─')
			default:
				bar.WriteRune(' ')
			}
		}
		tw.line("  %-*s %s %d", labelW, s.Mech+" "+s.Path, bar.String(), st.Median)
	}
	tw.line("  %-*s %s", labelW, "", sc.axis())
}

// scale maps tick values to chart columns.
type scale struct {
	log    bool
	lo, hi float64
	width  int
}

func newScale(lo, hi int64, width int) scale {
	s := scale{lo: 0, hi: float64(hi), width: width}
	if float64(hi)/float64(max(lo, 1)) > 30 {
		s.log = true
		// A decade below half the smallest value, so that it still gets
		// a visible bar.
		s.lo = math.Pow(10, math.Floor(math.Log10(math.Max(float64(lo)/2, 1))))
		s.hi = math.Pow(10, math.Ceil(math.Log10(float64(hi))))
	}
	return s
}

func (s scale) kind() string {
	if s.log {
		return "log"
	}
	return "linear"
}

// pos returns the number of columns for v, 0..width.
func (s scale) pos(v int64) int {
	var f float64
	if s.log {
		if float64(v) <= s.lo {
			return 0
		}
		f = (math.Log10(float64(v)) - math.Log10(s.lo)) / (math.Log10(s.hi) - math.Log10(s.lo))
	} else {
		if s.hi <= 0 || v <= 0 {
			return 0
		}
		f = float64(v) / s.hi
	}
	return min(max(int(math.Round(f*float64(s.width))), 0), s.width)
}

// axis labels the chart's scale.
func (s scale) axis() string {
	line := []rune(strings.Repeat(" ", s.width+8))
	put := func(v float64) {
		p := s.pos(int64(v))
		lab := []rune(humanTicks(v))
		if p+len(lab) > len(line) {
			p = len(line) - len(lab)
		}
		copy(line[p:], lab)
	}
	if s.log {
		for v := s.lo; v <= s.hi*1.0001; v *= 10 {
			put(v)
		}
	} else {
		put(0)
		put(s.hi / 2)
		put(s.hi)
	}
	return strings.TrimRight(string(line), " ")
}

func humanTicks(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%gM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%gk", v/1e3)
	}
	return fmt.Sprintf("%g", v)
}

func writeNotes(tw *textWriter, t *TargetResult) {
	var agree, compared int
	for _, s := range t.Series {
		if s.Guest != nil && s.Status == StatusOK {
			compared++
			if s.GuestMismatch == "" {
				agree++
			}
		}
	}
	notes := append(t.Notes[:len(t.Notes):len(t.Notes)], negativeNotes(t)...)
	if compared > 0 {
		notes = append(notes, fmt.Sprintf("Statistics are computed here from the raw samples; the guest's own summary (min, median, p90, p99, mean) agrees for %d of %d series.", agree, compared))
		for _, s := range t.Series {
			if s.GuestMismatch != "" {
				notes = append(notes, "Mismatch: "+s.GuestMismatch)
			}
		}
	}
	notes = append(notes, "Percentiles are nearest-rank; the 95% CI on the median is a percentile bootstrap; MAD is the unscaled median absolute deviation; base is the subtracted empty-window median.")
	if t.Elapsed > 0 {
		notes = append(notes, fmt.Sprintf("Took %v.", Duration(t.Elapsed).String()))
	}
	tw.line("")
	for _, n := range notes {
		for i, l := range termtext.Wrap(n, 96) {
			if i == 0 {
				tw.line("  * %s", l)
			} else {
				tw.line("    %s", l)
			}
		}
	}
}

// String formats d like time.Duration, rounded to milliseconds.
func (d Duration) String() string {
	b, _ := d.MarshalText()
	return string(b)
}

func formatRatio(r float64) string {
	if math.Abs(r) < 0.1 {
		return fmt.Sprintf("%.3f", r)
	}
	return fmt.Sprintf("%.2f", r)
}

// negativeNotes explains each series with samples below zero: a sample is
// its window less the median of the empty window, so a round trip that
// costs less than the empty window's spread (or the timer's step) can read
// below zero. The samples are kept as measured, not clamped to zero, which
// would push the mean and the low percentiles up.
func negativeNotes(t *TargetResult) []string {
	var notes []string
	for _, s := range t.Series {
		if !s.Measured() || s.Stats.Min >= 0 {
			continue
		}
		neg := 0
		for _, v := range s.Samples {
			if v < 0 {
				neg++
			}
		}
		notes = append(notes, fmt.Sprintf("%s %s: %d of %d samples are below zero (min %d): each sample is its window less the median of the empty window (%d ticks), and this one costs less than the empty window itself varies, so the difference can be below zero. They are kept as measured, not clamped; read the median.",
			s.Mech, s.Path, neg, len(s.Samples), s.Stats.Min, s.Baseline))
	}
	return notes
}

package trace

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/sctrace/sctrace/annotate"
)

// TestProbePrinted checks that a probe kept beside the steps prints exactly
// as it did when its effects were appended to the step it followed: in the
// text and Markdown output and in the summary's findings.
func TestProbePrinted(t *testing.T) {
	effs := []annotate.Effect{
		{Kind: annotate.KindMSR, Text: "IA32_LSTAR = 0xffffffff80202000 (probed: rdmsr at 0x1000); agrees with inferred at step 0", Verdict: annotate.OK},
		{Kind: annotate.KindMSR, Text: "IA32_FMASK = 0x47700 (probed: rdmsr at 0x1000); contradicts inferred", Verdict: annotate.Finding},
	}
	probed := readTestTrace(t)
	probed.Probes = []Probe{{Step: 3, At: "0x1000", Effects: effs}}
	inline := readTestTrace(t)
	inline = edit(inline, 2, func(s *Step) { s.Effects = slices.Concat(s.Effects, effs) })

	for _, f := range []struct {
		name  string
		write func(*bytes.Buffer, *Trace) error
	}{
		{"text", func(b *bytes.Buffer, t *Trace) error { return WriteText(b, t, ATT) }},
		{"markdown", func(b *bytes.Buffer, t *Trace) error { return WriteMarkdown(b, t, Intel) }},
	} {
		var got, want bytes.Buffer
		if err := f.write(&got, probed); err != nil {
			t.Fatal(err)
		}
		if err := f.write(&want, inline); err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Errorf("%s output with the probe beside the steps:\n%s\nwant:\n%s", f.name, got.String(), want.String())
		}
		if !strings.Contains(got.String(), "contradicts inferred") {
			t.Errorf("%s output does not show the probe", f.name)
		}
	}
	if got, want := Summarize(probed).Findings, Summarize(inline).Findings; !slices.Equal(got, want) || len(got) == 0 {
		t.Errorf("findings %q, want %q", got, want)
	}
}

// TestProbeReadWrite checks that probes survive a save and a read, and that
// a probe placed beyond the steps is refused as corrupt.
func TestProbeReadWrite(t *testing.T) {
	tr := readTestTrace(t)
	tr.Probes = []Probe{{Step: tr.Len(), At: "0x1000 <entry>", Effects: []annotate.Effect{{Kind: annotate.KindMSR, Text: "IA32_STAR = 0x1"}}}}
	var b bytes.Buffer
	if err := tr.Write(&b); err != nil {
		t.Fatal(err)
	}
	back, err := Read(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Probes) != 1 || back.Probes[0].Step != tr.Len() || back.Probes[0].Effects[0].Text != "IA32_STAR = 0x1" {
		t.Errorf("probes read back: %+v", back.Probes)
	}
	tr.Probes[0].Step = tr.Len() + 1
	b.Reset()
	if err := tr.Write(&b); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(bytes.NewReader(b.Bytes())); err == nil || !strings.Contains(err.Error(), "corrupt trace: probe 0") {
		t.Errorf("a probe after the last step's stop: Read = %v, want a corrupt trace", err)
	}
}

package termtext

import (
	"strings"

	"github.com/charmbracelet/x/ansi"
)

// Wrap breaks text into lines of at most n terminal columns (at least 10)
// at spaces and hyphens, by display width, not bytes: "→" is one column, a
// CJK character two. Runs of spaces collapse to one, as the text is prose;
// a word wider than n stays whole. Newlines in text start new lines.
func Wrap(text string, n int) []string {
	n = max(n, 10)
	var out []string
	for para := range strings.SplitSeq(text, "\n") {
		para = strings.Join(strings.Fields(para), " ")
		out = append(out, strings.Split(ansi.Wordwrap(para, n, ""), "\n")...)
	}
	return out
}

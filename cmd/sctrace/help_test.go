package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/sctrace/sctrace/mechanism"
)

// TestMechanismHelp checks that every command taking -m names in its help
// every mechanism the registry has, so a mechanism added there cannot be
// missing from one command's help.
func TestMechanismHelp(t *testing.T) {
	var cmds []*cobra.Command
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Flags().Lookup("mechanism") != nil {
			cmds = append(cmds, c)
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(newRootCmd())
	if len(cmds) < 3 {
		t.Fatalf("%d commands take --mechanism, want at least run, attach and diff", len(cmds))
	}
	for _, c := range cmds {
		path := strings.Fields(c.CommandPath())[1:]
		out, err := run(t, append(path, "--help")...)
		if err != nil {
			t.Fatalf("%s --help: %v", c.CommandPath(), err)
		}
		for _, m := range mechanism.All {
			// A name stands alone: int80 must not be found only inside int80-compat.
			re := regexp.MustCompile(`(^|[^-\w])` + regexp.QuoteMeta(string(m)) + `($|[^-\w])`)
			if !re.MatchString(out) {
				t.Errorf("%s --help does not name mechanism %s", c.CommandPath(), m)
			}
		}
	}
}

// TestDiffHelpFormats checks that diff's help says it reads the trace
// files sctrace writes, not JSON alone.
func TestDiffHelpFormats(t *testing.T) {
	out, err := run(t, "diff", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{".sctrace", "JSON"} {
		if !strings.Contains(out, want) {
			t.Errorf("diff --help does not mention %s", want)
		}
	}
}

package trace

import (
	"io"
	"path/filepath"
	"strings"
)

// WriterFor returns how to save t to a file named path, chosen by its
// extension: .sctrace the compact format (Write), .txt text, .md
// Markdown, anything else the JSON of version 1 (WriteJSON); and the
// extension that goes with it, for naming a copy kept elsewhere when the
// file cannot be written.
func WriterFor(t *Trace, path string, syn Syntax) (write func(io.Writer) error, ext string) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".sctrace":
		return t.Write, ".sctrace"
	case ".txt":
		return func(w io.Writer) error { return WriteText(w, t, syn) }, ".txt"
	case ".md":
		return func(w io.Writer) error { return WriteMarkdown(w, t, syn) }, ".md"
	}
	return t.WriteJSON, ".json"
}

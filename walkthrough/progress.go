package walkthrough

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sctrace/sctrace/internal/outfile"
)

// Progress is how far a user got in one lesson.
type Progress struct {
	// Reached is the number of paragraphs reached (1 = the first).
	Reached int `json:"reached"`
	// Steps is the lesson's number of paragraphs when last saved.
	Steps int `json:"steps"`
	// Answered lists the ids of the steps whose question was answered right.
	Answered []string  `json:"answered,omitempty"`
	Done     bool      `json:"done"`
	Updated  time.Time `json:"updated"`
}

// Store remembers progress per user in a JSON file.
type Store struct {
	Path string
}

// progressFile is the store's file name in the state directory.
const progressFile = "progress.json"

// DefaultStore returns the store in $XDG_STATE_HOME/sctrace (by default
// ~/.local/state/sctrace).
func DefaultStore() (*Store, error) {
	dir := os.Getenv("XDG_STATE_HOME")
	if dir == "" || !filepath.IsAbs(dir) {
		home, err := os.UserHomeDir()
		if err != nil {
			return nil, fmt.Errorf("progress: no XDG_STATE_HOME and no home directory: %w", err)
		}
		dir = filepath.Join(home, ".local", "state")
	}
	return &Store{Path: filepath.Join(dir, "sctrace", progressFile)}, nil
}

type storeFile struct {
	Version int                  `json:"version"`
	Lessons map[string]*Progress `json:"lessons"`
}

// Load returns every lesson's progress, keyed by Lesson.Name. A missing
// file is no progress.
func (s *Store) Load() (map[string]*Progress, error) {
	b, err := os.ReadFile(s.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]*Progress{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("progress: %w", err)
	}
	var f storeFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("progress: %s: %w", s.Path, err)
	}
	if f.Lessons == nil {
		f.Lessons = map[string]*Progress{}
	}
	return f.Lessons, nil
}

// Save records p for lesson name, keeping the furthest point reached and
// every answer given so far. The file is replaced atomically.
func (s *Store) Save(name string, p Progress) error {
	all, err := s.Load()
	if err != nil {
		return err
	}
	old := all[name]
	if old != nil {
		p.Reached = max(p.Reached, old.Reached)
		p.Done = p.Done || old.Done
		for _, id := range old.Answered {
			if !contains(p.Answered, id) {
				p.Answered = append(p.Answered, id)
			}
		}
	}
	if p.Updated.IsZero() {
		p.Updated = time.Now().UTC()
	}
	all[name] = &p
	b, err := json.MarshalIndent(storeFile{Version: 1, Lessons: all}, "", " ")
	if err != nil {
		return fmt.Errorf("progress: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(s.Path), 0o755); err != nil {
		return fmt.Errorf("progress: %w", err)
	}
	err = outfile.Write(s.Path, func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	})
	if err != nil {
		return fmt.Errorf("progress: %w", err)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Describe says how far p got, e.g. "done", "3 of 9", "not started".
func (p *Progress) Describe(steps int) string {
	switch {
	case p == nil || p.Reached == 0:
		return "not started"
	case p.Done:
		return "done"
	}
	return fmt.Sprintf("%d of %d", min(p.Reached, steps), steps)
}

// WriteList prints the lessons with the user's progress in each.
func WriteList(w io.Writer, lessons []*Lesson, progress map[string]*Progress, where string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Lessons (sctrace learn N runs lesson N; progress is kept in %s):\n\n", where)
	for _, l := range lessons {
		target := "teaching kernel"
		if l.Target == TargetLinux {
			target = "Linux"
		}
		fmt.Fprintf(&b, "  %d  %-36s %-12s %-16s %s\n", l.Number, l.Title, progress[l.Name()].Describe(len(l.Steps)), target, l.Summary)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

package tui

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/sctrace/sctrace/trace"
)

// FollowInterval is how often a followed trace file is looked at.
const FollowInterval = 500 * time.Millisecond

// Follow is a replay of a trace file that another process keeps
// rewriting as it records (sctrace proxy --out, which replaces the file
// whole each time): the view reads it again when it changes.
type Follow struct {
	Replay
	Path string

	mod  time.Time
	size int64
}

// NewFollow opens path for following.
func NewFollow(ctx context.Context, path string) (*Follow, error) {
	f := &Follow{Path: path}
	if _, err := f.Reload(ctx); err != nil {
		return nil, err
	}
	return f, nil
}

// Reload reads the file again when its size or modification time has
// changed since the last read, and reports whether it did. A file that is
// being replaced (the writer renames a finished file over it) is never
// seen half written.
func (f *Follow) Reload(ctx context.Context) (bool, error) {
	fi, err := os.Stat(f.Path)
	if err != nil {
		return false, err
	}
	if f.T != nil && fi.ModTime().Equal(f.mod) && fi.Size() == f.size {
		return false, nil
	}
	t, err := trace.Open(ctx, f.Path)
	if err != nil {
		return false, err
	}
	f.T, f.mod, f.size = t, fi.ModTime(), fi.Size()
	return true, nil
}

// reloader is a Driver whose trace can change under it (Follow).
type reloader interface {
	Reload(ctx context.Context) (bool, error)
}

// followMsg reports a look at a followed file.
type followMsg struct {
	changed bool
	err     error
}

// followTick schedules the next look at a followed file.
func (m *Model) followTick() tea.Cmd {
	r, ok := m.drv.(reloader)
	if !ok {
		return nil
	}
	ctx := m.ctx
	return tea.Tick(FollowInterval, func(time.Time) tea.Msg {
		changed, err := r.Reload(ctx)
		return followMsg{changed: changed, err: err}
	})
}

// followed takes in a followed file's new contents: the view stays on the
// step it showed, or, when it showed the last, moves to the new last.
func (m *Model) followed(msg followMsg) (tea.Model, tea.Cmd) {
	switch {
	case msg.err != nil:
		m.fail(fmt.Errorf("following %s: %w", filepath.Base(m.drv.(*Follow).Path), msg.err))
	case msg.changed && m.busy == nil:
		old := m.snap.Len()
		m.snap = m.drv.Snapshot()
		if n := m.snap.Len(); m.pos >= old || n < old {
			m.move(n)
		}
		m.say("following %s: %d steps", filepath.Base(m.drv.(*Follow).Path), m.snap.Len())
	}
	return m, m.followTick()
}

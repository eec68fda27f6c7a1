// Package watch keeps a list of watched expressions (package expr) and
// evaluates them all at a stop: against the live guest while debugging,
// or against a recorded step in replay, where what the recording did not
// keep is reported as unknown rather than guessed.
package watch

import (
	"errors"
	"fmt"

	"github.com/sctrace/sctrace/expr"
)

// A Watch is one watched expression.
type Watch struct {
	ID   int    // stable number, for removal; from 1
	Text string // as the user typed it
	Expr expr.Expr
}

// List is an ordered list of watches. The zero List is empty and ready.
type List struct {
	items []Watch
	next  int
}

// Add parses text and appends it to the list, returning the new watch.
func (l *List) Add(text string) (Watch, error) {
	e, err := expr.Parse(text)
	if err != nil {
		return Watch{}, fmt.Errorf("watch: %w", err)
	}
	l.next++
	w := Watch{ID: l.next, Text: text, Expr: e}
	l.items = append(l.items, w)
	return w, nil
}

// Remove deletes the watch numbered id.
func (l *List) Remove(id int) error {
	for i, w := range l.items {
		if w.ID == id {
			l.items = append(l.items[:i], l.items[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("no watch %d", id)
}

// Watches returns the watches in order. The slice must not be modified.
func (l *List) Watches() []Watch { return l.items }

// Len returns the number of watches.
func (l *List) Len() int { return len(l.items) }

// Value is a watch evaluated at one stop.
type Value struct {
	Watch
	Val uint64
	Err error // nil when Val holds the value
}

// Unknown reports whether the value was not known where it was evaluated
// (a replay that did not keep it).
func (v Value) Unknown() bool { return errors.Is(v.Err, expr.ErrUnknown) }

// String renders "TEXT = 0x…", "TEXT: unknown in replay" or "TEXT: error".
func (v Value) String() string {
	switch {
	case v.Err == nil:
		return fmt.Sprintf("%s = %#x", v.Text, v.Val)
	case v.Unknown():
		return v.Text + ": " + expr.ErrUnknown.Error()
	}
	return fmt.Sprintf("%s: %v", v.Text, v.Err)
}

// Eval evaluates every watch in env, in order. One watch that fails does
// not stop the others.
func (l *List) Eval(env expr.Env) []Value {
	out := make([]Value, len(l.items))
	for i, w := range l.items {
		v, err := expr.Eval(w.Expr, env)
		out[i] = Value{Watch: w, Val: v, Err: err}
	}
	return out
}

// Clone returns a copy of the list that later changes to l do not touch.
func (l *List) Clone() *List {
	return &List{items: append([]Watch(nil), l.items...), next: l.next}
}

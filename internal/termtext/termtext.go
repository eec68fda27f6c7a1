// Package termtext makes text that came from outside sctrace (a trace file,
// a gdbstub's replies, a guest's memory) safe to print on a terminal.
//
// A terminal acts on control characters: ESC starts sequences that can
// retitle the window, move the cursor, rewrite what is on screen or, on
// some terminals, answer back with input. Line and Text replace every
// control character with a visible escape (ESC becomes `\x1b`), so a
// hostile string is shown, not obeyed. They escape the C0 controls
// (U+0000–U+001F), DEL (U+007F), the C1 controls (U+0080–U+009F, which
// some terminals read as 8-bit CSI and OSC) and bytes that are not valid
// UTF-8 (a lone 0x9b is CSI to an 8-bit terminal). An escape sequence
// loses its ESC and what is left of it is harmless printable text.
package termtext

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"unicode/utf8"
)

// Line returns s with every control character escaped, newlines and tabs
// included: for text that belongs on one line (a symbol, an instruction, a
// header field).
func Line(s string) string { return clean(s, false) }

// Text returns s with every control character escaped except newline, tab
// and a carriage return that ends a line (CR LF): for text that is
// legitimately several lines (a monitor command's output).
func Text(s string) string { return clean(s, true) }

// IsClean reports whether Line(s) == s.
func IsClean(s string) bool { return safeUpTo(s, false) == len(s) }

// safeUpTo returns the length of the longest prefix of s that needs no
// escaping.
func safeUpTo(s string, multiline bool) int {
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if needsEscape(rune(b), multiline) && !crlf(s, i, multiline) {
				return i
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 || needsEscape(r, multiline) {
			return i
		}
		i += n
	}
	return len(s)
}

// crlf reports whether s[i] is the CR of a CR LF line end kept in
// multi-line text.
func crlf(s string, i int, multiline bool) bool {
	return multiline && s[i] == '\r' && i+1 < len(s) && s[i+1] == '\n'
}

func needsEscape(r rune, multiline bool) bool {
	switch {
	case r == '\n' || r == '\t':
		return !multiline
	case r < 0x20, r == 0x7f:
		return true
	case r >= 0x80 && r <= 0x9f:
		return true
	}
	return false
}

func clean(s string, multiline bool) string {
	i := safeUpTo(s, multiline)
	if i == len(s) {
		return s // the common case: nothing to do, nothing allocated
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case crlf(s, i, multiline):
			b.WriteByte('\r')
		case needsEscape(r, multiline) && r < utf8.RuneSelf:
			fmt.Fprintf(&b, `\x%02x`, r)
		case needsEscape(r, multiline):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// LineAll applies Line, in place, to every string reachable from v (a
// pointer): struct fields, pointers, slices, arrays, and the keys and
// values of maps; a defined string type (such as an enum kind) is cleaned
// like any other string. Values whose strings are already clean are left
// as they are, and nothing is allocated for them.
func LineAll(v any) {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer {
		panic("termtext.LineAll: want a pointer, got " + rv.Kind().String())
	}
	walk(rv.Elem())
}

func walk(v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		if s := v.String(); !IsClean(s) && v.CanSet() {
			v.SetString(Line(s))
		}
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			walk(v.Elem())
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				walk(v.Field(i))
			}
		}
	case reflect.Slice, reflect.Array:
		if !hasString(v.Type().Elem()) {
			return // e.g. instruction bytes, register arrays
		}
		for i := range v.Len() {
			walk(v.Index(i))
		}
	case reflect.Map:
		if !hasString(v.Type().Key()) && !hasString(v.Type().Elem()) {
			return
		}
		type entry struct{ old, k, e reflect.Value }
		var all []entry
		for iter := v.MapRange(); iter.Next(); {
			k := reflect.New(v.Type().Key()).Elem()
			k.Set(iter.Key())
			e := reflect.New(v.Type().Elem()).Elem()
			e.Set(iter.Value())
			walk(k)
			walk(e)
			all = append(all, entry{iter.Key(), k, e})
		}
		for _, x := range all {
			v.SetMapIndex(x.old, reflect.Value{})
		}
		for _, x := range all {
			v.SetMapIndex(x.k, x.e)
		}
	}
}

// hasStringCache maps a reflect.Type to whether it can hold a string.
var hasStringCache sync.Map

// hasString reports whether a value of type t can hold a string.
func hasString(t reflect.Type) bool {
	if v, ok := hasStringCache.Load(t); ok {
		return v.(bool)
	}
	has := hasStringSeen(t, map[reflect.Type]bool{})
	hasStringCache.Store(t, has)
	return has
}

func hasStringSeen(t reflect.Type, seen map[reflect.Type]bool) bool {
	if seen[t] {
		return false
	}
	seen[t] = true
	switch t.Kind() {
	case reflect.String, reflect.Interface:
		return true
	case reflect.Pointer, reflect.Slice, reflect.Array:
		return hasStringSeen(t.Elem(), seen)
	case reflect.Map:
		return hasStringSeen(t.Key(), seen) || hasStringSeen(t.Elem(), seen)
	case reflect.Struct:
		for i := range t.NumField() {
			if t.Field(i).IsExported() && hasStringSeen(t.Field(i).Type, seen) {
				return true
			}
		}
	}
	return false
}

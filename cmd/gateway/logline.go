package main

import (
	"slices"
	"strings"

	"github.com/go-kit/log"
)

// oneLineValues returns a logger that joins the lines of a multi-line
// string or error value with "; " before next encodes it. errors.Join and
// many wrapped errors hold newlines; logfmt would keep each as a literal \n
// inside a quoted field, which reads badly and breaks line-based tools.
// Doing it here, once, spares every logging line from knowing.
func oneLineValues(next log.Logger) log.Logger {
	return log.LoggerFunc(func(keyvals ...any) error {
		cloned := false
		for i := 1; i < len(keyvals); i += 2 {
			joined, ok := joinedLines(keyvals[i])
			if !ok {
				continue
			}
			if !cloned { // the caller's slice is not ours to change
				keyvals, cloned = slices.Clone(keyvals), true
			}
			keyvals[i] = joined
		}
		return next.Log(keyvals...)
	})
}

// joinedLines returns v's text with its non-blank lines trimmed and joined
// by "; ", and false when v is no string or error or has a single line.
func joinedLines(v any) (_ string, ok bool) {
	var s string
	switch v := v.(type) {
	case string:
		s = v
	case error:
		// A nil pointer in an error interface panics in Error(); the
		// encoder knows how to print it, so leave it to the encoder.
		defer func() {
			if recover() != nil {
				ok = false
			}
		}()
		s = v.Error()
	default:
		return "", false
	}
	if !strings.ContainsAny(s, "\r\n") {
		return "", false
	}
	var lines []string
	for _, line := range strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' }) {
		if line = strings.TrimSpace(line); line != "" {
			lines = append(lines, line)
		}
	}
	return strings.Join(lines, "; "), true
}

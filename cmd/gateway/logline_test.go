package main

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/go-kit/log/level"
)

func TestLogLinesJoinTheLinesOfAMultiLineValue(t *testing.T) {
	cases := []struct {
		name  string
		value any
		want  string
	}{
		{"joined errors", errors.Join(errors.New("shard 0: authentication failed"), errors.New("shard 1: invalid intents")),
			`err="shard 0: authentication failed; shard 1: invalid intents"`},
		{"wrapped joined errors", fmt.Errorf("every shard stopped: %w", errors.Join(errors.New("a"), errors.New("b"))),
			`err="every shard stopped: a; b"`},
		{"string with blank lines and CRLF", "first\r\n\r\n  second  \n", `err="first; second"`},
		{"single-line error unchanged", errors.New("dial tcp 127.0.0.1:1: connect: connection refused"),
			`err="dial tcp 127.0.0.1:1: connect: connection refused"`},
		{"other values unchanged", 42, `err=42`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out lockedBuffer
			m := NewMain()
			m.LogOutput = &out
			level.Error(m.newLogger()).Log("msg", "every shard of the pool stopped", "err", tc.value)
			line := out.String()
			if strings.Count(line, "\n") != 1 || strings.Contains(line, `\n`) || strings.Contains(line, `\r`) {
				t.Fatalf("not one line: %q", line)
			}
			if !strings.Contains(line, tc.want) {
				t.Fatalf("%q lacks %s", line, tc.want)
			}
		})
	}
}

func TestLogLinesKeepTheCallerOfTheLoggingLine(t *testing.T) {
	var out lockedBuffer
	m := NewMain()
	m.LogOutput = &out
	level.Info(m.newLogger()).Log("msg", "x", "err", errors.Join(errors.New("a"), errors.New("b")))
	if !strings.Contains(out.String(), "caller=logline_test.go:") {
		t.Fatalf("caller is not the logging line: %s", out.String())
	}
}

func TestLogLinesLeaveANilPointerErrorToTheEncoder(t *testing.T) {
	var out lockedBuffer
	m := NewMain()
	m.LogOutput = &out
	var err *nilError
	level.Info(m.newLogger()).Log("msg", "x", "err", err)
	if !strings.Contains(out.String(), "err=null") {
		t.Fatalf("got %s", out.String())
	}
}

type nilError struct{ s string }

func (e *nilError) Error() string { return e.s }

package main

import (
	"fmt"
	"io"
	"strconv"
	"time"
)

// writeUsage is the flag set's usage (gateway -h, or a flag it does not
// know): the two ways to run the binary, the precedence of flags over the
// environment, and every setting of vars with its type and default.
func writeUsage(w io.Writer) {
	fmt.Fprint(w, `Usage:
  gateway [flags]       run the shard pool until SIGTERM or SIGINT, which drain it (exit 0)
  gateway healthcheck   GET /health on 127.0.0.1:$HTTP_PORT; exit 0 when it answers 200, else 1
                        (the container health check: the image has no shell)

Every setting is an environment variable and a flag of the same meaning
(DISCORD_TOKEN and -discord-token): a flag wins over its variable, a variable
over the default. The README's Configuration table describes each one.

Flags:
`)
	for _, v := range vars {
		fmt.Fprintf(w, "  -%s %s   (env %s, %s)\n    \t%s\n", flagName(v.env), valueType(v), v.env, defaultText(v), v.help)
	}
}

// valueType names what a setting takes. The table has no type column: a
// setting's type is what its setter accepts, so the setter is asked, on a
// scratch Config. An integer setting takes 7 and refuses seven; one whose
// default is a word as well (TOTAL_SHARDS: auto) takes that word too; a
// duration refuses a bare number and has a duration as its default.
func valueType(v variable) string {
	accepts := func(s string) bool { return v.set(&Config{}, s) == nil }
	switch {
	case accepts("7") && !accepts("seven"):
		if _, err := strconv.Atoi(v.def); err != nil && v.def != "" {
			return "int|" + v.def
		}
		return "int"
	case !accepts("7") && isDuration(v.def) && accepts(v.def):
		return "duration"
	}
	return "string"
}

func isDuration(s string) bool {
	_, err := time.ParseDuration(s)
	return err == nil
}

// defaultText is "default X", or what an empty default means: required when
// the setter refuses it, else unset.
func defaultText(v variable) string {
	switch {
	case v.def != "":
		return "default " + v.def
	case v.set(&Config{}, "") != nil:
		return "required"
	}
	return "unset by default"
}

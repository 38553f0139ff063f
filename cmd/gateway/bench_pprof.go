//go:build benchpprof

package main

// The pipeline benchmark builds the gateway with -tags benchpprof to
// profile it as a process of its own (phases 7 and 8): net/http/pprof on
// BENCH_PPROF_ADDR, apart from the service's HTTP server. Release builds
// do not have it.

import (
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	if addr := os.Getenv("BENCH_PPROF_ADDR"); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
}

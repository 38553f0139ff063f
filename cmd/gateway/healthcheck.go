package main

import (
	"fmt"
	"net/http"
	"os"
	"time"
)

// healthcheck is the container health check: the runtime image has no shell
// or wget, so the binary checks itself. It GETs /health on the local port.
func healthcheck(getenv func(string) string) int {
	port := getenv("HTTP_PORT")
	if port == "" {
		port = "9090"
	}
	client := &http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get("http://127.0.0.1:" + port + "/health")
	if err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, "healthcheck: /health returned", resp.Status)
		return 1
	}
	return 0
}

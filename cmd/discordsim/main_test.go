package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestHelpSaysWhichSettingsToGiveTheGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "discordsim")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "-listen", "127.0.0.1:18090", "-token", "tok", "-h").CombinedOutput()
	if err != nil {
		t.Fatalf("discordsim -h: %v (want exit 0)\n%s", err, out)
	}
	for _, want := range []string{
		"Usage: discordsim [flags]",
		"export DISCORD_TOKEN='tok'\n",
		"export DISCORD_API_URL='http://127.0.0.1:18090/api/v10'\n",
		"export NATS_URL=nats://127.0.0.1:4222",
		"-rate float",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("discordsim -h lacks %q:\n%s", want, out)
		}
	}
}

func TestStartupSettingsArePasteableShellLines(t *testing.T) {
	s := gatewaySettings("http://127.0.0.1:8090/api/v10", "a.b.c")
	var exports []string
	for _, line := range strings.Split(s, "\n") {
		if line = strings.TrimSpace(line); strings.HasPrefix(line, "export ") {
			name, _, _ := strings.Cut(strings.TrimPrefix(line, "export "), "=")
			exports = append(exports, name)
		}
	}
	if got := strings.Join(exports, " "); got != "DISCORD_TOKEN DISCORD_API_URL NATS_URL HTTP_HOST" {
		t.Errorf("exports %s; want DISCORD_TOKEN DISCORD_API_URL NATS_URL HTTP_HOST", got)
	}
	if !strings.Contains(s, "bin/gateway\n") {
		t.Errorf("no command that starts the gateway:\n%s", s)
	}
}

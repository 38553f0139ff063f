package main

import (
	"io"
	"path/filepath"
	"testing"
	"time"
)

func TestConfigSessionStateFileIsForASingleInstanceWithoutConsul(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sessions.json")
	c, err := ParseConfig(nil, env(map[string]string{"DISCORD_TOKEN": "tok", "SESSION_STATE_FILE": path, "CHECKPOINT_INTERVAL": "0s"}), io.Discard)
	if err != nil || c.SessionStateFile != path || c.CheckpointInterval != 0 {
		t.Fatalf("config %q %v, %v", c.SessionStateFile, c.CheckpointInterval, err)
	}
	_, err = ParseConfig(nil, env(map[string]string{"DISCORD_TOKEN": "tok", "SESSION_STATE_FILE": path, "CONSUL_HTTP_ADDR": "127.0.0.1:8500"}), io.Discard)
	want := "invalid SESSION_STATE_FILE: not used with CONSUL_HTTP_ADDR (the checkpoints are kept in Consul, where any successor finds them); unset one of the two"
	if err == nil || err.Error() != want {
		t.Fatalf("error\n got %v\nwant %s", err, want)
	}
}

func TestConfigCheckpointIntervalDefaultsToFiveSeconds(t *testing.T) {
	c, err := ParseConfig([]string{"-checkpoint-interval", "2s"}, env(map[string]string{"DISCORD_TOKEN": "tok"}), io.Discard)
	if err != nil || c.CheckpointInterval != 2*time.Second {
		t.Fatalf("CheckpointInterval %v, %v", c.CheckpointInterval, err)
	}
}

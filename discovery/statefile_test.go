package discovery

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"

	"github.com/shardpool/gateway/service"
)

// The state file keeps what was saved across a restart: the records of the
// pool's shards younger than the maximum age come back, deletions stay
// deleted, and no temporary file is left next to it.
func TestStateFileRecordsSurviveARestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sessions.json")
	before := NewStateFile(path, 4, nil)
	if got := before.Load(0, 1, time.Minute); len(got) != 0 {
		t.Fatalf("records %v from a missing file", got)
	}
	ctx := context.Background()
	if err := before.Save(ctx, []service.ShardHandoff{{ShardID: 0, Handoff: record("a", 5)}, {ShardID: 1, Handoff: record("b", 7)}}); err != nil {
		t.Fatal(err)
	}
	if err := before.Save(ctx, []service.ShardHandoff{{ShardID: 0, Handoff: record("a", 9)}}); err != nil {
		t.Fatal(err)
	}

	after := NewStateFile(path, 4, nil)
	got := after.Load(0, 1, time.Minute)
	if len(got) != 2 || got[0].Seq != 9 || got[0].SessionID != "a" || got[1].Seq != 7 || got[0].ResumeGatewayURL != "wss://resume.example" {
		t.Fatalf("records after the restart %+v", got)
	}
	if err := after.Save(ctx, []service.ShardHandoff{{ShardID: 1, Handoff: nil}}); err != nil {
		t.Fatal(err)
	}
	if got := NewStateFile(path, 4, nil).Load(0, 1, time.Minute); len(got) != 1 || got[0] == nil {
		t.Fatalf("records after deleting shard 1: %+v", got)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("files next to the state file: %v, want it alone", entries)
	}
}

// Records the instance must not resume are ignored, with a warning that
// says why: another TOTAL_SHARDS, a shard outside the pool, a file that is
// not a state file; and too old ones are not resumed.
func TestStateFileIgnoresRecordsOfAnotherPlanOrShard(t *testing.T) {
	dir := t.TempDir()
	write := func(total int) string {
		path := filepath.Join(dir, "s.json")
		if err := NewStateFile(path, total, nil).Save(context.Background(), []service.ShardHandoff{
			{ShardID: 0, Handoff: record("a", 5)}, {ShardID: 3, Handoff: record("d", 5)},
		}); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for _, tc := range []struct {
		name    string
		path    func() string
		total   int
		maxAge  time.Duration
		want    int
		warning string
	}{
		{"another TOTAL_SHARDS", func() string { return write(8) }, 4, time.Minute, 0, "written for another TOTAL_SHARDS"},
		{"a shard outside the pool", func() string { return write(4) }, 4, time.Minute, 1, "outside the pool ignored"},
		{"too old", func() string { return write(4) }, 4, time.Nanosecond, 0, "too old to resume"},
		{"not a state file", func() string {
			path := filepath.Join(dir, "garbage.json")
			os.WriteFile(path, []byte("{half"), 0o600)
			return path
		}, 4, time.Minute, 0, "not understood"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			got := NewStateFile(tc.path(), tc.total, log.NewLogfmtLogger(&logs)).Load(0, 1, tc.maxAge)
			if len(got) != tc.want {
				t.Fatalf("%d records resumed, want %d", len(got), tc.want)
			}
			if !strings.Contains(logs.String(), tc.warning) {
				t.Fatalf("log %q lacks %q", logs.String(), tc.warning)
			}
		})
	}
}

func TestStateFileDirectoryMustExistAndTakeFiles(t *testing.T) {
	dir := t.TempDir()
	if err := CheckStateFileDir(filepath.Join(dir, "s.json")); err != nil {
		t.Fatalf("a writable directory refused: %v", err)
	}
	if err := CheckStateFileDir(filepath.Join(dir, "missing", "s.json")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("a missing directory: %v", err)
	}
	if err := CheckStateFileDir(dir); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Fatalf("a directory as the file: %v", err)
	}
	if os.Geteuid() != 0 { // root writes anywhere
		ro := filepath.Join(dir, "ro")
		os.Mkdir(ro, 0o500)
		if err := CheckStateFileDir(filepath.Join(ro, "s.json")); err == nil || !strings.Contains(err.Error(), "not writable") {
			t.Fatalf("a read-only directory: %v", err)
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Fatalf("the check left %s behind", e.Name())
		}
	}
}

package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/shardpool/gateway/service"
	"github.com/shardpool/gateway/service/shard"
)

// StateFile keeps a single instance's resume records in a local file
// (SESSION_STATE_FILE), for deployments without Consul: the same records on
// the same schedule as the Consul checkpoints, read again at startup, so
// that an instance killed and restarted on the same volume RESUMEs its
// shards. Each write replaces the whole file atomically: a temporary file
// next to it, fsync, rename over it, fsync of the directory; a crash
// leaves the old file or the new one, never a torn one.
type StateFile struct {
	path   string
	total  int
	logger log.Logger

	mu      sync.Mutex
	records map[int]*shard.Handoff
}

// stateFileVersion is the format below; a file of another version is
// ignored with a warning.
const stateFileVersion = 1

// stateFileBody is the file. total_shards says which shard plan the shard
// ids belong to.
type stateFileBody struct {
	Version     int           `json:"version"`
	TotalShards int           `json:"total_shards"`
	WrittenAt   time.Time     `json:"written_at"`
	Records     []stateRecord `json:"records"`
}

type stateRecord struct {
	ShardID int `json:"shard_id"`
	shard.Handoff
}

// NewStateFile returns the store at path for a bot of total shards; it
// does not touch the file.
func NewStateFile(path string, total int, logger log.Logger) *StateFile {
	if logger == nil {
		logger = log.NewNopLogger()
	}
	return &StateFile{path: path, total: total, logger: logger, records: map[int]*shard.Handoff{}}
}

// CheckStateFileDir reports why records cannot be written next to path, or
// nil: its directory must exist and take a new file, and path must not be
// a directory.
func CheckStateFileDir(path string) error {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return errors.New("is a directory, not a file")
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("directory %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".check-*")
	if err != nil {
		return fmt.Errorf("directory %s is not writable: %w", dir, err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// Load reads the file and returns the records to RESUME: those of shards
// in [first, last] younger than maxAge. A missing file holds none; an
// unreadable one, one of another format, or one written for another
// TOTAL_SHARDS is ignored with a warning, as are records of shards outside
// the pool. The records kept are what the store holds from now on.
func (f *StateFile) Load(first, last int, maxAge time.Duration) map[int]*shard.Handoff {
	b, err := os.ReadFile(f.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		level.Info(f.logger).Log("msg", "no session state file yet: every shard identifies", "path", f.path)
		return map[int]*shard.Handoff{}
	case err != nil:
		level.Warn(f.logger).Log("msg", "cannot read the session state file; every shard identifies", "path", f.path, "err", err)
		return map[int]*shard.Handoff{}
	}
	var body stateFileBody
	if err := json.Unmarshal(b, &body); err != nil || body.Version != stateFileVersion {
		level.Warn(f.logger).Log("msg", "session state file not understood; ignored, every shard identifies", "path", f.path, "err", err, "version", body.Version)
		return map[int]*shard.Handoff{}
	}
	if body.TotalShards != f.total {
		level.Warn(f.logger).Log("msg", "session state file written for another TOTAL_SHARDS; its records are ignored, every shard identifies",
			"path", f.path, "file_total_shards", body.TotalShards, "total_shards", f.total)
		return map[int]*shard.Handoff{}
	}
	recs := map[int]*shard.Handoff{}
	for _, r := range body.Records {
		h := r.Handoff
		recs[r.ShardID] = &h
	}
	fresh := freshHandoffs(recs, first, last, maxAge, time.Now(), f.logger)
	f.mu.Lock()
	f.records = maps.Clone(fresh)
	f.mu.Unlock()
	level.Info(f.logger).Log("msg", "session state file read", "path", f.path, "records", len(body.Records), "resuming", len(fresh),
		"written_at", body.WrittenAt.Format(time.RFC3339))
	return fresh
}

// Save is a CheckpointSaver: it merges records (nil deletes) into what the
// file holds and writes it again.
func (f *StateFile) Save(ctx context.Context, records []service.ShardHandoff) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	next := maps.Clone(f.records)
	for _, r := range records {
		if r.Handoff == nil {
			delete(next, r.ShardID)
		} else {
			next[r.ShardID] = r.Handoff
		}
	}
	if err := f.write(next); err != nil {
		return fmt.Errorf("write the session state file: %w", err)
	}
	f.records = next
	return nil
}

// write replaces the file with recs, atomically and durably.
func (f *StateFile) write(recs map[int]*shard.Handoff) error {
	body := stateFileBody{Version: stateFileVersion, TotalShards: f.total, WrittenAt: time.Now().UTC(), Records: []stateRecord{}}
	for _, id := range slices.Sorted(maps.Keys(recs)) {
		body.Records = append(body.Records, stateRecord{ShardID: id, Handoff: *recs[id]})
	}
	b, err := json.MarshalIndent(body, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(f.path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(f.path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename, there is none
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), f.path); err != nil {
		return err
	}
	// The rename itself is durable only once the directory is.
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

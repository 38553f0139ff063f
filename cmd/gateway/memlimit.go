package main

import (
	"bufio"
	"bytes"
	"io/fs"
	"math"
	"os"
	"path"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
)

// memoryLimitShare is the part of the container's memory limit given to the
// Go runtime as its soft limit when GOMEMLIMIT is not set: the rest is for
// what the runtime does not count (thread stacks, the binary, page cache
// charged to the container) and for the moment a collection takes.
const memoryLimitShare = 0.9

// setMemoryLimit makes the Go runtime collect harder near the container's
// memory limit instead of being OOM-killed there. GOMEMLIMIT, when set, is
// honoured as the runtime read it; otherwise the limit is 90% of the
// cgroup's (v2 memory.max, v1 memory.limit_in_bytes), if there is one. The
// outcome is logged either way. root is the filesystem root ("/").
func setMemoryLimit(logger log.Logger, getenv func(string) string, root fs.FS) {
	if v := getenv("GOMEMLIMIT"); v != "" {
		level.Info(logger).Log("msg", "Go memory limit from GOMEMLIMIT", "gomemlimit", v, "bytes", debug.SetMemoryLimit(-1))
		return
	}
	limit, file, ok := cgroupMemoryLimit(root)
	if !ok {
		level.Info(logger).Log("msg", "no container memory limit found and GOMEMLIMIT unset: the Go runtime has no memory limit")
		return
	}
	soft := int64(float64(limit) * memoryLimitShare)
	debug.SetMemoryLimit(soft)
	level.Info(logger).Log("msg", "Go memory limit set to 90% of the container's", "container_limit_bytes", limit, "from", file, "gomemlimit_bytes", soft)
}

// cgroupMemoryLimit returns the memory limit of the cgroup this process is
// in, and the file it was read from; ok is false when there is none (no
// cgroup filesystem, or "max"). The process's cgroup comes from
// /proc/self/cgroup; inside a container with its own cgroup namespace that
// is "/", the cgroup filesystem's root.
func cgroupMemoryLimit(root fs.FS) (limit int64, file string, ok bool) {
	v2, v1 := ownCgroups(root)
	candidates := []string{
		path.Join("sys/fs/cgroup", v2, "memory.max"),
		"sys/fs/cgroup/memory.max",
		path.Join("sys/fs/cgroup/memory", v1, "memory.limit_in_bytes"),
		"sys/fs/cgroup/memory/memory.limit_in_bytes",
	}
	for _, name := range candidates {
		b, err := fs.ReadFile(root, name)
		if err != nil {
			continue
		}
		limit, ok := parseMemoryLimit(b)
		return limit, "/" + name, ok
	}
	return 0, "", false
}

// ownCgroups reads /proc/self/cgroup: the v2 path (line "0::<path>") and
// the v1 memory controller's path (line "<n>:...memory...:<path>").
func ownCgroups(root fs.FS) (v2, v1 string) {
	b, err := fs.ReadFile(root, "proc/self/cgroup")
	if err != nil {
		return "", ""
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2 = parts[2]
		case hasController(parts[1], "memory"):
			v1 = parts[2]
		}
	}
	return v2, v1
}

func hasController(list, name string) bool {
	for _, c := range strings.Split(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// unlimitedV1 is where cgroup v1 reports "no limit": the largest page-aligned
// int64 (9223372036854771712) and anything near it.
const unlimitedV1 = math.MaxInt64 / 2

// parseMemoryLimit reads a limit file: a number of bytes, or "max" (v2) or
// a number too large to be a real limit (v1) for none.
func parseMemoryLimit(b []byte) (int64, bool) {
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n >= unlimitedV1 {
		return 0, false
	}
	return n, true
}

// rootFS is the real filesystem's root, for setMemoryLimit.
func rootFS() fs.FS { return os.DirFS("/") }

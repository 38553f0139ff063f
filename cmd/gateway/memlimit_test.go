package main

import (
	"bytes"
	"runtime/debug"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/go-kit/log"
)

// Fixture files as the kernel shows them: /proc/self/cgroup and the limit
// files of cgroup v2 and v1, in and out of a cgroup namespace.
func TestCgroupMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		name      string
		files     map[string]string
		wantLimit int64
		wantFile  string
	}{
		{"v2 in a container (own cgroup namespace)", map[string]string{
			"proc/self/cgroup":         "0::/\n",
			"sys/fs/cgroup/memory.max": "536870912\n",
		}, 536870912, "/sys/fs/cgroup/memory.max"},
		{"v2 on a host, nested cgroup (Nomad's exec driver, systemd)", map[string]string{
			"proc/self/cgroup": "0::/nomad.slice/share.slice/a1b2.gateway.scope\n",
			"sys/fs/cgroup/nomad.slice/share.slice/a1b2.gateway.scope/memory.max": "805306368\n",
			"sys/fs/cgroup/memory.max": "max\n",
		}, 805306368, "/sys/fs/cgroup/nomad.slice/share.slice/a1b2.gateway.scope/memory.max"},
		{"v2 without a limit", map[string]string{
			"proc/self/cgroup":         "0::/\n",
			"sys/fs/cgroup/memory.max": "max\n",
		}, 0, ""},
		{"v1 in a container", map[string]string{
			"proc/self/cgroup":                           "12:pids:/docker/abc\n11:memory:/\n4:cpu,cpuacct:/\n",
			"sys/fs/cgroup/memory/memory.limit_in_bytes": "268435456\n",
		}, 268435456, "/sys/fs/cgroup/memory/memory.limit_in_bytes"},
		{"v1 nested, memory with another controller", map[string]string{
			"proc/self/cgroup": "7:memory,hugetlb:/docker/abc\n",
			"sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "1073741824\n",
		}, 1073741824, "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes"},
		{"v1 without a limit", map[string]string{
			"proc/self/cgroup":                           "11:memory:/\n",
			"sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
		}, 0, ""},
		{"no cgroup filesystem", map[string]string{}, 0, ""},
		{"garbage", map[string]string{
			"proc/self/cgroup":         "0::/\n",
			"sys/fs/cgroup/memory.max": "lots\n",
		}, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := fstest.MapFS{}
			for name, content := range tc.files {
				fsys[name] = &fstest.MapFile{Data: []byte(content)}
			}
			limit, file, ok := cgroupMemoryLimit(fsys)
			if ok != (tc.wantLimit > 0) || limit != tc.wantLimit || ok && file != tc.wantFile {
				t.Errorf("got %d from %q (ok %v), want %d from %q", limit, file, ok, tc.wantLimit, tc.wantFile)
			}
		})
	}
}

func TestMemoryLimitIsNinetyPercentOfTheContainers(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	fsys := fstest.MapFS{
		"proc/self/cgroup":         {Data: []byte("0::/\n")},
		"sys/fs/cgroup/memory.max": {Data: []byte("1000000000\n")},
	}
	var logs bytes.Buffer
	setMemoryLimit(log.NewLogfmtLogger(&logs), func(string) string { return "" }, fsys)
	if got := debug.SetMemoryLimit(-1); got != 900000000 {
		t.Errorf("memory limit %d, want 900000000", got)
	}
	if !strings.Contains(logs.String(), "container_limit_bytes=1000000000") || !strings.Contains(logs.String(), "gomemlimit_bytes=900000000") {
		t.Errorf("log %q does not say the limit and where it came from", logs.String())
	}
}

func TestGOMEMLIMITWinsOverTheContainersLimit(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	debug.SetMemoryLimit(123 << 20) // as the runtime set it from GOMEMLIMIT=123MiB
	fsys := fstest.MapFS{
		"proc/self/cgroup":         {Data: []byte("0::/\n")},
		"sys/fs/cgroup/memory.max": {Data: []byte("1000000000\n")},
	}
	var logs bytes.Buffer
	getenv := func(k string) string {
		if k == "GOMEMLIMIT" {
			return "123MiB"
		}
		return ""
	}
	setMemoryLimit(log.NewLogfmtLogger(&logs), getenv, fsys)
	if got := debug.SetMemoryLimit(-1); got != 123<<20 {
		t.Errorf("memory limit %d, want GOMEMLIMIT's %d", got, 123<<20)
	}
	if !strings.Contains(logs.String(), "gomemlimit=123MiB") {
		t.Errorf("log %q does not say GOMEMLIMIT was used", logs.String())
	}
}

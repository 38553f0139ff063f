// Command vulndb builds an offline copy of the Go vulnerability database, for
// `govulncheck -db file://DIR`, from the golang.org/x/vulndb module as the Go
// module proxy serves it (its data/osv), so that `make vuln` needs no
// vuln.go.dev:
//
//	go run ./internal/vulndb -version v0.0.0-20261105234957-e22db6528018 -out .tools/vulndb/VERSION
//
// The module comes through `go mod download`, so its checksum is verified
// and it is cached like any module. out is written whole or not at all.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// vulndbModule is the module whose data/osv holds one OSV file per entry.
const vulndbModule = "golang.org/x/vulndb"

func main() {
	version := flag.String("version", "", "the "+vulndbModule+" version to build from (required)")
	out := flag.String("out", "", "the database directory to write (required)")
	flag.Parse()
	if *version == "" || *out == "" || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*version, *out); err != nil {
		fmt.Fprintln(os.Stderr, "vulndb:", err)
		os.Exit(1)
	}
}

func run(version, out string) error {
	start := time.Now()
	mod, err := download(vulndbModule + "@" + version)
	if err != nil {
		return err
	}
	// A partial directory beside out, renamed at the end: an interrupted
	// build leaves no database that looks complete.
	partial := out + ".partial"
	if err := os.RemoveAll(partial); err != nil {
		return err
	}
	s, err := build(filepath.Join(mod.Dir, "data", "osv"), partial, mod.Time)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	if err := os.Rename(partial, out); err != nil {
		return err
	}
	fmt.Printf("vulndb: %s@%s (%s): %d entries, %d modules into %s in %.1fs\n",
		vulndbModule, version, mod.Time.UTC().Format(time.DateOnly), s.Entries, s.Modules, out, time.Since(start).Seconds())
	return nil
}

// module is what `go mod download -json` says of a module, and the commit
// time from its .info file.
type module struct {
	Dir   string
	Info  string
	Error string
	Time  time.Time `json:"-"`
}

// download fetches path@version into the module cache (a no-op when it is
// there) and says where it is.
func download(pathVersion string) (module, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("go", "mod", "download", "-json", pathVersion)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var m module
	if err := json.Unmarshal(stdout.Bytes(), &m); err != nil || m.Error != "" || runErr != nil {
		return module{}, fmt.Errorf("go mod download %s: %v %s %s", pathVersion, runErr, m.Error, stderr.Bytes())
	}
	info, err := os.ReadFile(m.Info)
	if err != nil {
		return module{}, err
	}
	var t struct{ Time time.Time }
	if err := json.Unmarshal(info, &t); err != nil {
		return module{}, fmt.Errorf("%s: %w", m.Info, err)
	}
	m.Time = t.Time
	return m, nil
}

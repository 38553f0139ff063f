package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/semver"
)

// entry is the part of an OSV entry the indexes are made of.
type entry struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Aliases  []string  `json:"aliases,omitempty"`
	Affected []struct {
		Package struct {
			Name string `json:"name"` // the module path, or "stdlib" / "toolchain"
		} `json:"package"`
		Ranges []osvRange `json:"ranges"`
	} `json:"affected"`
}

type osvRange struct {
	Type   string `json:"type"`
	Events []struct {
		Introduced string `json:"introduced,omitempty"`
		Fixed      string `json:"fixed,omitempty"`
	} `json:"events"`
}

// The index files, as govulncheck's client reads them (golang.org/x/vuln
// internal/client/schema.go) and x/vulndb's database package writes them.
type dbMeta struct {
	Modified time.Time `json:"modified"`
}

type moduleMeta struct {
	Path  string       `json:"path"`
	Vulns []moduleVuln `json:"vulns"`
}

type moduleVuln struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Fixed    string    `json:"fixed,omitempty"`
}

type vulnMeta struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Aliases  []string  `json:"aliases,omitempty"`
}

// summary says what a build wrote.
type summary struct {
	Entries, Modules int
	Modified         time.Time
}

// build writes the v1 database layout that `govulncheck -db file://DIR`
// reads into out: index/db.json, index/modules.json, index/vulns.json and
// ID/<id>.json, from a directory of OSV entries named <id>.json (the
// vulndb module's data/osv). Entries are copied byte for byte. The
// module's entries carry no modified time (the hosted database takes it
// from git history, which a module zip lacks), so the database's own
// modified time is at least snapshot, the time of the vulndb commit.
func build(osvDir, out string, snapshot time.Time) (summary, error) {
	names, err := filepath.Glob(filepath.Join(osvDir, "*.json"))
	if err != nil {
		return summary{}, err
	}
	if len(names) == 0 {
		return summary{}, fmt.Errorf("no OSV entries (*.json) in %s", osvDir)
	}
	for _, dir := range []string{"index", "ID"} {
		if err := os.MkdirAll(filepath.Join(out, dir), 0o755); err != nil {
			return summary{}, err
		}
	}
	db := dbMeta{Modified: snapshot.UTC()}
	modules := map[string]*moduleMeta{}
	var vulns []vulnMeta
	for _, name := range names {
		e, raw, err := readEntry(name)
		if err != nil {
			return summary{}, err
		}
		if err := os.WriteFile(filepath.Join(out, "ID", e.ID+".json"), raw, 0o644); err != nil {
			return summary{}, err
		}
		if e.Modified.After(db.Modified) {
			db.Modified = e.Modified.UTC()
		}
		vulns = append(vulns, vulnMeta{ID: e.ID, Modified: e.Modified, Aliases: e.Aliases})
		addToModules(modules, e)
	}
	if err := writeIndexes(out, db, modules, vulns); err != nil {
		return summary{}, err
	}
	return summary{Entries: len(vulns), Modules: len(modules), Modified: db.Modified}, nil
}

// readEntry reads one OSV file, whose name must be its ID: govulncheck
// looks entries up as ID/<id>.json.
func readEntry(name string) (entry, []byte, error) {
	raw, err := os.ReadFile(name)
	if err != nil {
		return entry{}, nil, err
	}
	var e entry
	if err := json.Unmarshal(raw, &e); err != nil {
		return entry{}, nil, fmt.Errorf("%s: %w", name, err)
	}
	if base := filepath.Base(name); e.ID == "" || base != e.ID+".json" {
		return entry{}, nil, fmt.Errorf("%s: file name does not match the entry's id %q", name, e.ID)
	}
	return e, raw, nil
}

func addToModules(modules map[string]*moduleMeta, e entry) {
	for _, a := range e.Affected {
		m := modules[a.Package.Name]
		if m == nil {
			m = &moduleMeta{Path: a.Package.Name, Vulns: []moduleVuln{}}
			modules[a.Package.Name] = m
		}
		m.Vulns = append(m.Vulns, moduleVuln{ID: e.ID, Modified: e.Modified, Fixed: latestFixed(a.Ranges)})
	}
}

// latestFixed is the version from which no later version is affected, or ""
// when the vulnerability is re-introduced after its last fix. govulncheck
// skips an entry for a module at or above it without reading the entry, so
// it must never be too low: this is x/vulndb's osvutils.LatestFixed (and
// x/vuln's semver.NonSupersededFix), carried over range by range as there.
func latestFixed(ranges []osvRange) string {
	var latest string
	for _, r := range ranges {
		if r.Type != "SEMVER" {
			continue
		}
		for _, e := range r.Events {
			if e.Fixed != "" && before(latest, e.Fixed) {
				latest = e.Fixed
			}
		}
		for _, e := range r.Events {
			if e.Introduced != "" && e.Introduced != "0" && before(latest, e.Introduced) {
				latest = ""
				break
			}
		}
	}
	return latest
}

// before reports v < w for OSV's unprefixed semantic versions; "" (no
// version) is before every version.
func before(v, w string) bool {
	return semver.Compare("v"+v, "v"+w) < 0
}

func writeIndexes(out string, db dbMeta, modules map[string]*moduleMeta, vulns []vulnMeta) error {
	sorted := make([]*moduleMeta, 0, len(modules))
	for _, m := range modules {
		slices.SortFunc(m.Vulns, func(a, b moduleVuln) int { return strings.Compare(a.ID, b.ID) })
		sorted = append(sorted, m)
	}
	slices.SortFunc(sorted, func(a, b *moduleMeta) int { return strings.Compare(a.Path, b.Path) })
	slices.SortFunc(vulns, func(a, b vulnMeta) int { return strings.Compare(a.ID, b.ID) })
	for name, v := range map[string]any{"db.json": db, "modules.json": sorted, "vulns.json": vulns} {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(out, "index", name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// osvEntry is an OSV entry as data/osv holds them (indented, no modified time).
func osvEntry(id, module string, events ...string) string {
	var ev []string
	for _, e := range events {
		kind, v, _ := strings.Cut(e, "=")
		ev = append(ev, `{"`+kind+`": "`+v+`"}`)
	}
	return `{
  "schema_version": "1.3.1",
  "id": "` + id + `",
  "modified": "0001-01-01T00:00:00Z",
  "aliases": ["CVE-` + id + `"],
  "affected": [{
    "package": {"name": "` + module + `", "ecosystem": "Go"},
    "ranges": [{"type": "SEMVER", "events": [` + strings.Join(ev, ", ") + `]}]
  }]
}
`
}

func writeOSV(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func readJSON(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

var snapshot = time.Date(2026, 11, 5, 23, 49, 57, 0, time.UTC)

func TestBuildWritesTheLayoutGovulncheckReads(t *testing.T) {
	stdlib := osvEntry("GO-2026-0002", "stdlib", "introduced=0", "fixed=1.26.9", "introduced=1.27.0-0", "fixed=1.27.2")
	osv := writeOSV(t, map[string]string{
		"GO-2026-0002.json": stdlib,
		"GO-2026-0001.json": osvEntry("GO-2026-0001", "example.com/a", "introduced=0", "fixed=1.2.0"),
		"README.md":         "not an entry",
	})
	out := filepath.Join(t.TempDir(), "db")
	s, err := build(osv, out, snapshot)
	if err != nil {
		t.Fatal(err)
	}
	if s.Entries != 2 || s.Modules != 2 {
		t.Errorf("summary %+v; want 2 entries in 2 modules", s)
	}

	var db dbMeta
	readJSON(t, filepath.Join(out, "index", "db.json"), &db)
	if !db.Modified.Equal(snapshot) {
		t.Errorf("db.json modified %v; want the snapshot's time %v when no entry has one", db.Modified, snapshot)
	}
	var modules []moduleMeta
	readJSON(t, filepath.Join(out, "index", "modules.json"), &modules)
	zero := time.Time{}
	want := []moduleMeta{
		{Path: "example.com/a", Vulns: []moduleVuln{{ID: "GO-2026-0001", Modified: zero, Fixed: "1.2.0"}}},
		{Path: "stdlib", Vulns: []moduleVuln{{ID: "GO-2026-0002", Modified: zero, Fixed: "1.27.2"}}},
	}
	if !reflect.DeepEqual(modules, want) {
		t.Errorf("modules.json:\n got %+v\nwant %+v (sorted by path)", modules, want)
	}
	var vulns []vulnMeta
	readJSON(t, filepath.Join(out, "index", "vulns.json"), &vulns)
	if len(vulns) != 2 || vulns[0].ID != "GO-2026-0001" || vulns[1].Aliases[0] != "CVE-GO-2026-0002" {
		t.Errorf("vulns.json: %+v; want both entries, sorted, with their aliases", vulns)
	}
	got, err := os.ReadFile(filepath.Join(out, "ID", "GO-2026-0002.json"))
	if err != nil || string(got) != stdlib {
		t.Errorf("ID/GO-2026-0002.json = %q, %v; want the OSV file byte for byte", got, err)
	}
	if _, err := os.Stat(filepath.Join(out, "ID", "README.json")); err == nil {
		t.Error("a non-JSON file became an entry")
	}
}

func TestBuildTakesALaterEntryTimeOverTheSnapshot(t *testing.T) {
	later := strings.Replace(osvEntry("GO-2026-0001", "example.com/a", "introduced=0"),
		"0001-01-01T00:00:00Z", "2027-01-02T03:04:05Z", 1)
	out := filepath.Join(t.TempDir(), "db")
	if _, err := build(writeOSV(t, map[string]string{"GO-2026-0001.json": later}), out, snapshot); err != nil {
		t.Fatal(err)
	}
	var db dbMeta
	readJSON(t, filepath.Join(out, "index", "db.json"), &db)
	if want := time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC); !db.Modified.Equal(want) {
		t.Errorf("db.json modified %v; want the latest entry's %v", db.Modified, want)
	}
}

func TestBuildRefusesAFileNotNamedAfterItsEntry(t *testing.T) {
	osv := writeOSV(t, map[string]string{"GO-2026-9999.json": osvEntry("GO-2026-0001", "example.com/a", "introduced=0")})
	if _, err := build(osv, t.TempDir(), snapshot); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("err = %v; want a file name mismatch (govulncheck looks entries up by ID)", err)
	}
}

func TestBuildRefusesAnEmptySource(t *testing.T) {
	if _, err := build(t.TempDir(), t.TempDir(), snapshot); err == nil {
		t.Error("built a database from no entries; a wrong -version or layout must fail, not pass every check")
	}
}

func TestLatestFixed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		events []string
		want   string
	}{
		{"one fix", []string{"introduced=0", "fixed=1.2.3"}, "1.2.3"},
		{"fixed on two release branches", []string{"introduced=0", "fixed=1.26.9", "introduced=1.27.0-0", "fixed=1.27.2"}, "1.27.2"},
		{"never fixed", []string{"introduced=0"}, ""},
		{"re-introduced after the last fix", []string{"introduced=0", "fixed=1.2.0", "introduced=1.3.0"}, ""},
		{"compared as versions, not strings", []string{"introduced=0", "fixed=1.10.0", "introduced=1.9.0", "fixed=1.9.5"}, "1.10.0"},
		{"pre-release fix", []string{"introduced=0", "fixed=1.27.0-rc.2"}, "1.27.0-rc.2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r osvRange
			readJSONString(t, osvEntry("GO-1", "m", tc.events...), &r)
			if got := latestFixed([]osvRange{r}); got != tc.want {
				t.Errorf("latestFixed(%v) = %q; want %q", tc.events, got, tc.want)
			}
		})
	}
}

// readJSONString takes the first range out of an OSV entry.
func readJSONString(t *testing.T, s string, r *osvRange) {
	t.Helper()
	var e entry
	if err := json.Unmarshal([]byte(s), &e); err != nil {
		t.Fatal(err)
	}
	*r = e.Affected[0].Ranges[0]
}

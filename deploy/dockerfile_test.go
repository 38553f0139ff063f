package deploy_test

import (
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
	line int
}

// stage is one FROM and the instructions under it.
type stage struct {
	from, name string
	ins        []instruction
}

// parseDockerfile reads the Dockerfile into its global ARGs and stages.
func parseDockerfile(t *testing.T) (args []instruction, stages []*stage) {
	t.Helper()
	lines := strings.Split(string(readFile(t, dockerfilePath)), "\n")
	var cur strings.Builder
	start := 0
	flush := func() {
		s := strings.TrimSpace(cur.String())
		cur.Reset()
		if s == "" {
			return
		}
		cmd, rest, _ := strings.Cut(s, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(rest), line: start}
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			st := &stage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			stages = append(stages, st)
			return
		}
		if len(stages) == 0 {
			args = append(args, in)
			return
		}
		stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, in)
	}
	for i, l := range lines {
		trimmed := strings.TrimSpace(l)
		if strings.HasPrefix(trimmed, "#") {
			continue // comments and parser directives
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if body, ok := strings.CutSuffix(strings.TrimRight(l, " \t"), "\\"); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(l)
		flush()
	}
	flush()
	if len(stages) == 0 {
		t.Fatal("Dockerfile has no FROM")
	}
	return args, stages
}

func (s *stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.ins {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// last returns the stage's last instruction of a kind (the one in force).
func (s *stage) last(t *testing.T, cmd string) instruction {
	t.Helper()
	all := s.all(cmd)
	if len(all) == 0 {
		t.Fatalf("runtime stage (FROM %s) has no %s", s.from, cmd)
	}
	return all[len(all)-1]
}

// goBuild returns the build stage's go build command line.
func goBuild(t *testing.T, stages []*stage) string {
	t.Helper()
	for _, s := range stages[:len(stages)-1] {
		for _, in := range s.all("RUN") {
			if i := strings.Index(in.args, "go build"); i >= 0 {
				return in.args
			}
		}
	}
	t.Fatal("no build stage runs go build")
	return ""
}

// execForm decodes an exec-form (JSON array) argument list.
func execForm(t *testing.T, in instruction, s string) []string {
	t.Helper()
	var argv []string
	if err := json.Unmarshal([]byte(s), &argv); err != nil || len(argv) == 0 {
		t.Fatalf("Dockerfile:%d: %s %s is not exec form (a JSON array): the runtime image has no shell", in.line, in.cmd, in.args)
	}
	return argv
}

func TestDockerfileIsMultiStageWithAMinimalRuntime(t *testing.T) {
	_, stages := parseDockerfile(t)
	if len(stages) < 2 {
		t.Fatalf("%d stage(s); want a build stage and a runtime stage", len(stages))
	}
	if !strings.HasPrefix(stages[0].from, "golang:") {
		t.Errorf("build stage is FROM %s; want a golang image", stages[0].from)
	}
	runtime := stages[len(stages)-1]
	if runtime.from != "scratch" && !strings.HasPrefix(runtime.from, "gcr.io/distroless/static") {
		t.Errorf("runtime stage is FROM %s; want scratch or distroless static", runtime.from)
	}
	for _, in := range runtime.all("COPY") {
		if !strings.Contains(in.args, "--from=") {
			t.Errorf("Dockerfile:%d: the runtime stage copies %q from the build context; it should hold only what the build stage made", in.line, in.args)
		}
	}
}

func TestDockerfileBuildsAStaticStrippedBinary(t *testing.T) {
	_, stages := parseDockerfile(t)
	run := goBuild(t, stages)
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-s -w", "-X main.version=", "./cmd/gateway"} {
		if !strings.Contains(run, want) {
			t.Errorf("the build stage's go build lacks %q:\n%s", want, run)
		}
	}
}

// The Go the project ships with is named in three places: go.mod's toolchain
// line (what `go` picks in the repository by default), the Makefile's
// exported GOTOOLCHAIN (what make run, make test and make vuln use even with
// GOTOOLCHAIN=local) and the Dockerfile's builder image. make vuln vouches
// for one of them only if all three agree.
func TestTheShippedGoIsOneVersionEverywhere(t *testing.T) {
	args, _ := parseDockerfile(t)
	var dockerGo string
	for _, a := range args {
		if v, ok := strings.CutPrefix(a.args, "GO_VERSION="); a.cmd == "ARG" && ok {
			dockerGo = "go" + v
		}
	}
	find := func(file, pattern string) string {
		m := regexp.MustCompile(pattern).FindSubmatch(readFile(t, file))
		if m == nil {
			t.Fatalf("%s has no line matching %s", file, pattern)
		}
		return string(m[1])
	}
	modGo := find("../go.mod", `(?m)^toolchain (go\S+)$`)
	makeGo := find("../Makefile", `(?m)^export GOTOOLCHAIN := (go\S+)$`)
	if dockerGo != modGo || makeGo != modGo {
		t.Errorf("the Dockerfile builds with %q, go.mod's toolchain is %s, the Makefile exports GOTOOLCHAIN=%s; want one version", dockerGo, modGo, makeGo)
	}
}

func TestDockerfileRunsAsUID1001(t *testing.T) {
	_, stages := parseDockerfile(t)
	user := stages[len(stages)-1].last(t, "USER").args
	if uid, _, _ := strings.Cut(user, ":"); uid != "1001" {
		t.Errorf("USER %s; want uid 1001 (numeric: scratch has no /etc/passwd)", user)
	}
}

func TestDockerfileHealthcheckRunsTheHealthcheckSubcommandInExecForm(t *testing.T) {
	_, stages := parseDockerfile(t)
	runtime := stages[len(stages)-1]
	hc := runtime.last(t, "HEALTHCHECK")
	_, cmd, ok := strings.Cut(hc.args, "CMD ")
	if !ok {
		t.Fatalf("HEALTHCHECK %s has no CMD", hc.args)
	}
	argv := execForm(t, hc, strings.TrimSpace(cmd))
	entry := execForm(t, runtime.last(t, "ENTRYPOINT"), runtime.last(t, "ENTRYPOINT").args)
	if len(argv) != 2 || argv[0] != entry[0] || argv[1] != "healthcheck" {
		t.Errorf("HEALTHCHECK CMD %q; want [%q, \"healthcheck\"]", argv, entry[0])
	}
}

func TestDockerfileStopSignalIsSIGTERM(t *testing.T) {
	_, stages := parseDockerfile(t)
	if s := stages[len(stages)-1].last(t, "STOPSIGNAL").args; s != "SIGTERM" {
		t.Errorf("STOPSIGNAL %s; want SIGTERM (it starts the drain)", s)
	}
}

func TestDockerfileHasOCILabels(t *testing.T) {
	_, stages := parseDockerfile(t)
	var labels strings.Builder
	for _, in := range stages[len(stages)-1].all("LABEL") {
		labels.WriteString(in.args + " ")
	}
	for _, k := range []string{"title", "description", "source", "version", "revision"} {
		if !strings.Contains(labels.String(), "org.opencontainers.image."+k+"=") {
			t.Errorf("no org.opencontainers.image.%s label", k)
		}
	}
}

// buildArgs returns a go build command line's arguments from "go build" on,
// with the version and output path normalised.
func buildArgs(cmd string) []string {
	i := strings.Index(cmd, "go build")
	cmd = cmd[i:]
	cmd = regexp.MustCompile(`main\.version=\S+?"`).ReplaceAllString(cmd, `main.version=V"`)
	f := strings.Fields(cmd)
	for i := range f {
		if i > 0 && f[i-1] == "-o" {
			f[i] = "OUT"
		}
	}
	return f
}

func TestMakeImageBinaryBuildsExactlyAsTheDockerfile(t *testing.T) {
	_, stages := parseDockerfile(t)
	docker := goBuild(t, stages)
	out, err := exec.Command("make", "-s", "-n", "-C", repoRoot(), "image-binary", "GO=go", "VERSION=v").CombinedOutput()
	if err != nil {
		t.Fatalf("make -n image-binary: %v\n%s", err, out)
	}
	var mk string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "go build") {
			mk = l
		}
	}
	if mk == "" {
		t.Fatalf("make image-binary runs no go build:\n%s", out)
	}
	if d, m := buildArgs(docker), buildArgs(mk); strings.Join(d, " ") != strings.Join(m, " ") {
		t.Errorf("make image-binary and the Dockerfile build differently:\n Dockerfile: %s\n Makefile:   %s", d, m)
	}
	for _, env := range []string{"CGO_ENABLED=0"} {
		if !strings.Contains(mk, env) {
			t.Errorf("make image-binary does not set %s", env)
		}
	}
}

// dockerignored reports whether .dockerignore keeps rel (slash-separated,
// relative to the repo root) out of the build context.
func dockerignored(patterns []string, rel string) bool {
	ignored := false
	for _, p := range patterns {
		neg := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(strings.TrimPrefix(p, "!"), "/")
		if matchContext(p, rel) {
			ignored = !neg
		}
	}
	return ignored
}

// matchContext matches a .dockerignore pattern against a path or any of its
// parent directories; a leading **/ matches at any depth.
func matchContext(pattern, rel string) bool {
	parts := strings.Split(rel, "/")
	for i := 1; i <= len(parts); i++ {
		prefix := strings.Join(parts[:i], "/")
		if ok, _ := path.Match(pattern, prefix); ok {
			return true
		}
		if rest, ok := strings.CutPrefix(pattern, "**/"); ok {
			for j := 0; j < i; j++ {
				if ok, _ := path.Match(rest, strings.Join(parts[j:i], "/")); ok {
					return true
				}
			}
		}
	}
	return false
}

func TestDockerfileBuildStageBuildsFromTheDockerignoredContext(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	var patterns []string
	for _, l := range strings.Split(string(readFile(t, "../.dockerignore")), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, l)
		}
	}
	// The build context: the repo's tracked and untracked-but-not-ignored
	// files, less what .dockerignore leaves out.
	ls, err := exec.Command("git", "-C", repoRoot(), "ls-files", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	ctx := t.TempDir()
	copied := 0
	for _, rel := range strings.Split(strings.TrimSpace(string(ls)), "\n") {
		if rel == "" || dockerignored(patterns, rel) {
			continue
		}
		src := filepath.Join(repoRoot(), filepath.FromSlash(rel))
		info, err := os.Stat(src)
		if err != nil || !info.Mode().IsRegular() {
			continue // deleted in the work tree
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(ctx, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, fs.FileMode(0o644)); err != nil {
			t.Fatal(err)
		}
		copied++
	}
	for _, rel := range []string{"Dockerfile", ".git", "deploy/README.md", "cmd/gateway/e2e_test.go"} {
		if _, err := os.Stat(filepath.Join(ctx, rel)); err == nil {
			t.Errorf("%s is in the build context; .dockerignore should leave it out", rel)
		}
	}

	// The build stage's command, as its shell would run it.
	_, stages := parseDockerfile(t)
	run := goBuild(t, stages)
	run = run[strings.Index(run, "CGO_ENABLED"):]
	run = strings.ReplaceAll(run, "${VERSION}", "test")
	bin := filepath.Join(t.TempDir(), "gateway")
	run = strings.ReplaceAll(run, "/out/gateway", bin)
	cmd := exec.Command("sh", "-c", run)
	cmd.Dir = ctx
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the Dockerfile's go build fails in its build context (%d files):\n%s\n%v\n%s", copied, run, err, out)
	}
	info, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	certs, _ := os.Stat("/etc/ssl/certs/ca-certificates.crt")
	image := info.Size()
	if certs != nil {
		image += certs.Size()
	}
	t.Logf("binary %d bytes; image content with the CA roots ~%.1f MB", info.Size(), float64(image)/1e6)
	if image >= 20e6 {
		t.Errorf("the image would hold %d bytes; the target is under 20 MB", image)
	}
}

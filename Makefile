# The two commands that matter: `make run` (the demo) and `make test`.
GO      ?= go
PKGS    := ./...
BIN     := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
STATICCHECK_VERSION := v0.8.2

# The Go the project builds, tests and ships with (go.mod's toolchain line,
# the Dockerfile's builder and the README say the same; a test in deploy/
# keeps them equal). Exported, so every go command here uses it even where
# the Go on PATH is older and GOTOOLCHAIN=local: the go command fetches this
# release once from the module proxy. `make ... GOTOOLCHAIN=local` builds
# with the Go on PATH instead.
export GOTOOLCHAIN := go1.27.3

.PHONY: build run test lint bench tools clean help

## build: the production binary, bin/gateway (no simulator, no embedded NATS),
## and bin/discordsim and bin/gatewayctl (the command path's CLI)
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN)/gateway ./cmd/gateway
	$(GO) build -o $(BIN)/discordsim ./cmd/discordsim
	$(GO) build -o $(BIN)/gatewayctl ./cmd/gatewayctl

## run: the demo: the real gateway against the in-process Discord simulator
## and an embedded NATS JetStream server; /ready, /status, /metrics on :9090
## (HTTP_PORT=... moves them). Built into bin/gateway-demo and exec'd, so
## Ctrl-C drains it and make exits 0 (go run would exit 1). CONSUL=1 also
## starts a Consul dev agent (consul on PATH, else .tools/bin/consul, built
## by make consul if missing): the demo registers and claims its pool there,
## and /status shows the discovery block
DEMO_BIN := $(BIN)/gateway-demo
CONSUL ?=
run: $(if $(filter-out 0,$(CONSUL)),demo-consul)
	@echo "make run: building $(DEMO_BIN) (a minute the first time)"
	$(GO) build -tags demo -o $(DEMO_BIN) ./cmd/gateway
	@DEMO_CONSUL=$(CONSUL) exec ./$(DEMO_BIN)

.PHONY: demo-consul
demo-consul:
	@test -n "$$CONSUL_BIN" || test -x $(CONSUL_TOOL) || command -v consul >/dev/null || $(MAKE) --no-print-directory consul

## test: every test, with the race detector (what CI runs)
test: consul
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

## consul: the Consul agent the discovery tests run (consul agent -dev), built
## once from the tools module .ci/consul into .tools/bin/consul (about 4
## minutes the first time, which it says; make test does it first)
# Not CONSUL_BIN: that is the environment variable the tests and the demo
# read, and a make variable of that name would override a user's.
CONSUL_TOOL := .tools/bin/consul
.PHONY: consul
consul:
	@test -x $(CONSUL_TOOL) || { \
	  echo "make consul: building the Consul agent the tests run into $(CONSUL_TOOL), once: about 4 minutes on 2 idle cores (measured 3.7 CPU-minutes per core; more on a busy machine or a cold module cache), silent until done; later runs reuse it"; \
	  start=$$(date +%s); \
	  (cd .ci/consul && $(GO) build -o ../../$(CONSUL_TOOL) github.com/hashicorp/consul) || exit 1; \
	  echo "make consul: $(CONSUL_TOOL) built in $$(( $$(date +%s) - start ))s"; }

## lint: gofmt, go vet, staticcheck
lint: tools
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) vet -tags demo ./cmd/gateway
	$$($(GO) env GOPATH)/bin/staticcheck $(PKGS)

## bench: Go micro-benchmarks of the hot path, then the pipeline benchmark
## (simulator + embedded JetStream + the real gateway; every figure next to
## a ceiling or baseline measured in the same run): throughput, the naive
## baseline, paced route latency at 1k/5k/10k events/s, memory, startup,
## compression, the 25-shard startup storm and cost against 1/25/100 shards.
## BENCH_RUNS runs (default 3) give the spread; BENCH_PHASES=3,7 picks
## phases. Prints the table, writes docs/perf/*.png and results.md and
## cmd/gateway/pipeline.cpu.prof. About 5 minutes a run on 2 cores
BENCH_RUNS ?= $(or $(PIPELINE_BENCH_RUNS),3)
BENCH_PHASES ?= $(PIPELINE_BENCH_PHASES)
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./service/...
	PIPELINE_BENCH=1 PIPELINE_BENCH_RUNS=$(BENCH_RUNS) PIPELINE_BENCH_PHASES=$(BENCH_PHASES) \
	  $(GO) test -v -count=1 -run '^TestPipelineBenchmark$$' -timeout 120m ./cmd/gateway

## fuzz: each fuzz target for FUZZTIME (CI runs them briefly); seeds are in
## the f.Add calls and testdata/fuzz
FUZZTIME ?= 10s
.PHONY: fuzz
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseEnvelope$$' -fuzztime $(FUZZTIME) ./service/shard
	$(GO) test -run '^$$' -fuzz '^FuzzInflateZlibStream$$' -fuzztime $(FUZZTIME) ./service/shard
	$(GO) test -run '^$$' -fuzz '^FuzzInflateZstdStream$$' -fuzztime $(FUZZTIME) ./service/shard
	$(GO) test -run '^$$' -fuzz '^FuzzBuild$$' -fuzztime $(FUZZTIME) ./service/event
	$(GO) test -run '^$$' -fuzz '^FuzzScanner$$' -fuzztime $(FUZZTIME) ./service/event/jsonscan
	$(GO) test -run '^$$' -fuzz '^FuzzParseConfig$$' -fuzztime $(FUZZTIME) ./cmd/gateway

## tools: staticcheck, for make lint (rebuilt when another Go built it: one
## built by an older Go cannot read this Go's standard library)
tools:
	@sc=$$($(GO) env GOPATH)/bin/staticcheck; \
	  test -x $$sc && test "$$($(GO) version $$sc | cut -d' ' -f2)" = "$$($(GO) env GOVERSION)" || \
	  $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

## clean: remove bin/ (.tools/bin/consul stays)
clean:
	rm -rf $(BIN)

## help: this list, from the Makefile's ## comments
help:
	@awk '/^## [a-z][a-z-]*:/ { sub(/^## /, ""); i = index($$0, ":"); \
	    printf "%-14s%s\n", substr($$0, 1, i - 1), substr($$0, i + 1); doc = 1; next } \
	  /^## / && doc { sub(/^## /, ""); printf "%-14s %s\n", "", $$0; next } \
	  { doc = 0 }' $(MAKEFILE_LIST)

## image-binary: bin/gateway-image, built exactly as the Dockerfile's build
## stage builds /gateway (a test in deploy/ keeps them equal); prints its size
IMAGE_BINARY ?= $(BIN)/gateway-image
.PHONY: image-binary
image-binary:
	CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false -ldflags "-s -w -X main.version=$(VERSION)" -o $(IMAGE_BINARY) ./cmd/gateway
	@echo "$(IMAGE_BINARY): $$(stat -c %s $(IMAGE_BINARY)) bytes ($$(du -h $(IMAGE_BINARY) | cut -f1)); image target < 20 MB"

## deploy-check: deploy/ and the Dockerfile against the code: the deploy
## tests (static checks, promtool's rule checks in process, NATS streams on a
## real server, a live /metrics through promlint as promtool check metrics
## runs it, the healthcheck subcommand); no promtool needed
.PHONY: deploy-check
deploy-check: consul
	$(GO) test -race -count=1 ./deploy
	$(GO) test -race -count=1 -run 'TestDeploy|TestHealthcheckSubcommand' ./cmd/gateway

## chaos: the chaos run (cmd/gateway/chaos_test.go) for CHAOS_DURATION with
## the race detector: random faults while events flow, then exactly once in
## JetStream, no rate-limit violation, no leak. `make test` runs it for 25s.
## Its seed is logged; CHAOS_SEED=<seed> replays the same fault sequence
CHAOS_DURATION ?= 10m
CHAOS_TIMEOUT ?= 60m
.PHONY: chaos
chaos:
	CHAOS_DURATION=$(CHAOS_DURATION) CHAOS_SEED=$(CHAOS_SEED) $(GO) test -race -count=1 -v -run '^TestChaos' -timeout $(CHAOS_TIMEOUT) ./cmd/gateway/

## chaos-fleet: the fleet chaos run (cmd/gateway/fleet_chaos_test.go) for
## CHAOS_DURATION: three gateway processes (the real binary, built without
## -race; FLEET_RACE=1 builds it with), a Consul agent, JetStream and the
## simulator under seeded faults: SIGKILL, SIGSTOP/SIGCONT, a partition from
## Consul, drain and replace, Consul and NATS restarts. Then no shard live on
## two connections, no Discord rule broken, every event once, no leak.
## `make test` runs it for 30s. CHAOS_SEED=<seed> replays a run's faults,
## CHAOS_FAULTS=kill,stop,... limits them; the logs and a timeline of a
## failed run stay in $TMPDIR/fleet-chaos-*
.PHONY: chaos-fleet
chaos-fleet: consul
	CHAOS_DURATION=$(CHAOS_DURATION) CHAOS_SEED=$(CHAOS_SEED) CHAOS_FAULTS=$(CHAOS_FAULTS) $(GO) test -race -count=1 -v -run '^TestFleetChaos' -timeout $(CHAOS_TIMEOUT) ./cmd/gateway/

## vuln: govulncheck (pinned) on our code, the demo build included, against
## an offline Go vulnerability database that it builds from the
## golang.org/x/vulndb module (VULNDB_VERSION, from the module proxy) into
## .tools/vulndb, once per version (seconds); fails on any vulnerability our
## code can reach. Bump VULNDB_VERSION to learn of newer ones
GOVULNCHECK_VERSION := v1.9.0
VULNDB_VERSION := v0.0.0-20261105234957-e22db6528018
VULNDB := .tools/vulndb/$(VULNDB_VERSION)
.PHONY: vuln
vuln: $(VULNDB)/index/db.json
	$(GO) run golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION) -db file://$(CURDIR)/$(VULNDB) -show version -tags demo $(PKGS)

# Only the current version's database is kept.
$(VULNDB)/index/db.json:
	rm -rf .tools/vulndb
	$(GO) run ./internal/vulndb -version $(VULNDB_VERSION) -out $(VULNDB)

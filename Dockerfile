# syntax=docker/dockerfile:1
#
# The gateway's container image: a static Go binary on an empty base.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t discord-gateway .
#
# `make image-binary` runs the same go build as the build stage below (a test
# in deploy/ keeps the two identical) and prints the binary's size, for
# machines without a Docker engine.

# The Go the project ships with: go.mod's toolchain line and the Makefile's
# GOTOOLCHAIN (a test in deploy/ keeps the three equal; `make vuln` checks
# that Go for known vulnerabilities).
ARG GO_VERSION=1.27.3

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# Modules first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
# Static (no cgo, so no libc in the runtime image), no local paths
# (-trimpath), no symbol table or DWARF (-s -w): about a third smaller.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "-s -w -X main.version=${VERSION}" -o /out/gateway ./cmd/gateway

# The runtime has nothing but the binary and the CA roots it needs for
# https://discord.com and wss://gateway.discord.gg: no shell, no package
# manager, no wget, hence the healthcheck subcommand below.
FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="discord-gateway" \
      org.opencontainers.image.description="Discord gateway shard pool: publishes guild, member and interaction events to NATS JetStream" \
      org.opencontainers.image.source="https://github.com/shardpool/gateway" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="scratch"
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/gateway /gateway
# A numeric uid and gid: scratch has no /etc/passwd to look a name up in.
USER 1001:1001
# HTTP_PORT's default: /health, /ready, /status, /drain, /metrics.
EXPOSE 9090
# Exec form: there is no shell to run a command string. The subcommand GETs
# /health on $HTTP_PORT.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 CMD ["/gateway", "healthcheck"]
# SIGTERM drains the pool (shards closed resumably, buffer flushed, hand-off
# records written) and the process exits 0 within DRAIN_TIMEOUT (20s): give
# `docker stop -t` / the orchestrator's kill timeout more than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/gateway"]

# syntax=docker/dockerfile:1
#
# sensor: multi-stage build. The build stage runs the same `cargo xtask build`
# as a developer machine (nightly rust-src, bpf-linker on nightly's LLVM);
# the runtime stage is a slim Debian with the one static-ish binary.
#
#   docker build -t ghcr.io/example/sensor:0.1.0 .
#
# The agent loads eBPF programs, so it runs as uid 0 but, in the DaemonSet,
# with every capability dropped except the six the README lists and
# explains; file capabilities on a non-root binary would not survive
# `allowPrivilegeEscalation: false` (no_new_privs), so uid 0 with a bounded
# capability set is the least-privilege choice here.

FROM rust:1.95-bookworm AS build
RUN rustup toolchain install nightly --profile minimal --component rust-src,rustfmt,clippy
WORKDIR /src
COPY . .
RUN cargo xtask build \
 && cp target/release/sensor /sensor

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /sensor /usr/local/bin/sensor
# Alerts on stdout (JSON lines), logs on stderr; metrics on :9464.
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/sensor"]
CMD ["run", "--config", "/etc/sensor/config.yaml"]

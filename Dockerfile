# syntax=docker/dockerfile:1
# The image the Helm chart (charts/weir) runs: `weir` plus the tools GitSync shells out to, `git` (fetch,
# revert, push) and `kubectl` (`kubectl kustomize`). Build from the repository root:
#   docker build -t weir:dev .
# Not built in this repository's CI (its machines have no container runtime or registry access).

# 1.90 or newer links with LLD, which lays out the code an idle weir runs together (build.rs); the
# list of it (build/weir-startup.order) was made with 1.95.
ARG RUST_VERSION=1.95
ARG KUBECTL_VERSION=v1.32.4

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits reuse the cached dependency layer.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin benches \
 && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > src/bin/kubectl-weir.rs \
 && echo 'fn main() {}' > benches/emulator.rs \
 && echo 'fn main() {}' > benches/abort_to_stable.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin weir \
 && rm -rf src benches
COPY src src
COPY benches benches
COPY build.rs ./
COPY build build
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin weir \
 && install -m 0755 target/release/weir /weir

FROM debian:bookworm-slim AS kubectl
ARG KUBECTL_VERSION
ARG TARGETARCH=amd64
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && curl -fsSLo /kubectl "https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/${TARGETARCH}/kubectl" \
 && echo "$(curl -fsSL "https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/${TARGETARCH}/kubectl.sha256")  /kubectl" | sha256sum -c - \
 && chmod 0755 /kubectl

FROM debian:bookworm-slim
# git for GitSync (https and ssh remotes); ca-certificates for the API server, Git hosts, Prometheus and
# chat webhooks. No shell tools beyond what the slim base has.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates openssh-client \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 weir \
 && useradd --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin weir
COPY --from=kubectl /kubectl /usr/local/bin/kubectl
COPY --from=build /weir /usr/local/bin/weir
# The chart mounts emptyDirs here and at /tmp; the root filesystem stays read-only.
ENV WEIR_CACHE_DIR=/var/cache/weir \
    HOME=/tmp
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/weir"]
CMD ["run"]

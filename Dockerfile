# The switchyard controller image (ghcr.io/switchyard-dev/switchyard, named in
# deploy/). Build: make image (docker or podman); without a daemon, make
# image-oci builds the same image as an OCI layout from this file's final
# stage (scripts/image-oci.py: keep that stage to the instructions it knows).
#
# Stage 1 builds the release binary with cargo against Cargo.lock; stage 2 is
# distroless/cc (glibc and libgcc only: no shell, no package manager) running
# as the numeric non-root user 65532, as the Deployment's securityContext
# expects (runAsNonRoot needs a numeric USER).

ARG RUST_VERSION=1.92
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
# Everything the manifest declares must exist (bins, benches); .dockerignore
# keeps build output, virtualenvs and cluster binaries out of the context.
COPY . .
# (No BuildKit cache mounts: the file builds with the legacy docker builder
# and with podman alike.)
RUN cargo build --release --locked --bin switchyard \
    && install -D -m 0755 target/release/switchyard /out/switchyard

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/switchyard /usr/local/bin/switchyard
USER 65532:65532
# xDS (gRPC) and admin (/healthz, /readyz, /metrics).
EXPOSE 18000 18001
# Allocator options (src/allocator.rs): set here, the controller starts with
# them and needs no re-execution of itself to apply them.
ENV MIMALLOC_PURGE_DELAY=0 MIMALLOC_ALLOW_THP=0
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["controller"]

# syntax=docker/dockerfile:1.7
# One image with every binary (pricing-api, pricing-worker, pricing-listener); docker-compose.yml picks the
# command.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
# A workspace member cargo must see, never built here: the benchmark's bare HTTP-over-Redis ceiling.
COPY bench/ceiling ./bench/ceiling
# The migrations are embedded into the binaries at build time; no database is needed to build.
COPY migrations ./migrations
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p pricing-api -p pricing-worker -p pricing-listener \
    && mkdir -p /out \
    && cp target/release/pricing-api target/release/pricing-worker target/release/pricing-listener /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 pricing
COPY --from=build /out/ /usr/local/bin/
USER pricing
ENV API_ADDR=0.0.0.0:8000 LOG_FORMAT=json
EXPOSE 8000 8001 8002
CMD ["pricing-api", "serve"]

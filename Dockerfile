# Roam server image: `docker build -t roam-server .` then
# `docker run -p 8080:8080 -v roam-data:/data -e ROAM_JWT_SECRET=... roam-server`
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p roam-server

FROM debian:bookworm-slim
RUN useradd --system --home /data --shell /usr/sbin/nologin roam \
    && mkdir -p /data && chown roam /data
COPY --from=build /src/target/release/roam-server /usr/local/bin/roam-server
USER roam
ENV ROAM_LISTEN=0.0.0.0:8080 \
    ROAM_DATA_DIR=/data \
    ROAM_LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /readyz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q '200' <&3"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/roam-server"]

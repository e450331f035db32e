# weft in a container: a static binary built in the Go image, run as an
# unprivileged user from a distroless image (no shell, no package manager).
#
#   docker build -t weft .
#   docker run -d -p 7420:7420 -v weft-data:/data -e WEFT_SECRET=... weft
#
# Every flag of `weft serve` can be set as WEFT_<NAME> (docs/operations.md).

FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static (Pebble is pure Go), with the VCS commit in `weft version` when the
# context holds .git; cmd/weft/default.pgo is used for PGO automatically.
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/weft ./cmd/weft \
    && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/weft /usr/local/bin/weft
# The volume's mount point belongs to the unprivileged user (uid 65532).
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
ENV WEFT_LISTEN=0.0.0.0:7420 \
    WEFT_DATA=/data
VOLUME /data
EXPOSE 7420
# `weft health` reads WEFT_LISTEN (and WEFT_TLS_CERT) as serve does.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/weft", "health"]
# SIGTERM drains connections and persists what was acknowledged; give it
# --shutdown-timeout (30 s) with `docker stop -t 40`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/weft"]
CMD ["serve"]

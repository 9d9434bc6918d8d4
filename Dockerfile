# One image for the three services: gateway, storage-node, query-service.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p gateway -p storage-node -p query-service

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /data reduct \
    && mkdir -p /data /query-data \
    && chown reduct /data /query-data
COPY --from=build /src/target/release/gateway /src/target/release/storage-node /src/target/release/query-service /usr/local/bin/
USER reduct
# Inside a container the services listen on every interface.
ENV RS_HOST=0.0.0.0 \
    RS_DATA_PATH=/data \
    RS_STORAGE_LISTEN=0.0.0.0:8384 \
    RS_QUERY_LISTEN=0.0.0.0:8385 \
    RS_QUERY_DATA_PATH=/query-data
VOLUME ["/data", "/query-data"]
EXPOSE 8383 8384 8385
CMD ["gateway"]

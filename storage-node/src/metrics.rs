//! The storage node's metrics (no-ops until the process sets up telemetry).

use opentelemetry::metrics::{Counter, Histogram, Meter};

pub struct StorageMetrics {
    pub records_written: Counter<u64>,
    pub bytes_written: Counter<u64>,
    pub records_read: Counter<u64>,
    pub bytes_read: Counter<u64>,
    pub sync_duration: Histogram<f64>,
}

pub fn meter() -> Meter {
    opentelemetry::global::meter("storage-node")
}

impl StorageMetrics {
    pub fn new() -> Self {
        let meter = meter();
        StorageMetrics {
            records_written: meter
                .u64_counter("reduct_records_written")
                .with_description("Records stored")
                .build(),
            bytes_written: meter
                .u64_counter("reduct_bytes_written")
                .with_unit("By")
                .with_description("Payload bytes of the records stored")
                .build(),
            records_read: meter
                .u64_counter("reduct_records_read")
                .with_description("Records read")
                .build(),
            bytes_read: meter
                .u64_counter("reduct_bytes_read")
                .with_unit("By")
                .with_description("Payload bytes of the records read")
                .build(),
            sync_duration: meter
                .f64_histogram("reduct_fsync_duration")
                .with_unit("s")
                .with_boundaries(proto::telemetry::seconds_buckets())
                .with_description("Time to force written blocks and the index to disk")
                .build(),
        }
    }
}

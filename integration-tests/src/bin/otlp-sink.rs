//! An OTLP/gRPC endpoint that accepts traces and metrics and drops them, for measuring what
//! exporting telemetry costs a server:
//!
//! ```text
//! cargo run --release -p integration-tests --bin otlp-sink -- 127.0.0.1:4317
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 ./target/release/gateway
//! ```

use integration_tests::otlp::Receiver;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4317".to_string());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    println!("OTLP sink listening on http://{}", listener.local_addr()?);
    let receiver = Receiver::counting();
    let counter = receiver.clone();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            ticker.tick().await;
            println!("spans received: {}", counter.span_count());
        }
    });
    receiver.serve(listener).await?;
    Ok(())
}
